"""EAP relayed to an external authenticator (strongSwan's ``eap-radius``, RFC 3579 sec. 2).

The gateway does not run the EAP method itself: it asks for the identity (EAP-Identity,
RFC 3748 sec. 5.1, as strongSwan does for ``eap_id = %any``), then passes every EAP
Response of the peer, unchanged, to a backend server (a RADIUS server) and passes the
server's EAP Request, Success or Failure back. The method (MD5, MS-CHAPv2, TLS, ...) is
whatever the server and the peer agree on; the MSK comes from the server with the Success
(RADIUS: MS-MPPE-Recv-Key then MS-MPPE-Send-Key, RFC 2548 sec. 2.4.2-2.4.3, the order
strongSwan uses), and keys the AUTH payloads as for a local method (none, after a method
that derives none: SK_pi/SK_pr, RFC 7296 sec. 2.16).

This package does no I/O: :class:`ExternalEapAuthenticator` says what to relay
(:meth:`relay`) and takes the server's answer later (:meth:`answer`); between the two the
IKE_AUTH response waits (``TaskContext.defer_response``), and the daemon does the round
trip (``ikev2.events.EapRelay`` out, ``Dispatcher.external_eap_answer`` in).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

from ikev2.eap.packet import (
    EapError,
    EapPacket,
    check_identity,
    identity_request,
    parse_response,
)
from ikev2.enums import EapCode, EapType


@dataclass(frozen=True)
class ExternalEapAnswer:
    """The external authenticator's answer to one relayed EAP Response.

    ``message``: the EAP packet for the peer (a Request, or Success / Failure), empty when
    the server gave none (no answer at all, a reject without EAP-Message): the gateway
    then sends EAP-Failure itself. ``msk``: with a Success, the key the AUTH payloads use.
    ``groups``: what the server says the peer belongs to (RADIUS Class attributes,
    strongSwan's ``class_group``). ``reason``: why it failed, for the log.
    """

    message: bytes
    msk: bytes | None = field(default=None, repr=False)
    groups: tuple[str, ...] = ()
    reason: str | None = None

    @classmethod
    def failed(cls, reason: str) -> ExternalEapAnswer:
        """No EAP packet from the server (it did not answer, or was misconfigured)."""
        return cls(b"", reason=reason)


class ExternalEapAuthenticator:
    """The gateway's side of relayed EAP, with the same read-only state as a local
    :class:`ikev2.eap.session.EapAuthenticator` (``finished``, ``succeeded``, ``msk``,
    ``identity``, ``failure_reason``, ``method_type``) so IKE_AUTH treats both alike.

    Order is checked as for a local method: a peer's packet must be the Response to the
    outstanding Request (same Identifier), and nothing is relayed while an answer is
    pending (a retransmitted IKE request never reaches here, ``ikev2.sa`` drops it).
    """

    def __init__(
        self, eap_id: str | None = None, random: Callable[[int], bytes] = os.urandom
    ) -> None:
        self._eap_id = None if eap_id in (None, "%any") else eap_id
        self._identifier = random(1)[0]
        self._stage = "new"  # -> identity -> waiting <-> relaying -> done
        self.eap_identity: str | None = None
        self.method_type: EapType | None = None  # of the server's last Request, for logs
        self.finished = False
        self.succeeded = False
        self.failure_reason: str | None = None
        self.msk: bytes | None = None
        self.groups: tuple[str, ...] = ()
        self.pending_failure: str | None = None  # a relayed method never fails half-way

    @property
    def identity(self) -> str | None:
        return self.eap_identity

    @property
    def waiting(self) -> bool:
        """A Response was relayed and the server's answer is not in yet."""
        return self._stage == "waiting"

    def start(self) -> EapPacket:
        if self._stage != "new":
            raise EapError("EAP conversation started twice")
        self._stage = "identity"
        self._identifier = (self._identifier + 1) & 0xFF
        return identity_request(self._identifier)

    def relay(self, message: bytes) -> bytes:
        """The peer's Response in; what to send to the server out (the same octets).

        EapError for a packet out of order; an identity that is not ``eap_id`` ends the
        conversation here (``finished``, not relayed: the caller sends EAP-Failure)."""
        if self._stage not in ("identity", "relaying"):
            raise EapError("EAP message outside an EAP conversation (out of order or repeated)")
        packet = parse_response(message, self._identifier)
        if self._stage == "identity":
            if packet.type != EapType.IDENTITY:
                raise EapError(f"{packet.describe()} instead of the EAP-Identity Response")
            self.eap_identity = check_identity(packet.data)
            if self._eap_id is not None and self.eap_identity != self._eap_id:
                self._fail(
                    f"EAP identity {self.eap_identity!r} is not the configured {self._eap_id!r}"
                )
                raise EapError(self.failure_reason or "")
        self._stage = "waiting"
        return bytes(message)

    def answer(self, answer: ExternalEapAnswer) -> EapPacket:
        """The server's answer in; the EAP packet for the peer out. After a Success,
        ``succeeded`` and ``msk`` are set; after a Failure (or none), ``failure_reason``."""
        if self._stage != "waiting":
            raise EapError("an external EAP answer without a relayed Response")
        if not answer.message:
            return self._fail(answer.reason or "the EAP server gave no answer")
        try:
            packet = EapPacket.parse(answer.message)
        except EapError as error:
            return self._fail(f"the EAP server sent a malformed EAP packet: {error.reason}")
        if packet.code == EapCode.REQUEST:
            self._identifier = packet.identifier
            kind = packet.type
            known = kind is not None and kind in EapType._value2member_map_
            self.method_type = EapType(kind) if known and kind is not None else None
            self._stage = "relaying"
            return packet
        if packet.code == EapCode.SUCCESS:
            # Without an MSK (EAP-MD5 on the server) the AUTH payloads are keyed with
            # SK_pi/SK_pr (RFC 7296 sec. 2.16), as after a local EAP-MD5.
            self.finished, self.succeeded, self.msk = True, True, answer.msk or None
            self.groups = answer.groups
            self._stage = "done"
            return EapPacket(EapCode.SUCCESS, self._identifier)
        if packet.code == EapCode.FAILURE:
            return self._fail(answer.reason or "the EAP server rejected the peer")
        return self._fail(f"the EAP server sent {packet.describe()} (a Response is the peer's)")

    def refuse(self, reason: str) -> EapPacket:
        """End a conversation the server accepted but our policy does not (``groups``)."""
        self.succeeded, self.msk = False, None
        return self._fail(reason)

    def _fail(self, reason: str) -> EapPacket:
        self.finished, self.succeeded, self.failure_reason = True, False, reason
        self.msk = None
        self._stage = "done"
        return EapPacket(EapCode.FAILURE, self._identifier)
