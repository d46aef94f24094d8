"""The two ends of an EAP conversation inside IKE_AUTH (RFC 7296 sec. 2.16, RFC 3748 sec. 4).

:class:`EapAuthenticator` is the gateway (the IKE responder): it asks for the identity
(EAP-Identity, RFC 3748 sec. 5.1), runs one method and ends with EAP-Success or
EAP-Failure. :class:`EapPeer` is the road warrior. Both take and give whole EAP packets
(the content of the IKE EAP payload) and hold no I/O; randomness comes from the methods'
``random`` callable so tests can fix it.

Order is strict, because IKE already retransmits whole messages (RFC 7296 sec. 2.1): a
Response whose Identifier is not that of the outstanding Request, a repeated packet, a
packet of another method mid-way, or anything after the end raises :class:`EapError`
(AUTHENTICATION_FAILED), and the IKE SA is not established.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Protocol

from ikev2.eap.packet import (
    EapError,
    EapPacket,
    check_identity,
    identity_request,
    identity_response,
    nak,
    parse_response,
)
from ikev2.enums import EapCode, EapType
from ikev2.payloads import as_enum


class ServerMethod(Protocol):
    type: EapType
    succeeded: bool
    failure_reason: str | None
    msk: bytes | None
    identity: str | None

    def start(self, identifier: int) -> EapPacket: ...

    def process(self, packet: EapPacket, identifier: int) -> EapPacket | None: ...


class PeerMethod(Protocol):
    type: EapType
    succeeded: bool
    failure_reason: str | None
    msk: bytes | None

    def process(self, packet: EapPacket) -> EapPacket: ...


# method type -> a new server method for the EAP identity the peer gave
ServerMethodFactory = Callable[[str], ServerMethod]
PeerMethodFactory = Callable[[], PeerMethod]


class EapAuthenticator:
    """The gateway's EAP (the "authenticator", RFC 3748 sec. 1.2).

    ``methods`` lists the acceptable methods in order of preference (``auth = eap`` gives
    several, ``auth = eap-mschapv2`` one); the first is proposed, a Nak may pick another
    from this list. ``eap_id``: the identity the peer must give (``%any``/None: any).
    """

    def __init__(
        self,
        methods: dict[EapType, ServerMethodFactory],
        eap_id: str | None = None,
        random: Callable[[int], bytes] = os.urandom,
    ) -> None:
        if not methods:
            raise ValueError("an EAP authenticator needs at least one method")
        self._factories = methods
        self._eap_id = None if eap_id in (None, "%any") else eap_id
        self._identifier = random(1)[0]
        self._stage = "new"
        self._method: ServerMethod | None = None
        self._tried: set[int] = set()
        self.eap_identity: str | None = None
        self.finished = False
        self.succeeded = False
        self.failure_reason: str | None = None
        self.msk: bytes | None = None

    @property
    def identity(self) -> str | None:
        """The authenticated identity: the method's (e.g. MS-CHAPv2's Name) or the EAP one."""
        if self._method is not None and self._method.identity:
            return self._method.identity
        return self.eap_identity

    @property
    def pending_failure(self) -> str | None:
        """The method has decided against the peer and is telling it so (MS-CHAPv2 sends a
        Failure Request and waits for the acknowledgement before EAP-Failure)."""
        if self.finished or self._method is None:
            return None
        return self._method.failure_reason

    @property
    def method_type(self) -> EapType | None:
        return self._method.type if self._method is not None else None

    def _next_id(self) -> int:
        self._identifier = (self._identifier + 1) & 0xFF
        return self._identifier

    def start(self) -> EapPacket:
        """The first Request: EAP-Identity (strongSwan's default, ``eap_id = %any``)."""
        if self._stage != "new":
            raise EapError("EAP conversation started twice")
        self._stage = "identity"
        return identity_request(self._next_id())

    def _fail(self, reason: str) -> EapPacket:
        self.finished, self.succeeded, self.failure_reason = True, False, reason
        self.msk = None
        self._stage = "done"
        return EapPacket(EapCode.FAILURE, self._identifier)

    def process(self, message: bytes) -> EapPacket:
        """The peer's Response in; the next Request, or EAP-Success / EAP-Failure, out."""
        if self._stage in ("new", "done"):
            raise EapError("EAP message outside an EAP conversation (out of order or repeated)")
        packet = parse_response(message, self._identifier)
        if self._stage == "identity":
            return self._identity(packet)
        if packet.type == EapType.NAK and self._stage == "proposed":
            return self._nak(packet)
        assert self._method is not None
        if packet.type != self._method.type:
            raise EapError(f"{packet.describe()} during {self._method.type.name}")
        self._stage = "method"
        request = self._method.process(packet, self._next_id())
        if request is not None:
            return request
        if not self._method.succeeded:
            return self._fail(self._method.failure_reason or "EAP method failed")
        self.finished, self.succeeded, self.msk = True, True, self._method.msk
        self._stage = "done"
        return EapPacket(EapCode.SUCCESS, self._identifier)

    def _identity(self, packet: EapPacket) -> EapPacket:
        if packet.type != EapType.IDENTITY:
            raise EapError(f"{packet.describe()} instead of the EAP-Identity Response")
        identity = check_identity(packet.data)
        self.eap_identity = identity
        if self._eap_id is not None and identity != self._eap_id:
            return self._fail(f"EAP identity {identity!r} is not the configured {self._eap_id!r}")
        return self._propose(next(iter(self._factories)))

    def _propose(self, method_type: EapType) -> EapPacket:
        self._tried.add(method_type)
        assert self.eap_identity is not None
        self._method = self._factories[method_type](self.eap_identity)
        self._stage = "proposed"
        return self._method.start(self._next_id())

    def _nak(self, packet: EapPacket) -> EapPacket:
        wanted = [as_enum(EapType, t) for t in packet.data]
        for method_type in wanted:
            if method_type in self._factories and method_type not in self._tried:
                return self._propose(EapType(method_type))
        refused = self.method_type.name if self.method_type is not None else "?"
        return self._fail(f"the peer refused {refused} and wants only [{method_names(wanted)}]")


class EapPeer:
    """The road warrior's EAP: answers Identity with ``identity`` (swanctl's ``eap_id``),
    runs the method the gateway proposes when it is in ``methods`` (else a Nak naming
    ours), and accepts EAP-Success only after its method succeeded (for MS-CHAPv2: the
    gateway proved it knows the password)."""

    def __init__(self, identity: str, methods: dict[EapType, PeerMethodFactory]) -> None:
        self._identity = identity
        self._factories = methods
        self._method: PeerMethod | None = None
        self._last_identifier: int | None = None
        self.finished = False
        self.succeeded = False
        self.failure_reason: str | None = None
        self.msk: bytes | None = None

    @property
    def method_type(self) -> EapType | None:
        """The method the gateway proposed and we run (None before one was chosen)."""
        return self._method.type if self._method is not None else None

    def process(self, message: bytes) -> EapPacket | None:
        """A Request in, our Response out; None after EAP-Success/Failure (see ``succeeded``)."""
        if self.finished:
            raise EapError("EAP message after the conversation ended")
        packet = EapPacket.parse(message)
        if packet.code == EapCode.RESPONSE:
            raise EapError(f"{packet.describe()} from the gateway (Responses are ours)")
        if packet.code in (EapCode.SUCCESS, EapCode.FAILURE):
            self._end(packet)
            return None
        if packet.identifier == self._last_identifier:
            raise EapError(f"{packet.describe()} repeated")
        self._last_identifier = packet.identifier
        if packet.type == EapType.IDENTITY:
            if self._method is not None:
                raise EapError("EAP-Identity Request in the middle of a method")
            return identity_response(packet.identifier, self._identity)
        if packet.type == EapType.NOTIFICATION:
            # RFC 3748 sec. 5.2: shown to the user, answered with an empty Notification.
            return EapPacket(EapCode.RESPONSE, packet.identifier, EapType.NOTIFICATION)
        if self._method is None:
            factory = next((f for t, f in self._factories.items() if t == packet.type), None)
            if factory is None:
                return nak(packet.identifier, [int(t) for t in self._factories])
            self._method = factory()
        elif packet.type != self._method.type:
            raise EapError(f"{packet.describe()} during {self._method.type.name}")
        return self._method.process(packet)

    def _end(self, packet: EapPacket) -> None:
        self.finished = True
        method = self._method
        if packet.code == EapCode.SUCCESS:
            if method is None or not method.succeeded:
                self.failure_reason = "EAP-Success before the method authenticated the gateway"
                raise EapError(self.failure_reason)
            self.succeeded, self.msk = True, method.msk
            return None
        self.failure_reason = (method.failure_reason if method else None) or "EAP-Failure"
        return None


def method_names(types: Sequence[int]) -> str:
    return ", ".join(EapType(t).name if t in EapType._value2member_map_ else str(t) for t in types)
