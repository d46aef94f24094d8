"""IKE_AUTH (RFC 7296 sec. 1.2, 2.15, 2.16): identities, AUTH, CERT/CERTREQ, and the first
Child SA (``child_create``). PSK (method 2) and public-key signatures (RFC 7427 method
14, plus methods 1 and 9-11 for interop, in ``ikev2.tasks.ike_certs``).

Failure explanations name the check that failed (``AuthenticationFailed.check``):
``psk-mismatch`` (a bad AUTH with a PSK: the keys differ), ``no-credentials`` (no PSK or
key for the identities), ``identity-mismatch``, ``unknown-ca``, ``expired``,
``bad-signature``, ``peer-rejected`` (the peer answered AUTHENTICATION_FAILED).
"""

from __future__ import annotations

from ikev2.config import AuthConfig, IkeConfig
from ikev2.cp import AddressPending
from ikev2.crypto.auth import AuthenticationError, SignerError, psk_auth, verify_psk_auth
from ikev2.eap.external import ExternalEapAuthenticator
from ikev2.eap.packet import EapPacket
from ikev2.eap.session import EapAuthenticator, EapPeer
from ikev2.enums import AuthMethod, EapCode, ExchangeType, NotifyType, PayloadType
from ikev2.errors import ProtocolError
from ikev2.events import (
    AddressRequested,
    AuthenticationFailed,
    IkeSaEstablished,
    NegotiationFailed,
)
from ikev2.identity import Identity
from ikev2.payloads import (
    AuthPayload,
    CertPayload,
    CertReqPayload,
    EapPayload,
    IdPayload,
    NoncePayload,
    NotifyPayload,
    SaPayload,
)
from ikev2.proposals import to_strongswan
from ikev2.tasks import (
    Payload,
    Request,
    Responder,
    Task,
    TaskContext,
    find,
    find_all,
    find_notify,
    find_typed,
    first_error,
    notify_name,
)
from ikev2.tasks.child_create import (
    ChildRequest,
    child_failure,
    install_child,
    received_child_error,
    respond_child,
)
from ikev2.tasks.ike_certs import build_signature_auth, verify_signature_auth
from ikev2.tasks.ike_config import client_reply, client_request, gateway_reply
from ikev2.tasks.ike_delete import IkeDeleteTask, delete_spis_task
from ikev2.tasks.ike_eap import (
    GatewayEap,
    accept_eap_only,
    check_eap_only_gateway,
    check_eap_only_method,
    client_methods_peer,
    describe_method,
    eap_identity,
    eap_only_gateway,
    eap_payload,
    msk_auth,
    start_gateway,
    uses_eap,
    verify_msk_auth,
)
from ikev2.tasks.ike_eap_relay import relay_response
from ikev2.tasks.ike_init import certreq_payload
from ikev2.tasks.ike_ppk import (
    initiator_auth,
    initiator_confirm,
    responder_notifies,
    responder_payloads,
)
from ikev2.tasks.ike_redirect import auth_redirect, process_auth_redirect
from ikev2.tasks.lifetimes import start_ike_timers
from ikev2.ts import Ts, format_list


def identity_for(sa: TaskContext, auth: AuthConfig, address: tuple[str, int]) -> Identity:
    """Our configured identity; ``%any`` defaults to our IP address (as charon does)."""
    identity = Identity.parse(auth.id)
    if identity.is_any:
        identity = Identity.parse(address[0])
    return identity


def id_payload(identity: Identity, payload_type: PayloadType) -> IdPayload:
    id_type, data = identity.to_payload()
    return IdPayload(payload_type=payload_type, id_type=id_type, data=data)


def octets_for(
    sa: TaskContext,
    *,
    initiator_side: bool,
    id_body: bytes,
    message_id: int,
    ppk: bytes | None = None,
) -> bytes:
    """The signed octets of the initiator's or the responder's AUTH (sec. 2.15); ``ppk``:
    with that PPK folded into SK_pi (RFC 8784, ``ikev2.tasks.ike_ppk``)."""
    return sa.keymat.auth_octets(
        initiator_side=initiator_side, id_body=id_body, message_id=message_id, ppk=ppk
    )


def lookup_psk(sa: TaskContext, local: Identity, remote: Identity) -> bytes:
    psk = sa.ctx.psk_lookup(str(local), str(remote))
    if not psk:
        raise AuthenticationError(
            f"no pre-shared key configured for {local} <-> {remote}", check="no-credentials"
        )
    return psk


def build_auth(
    sa: TaskContext, auth: AuthConfig, local: Identity, remote: Identity, octets: bytes
) -> list[Payload]:
    """Our AUTH payload (preceded by CERT payloads for public-key auth)."""
    prf = sa.keymat.prf
    assert prf is not None
    if auth.auth == "psk":
        psk = lookup_psk(sa, local, remote)
        return [
            AuthPayload(
                method=AuthMethod.SHARED_KEY_MESSAGE_INTEGRITY_CODE,
                data=psk_auth(prf, psk, octets),
            )
        ]
    return build_signature_auth(sa, auth, octets)


def verify_auth(
    sa: TaskContext,
    auth: AuthConfig,
    local: Identity,
    remote: Identity,
    payloads: list[Payload],
    octets: bytes,
    now: float,
) -> None:
    """Check the peer's AUTH payload against ``auth`` (our config for the peer)."""
    prf = sa.keymat.prf
    assert prf is not None
    auth_payload = find(payloads, AuthPayload)
    if auth_payload is None:
        raise AuthenticationError("peer sent no AUTH payload", check="bad-signature")
    method = int(auth_payload.method)
    sa.peer.auth_method = method
    if auth.auth == "psk":
        if method != AuthMethod.SHARED_KEY_MESSAGE_INTEGRITY_CODE:
            raise AuthenticationError(
                f"peer authenticated with method {method}, we expect a pre-shared key",
                check="method-mismatch",
            )
        psk = lookup_psk(sa, local, remote)
        try:
            verify_psk_auth(prf, psk, octets, auth_payload.data, peer_id=str(remote))
        except AuthenticationError as error:
            raise AuthenticationError(
                f"{error.reason}: the AUTH payload of {remote} does not match the PSK we have "
                f"for {local} <-> {remote}",
                check="psk-mismatch",
            ) from None
        return
    if method == AuthMethod.SHARED_KEY_MESSAGE_INTEGRITY_CODE:
        raise AuthenticationError(
            "peer authenticated with a pre-shared key, we expect a signature",
            check="method-mismatch",
        )
    verify_signature_auth(sa, auth, remote, payloads, auth_payload, octets, now)


def established_event(sa: TaskContext, now: float) -> IkeSaEstablished:
    sa.established_at = now
    keymat = sa.keymat
    # IKE_SA_INIT chose these before any IKE_AUTH could complete.
    assert keymat.encr is not None and keymat.prf_id is not None
    return IkeSaEstablished(
        sa.ike_sa_id,
        sa.name,
        spi_i=int.from_bytes(sa.spi_i, "big"),
        spi_r=int.from_bytes(sa.spi_r, "big"),
        initiator=sa.initiator,
        local_addr=sa.local_addr,
        remote_addr=sa.remote_addr,
        local_id=sa.local_id,
        remote_id=sa.remote_id,
        encr=keymat.encr,
        encr_key_bits=keymat.encr_key_bits,
        integ=keymat.integ,
        prf=keymat.prf_id,
        ke=int(keymat.ke_method or 0),
        additional_ke=tuple(keymat.additional_ke),
        nat_local=sa.peer.nat_local,
        nat_remote=sa.peer.nat_remote,
        udp_encap=sa.peer.udp_encap,
        fragmentation=sa.peer.fragmentation,
    )


def auth_exchange_failed(sa: TaskContext, error: ProtocolError, *, received: bool) -> None:
    """Report a failure of IKE_AUTH beyond authentication (Child SA, configuration)."""
    sa.emit(
        NegotiationFailed(
            sa.ike_sa_id, sa.name, error.reason, error.notify, received, exchange="IKE_AUTH"
        )
    )


def on_established(sa: TaskContext, now: float) -> None:
    sa.timers.cancel("half_open")
    sa.emit(established_event(sa, now))
    start_ike_timers(sa, now)


class IkeAuthTask(Task):
    exchange = ExchangeType.IKE_AUTH
    name = "IKE_AUTH"

    def __init__(self, child: str | None) -> None:
        self.child_name = child
        self.request: ChildRequest | None = None
        self.local: Identity | None = None
        self.remote: Identity | None = None
        self.message_id = 0  # of our request, and so of the response (sec. 2.15 IntAuth)
        # EAP (sec. 2.16): "initial" (IDi, no AUTH), "eap" (EAP rounds), "auth" (MSK AUTH).
        self.phase = "initial"
        self.eap: EapPeer | None = None
        self.eap_out = b""  # our next EAP Response
        self.idi_body = b""
        self.idr_body = b""
        self.peer: Identity | None = None
        self.eap_only = False  # the gateway sent no AUTH: EAP alone authenticates it
        self.ppk: bytes | None = None  # RFC 8784: the PPK our AUTH used

    def build(self, sa: TaskContext, now: float) -> list[Payload]:
        self.message_id = sa.next_request_id
        if self.phase == "eap":
            return [EapPayload(self.eap_out)]
        if self.phase == "auth":
            eap = self.eap
            assert eap is not None
            # RFC 8784 with EAP: the PPK goes with the message that carries AUTH.
            final, self.ppk = initiator_auth(
                sa,
                lambda: [
                    msk_auth(sa, eap.msk, octets_for(sa, initiator_side=True,
                             id_body=self.idi_body, message_id=self.message_id))
                ],
            )  # fmt: skip
            return final
        config = sa.config
        if self.child_name is None and not sa.peer.childless:
            # RFC 6023 sec. 4.1: no IKE_AUTH without a Child SA unless the responder
            # said it supports that (strongSwan fails such an initiation too).
            raise ProtocolError(
                "an IKE SA without a Child SA, but the peer did not send "
                "CHILDLESS_IKEV2_SUPPORTED (RFC 6023)"
                + (" and childless = force" if config.childless == "force" else ""),
                None,
            )
        self.local = identity_for(sa, config.local, sa.local_addr)
        self.remote = Identity.parse(config.remote.id)
        idi = id_payload(self.local, PayloadType.IDi)
        payloads: list[Payload] = [idi]
        self.message_id = sa.next_request_id
        if not self.remote.is_any:
            payloads.append(id_payload(self.remote, PayloadType.IDr))
        self.idi_body = idi.serialize()
        if uses_eap(config.local):
            # No AUTH: we ask to be authenticated by EAP (sec. 2.16); check now that we
            # have what the method needs, so a missing secret fails before any packet.
            client_methods_peer(sa, eap_identity(config, str(self.local)), now)
            auth_payloads: list[Payload] = []
        else:
            local, peer, idi_body = self.local, self._psk_peer(sa), idi.serialize()
            auth_payloads, self.ppk = initiator_auth(  # RFC 8784: AUTH with the PPK
                sa,
                lambda: build_auth(
                    sa, config.local, local, peer,
                    octets_for(sa, initiator_side=True, id_body=idi_body,
                               message_id=self.message_id),
                ),
            )  # fmt: skip
        # CERT payloads go right after IDi (sec. 1.2: IDi, [CERT,] [CERTREQ,] [IDr,] AUTH).
        certs = [p for p in auth_payloads if isinstance(p, CertPayload)]
        payloads[1:1] = certs
        certreq = certreq_payload(sa)
        if certreq is not None:
            payloads.insert(1 + len(certs), certreq)
        payloads += [p for p in auth_payloads if not isinstance(p, CertPayload)]
        if config.send_initial_contact and not sa.suppress_initial_contact:
            payloads.append(NotifyPayload(notify_type=NotifyType.INITIAL_CONTACT))
        if uses_eap(config.local):
            # RFC 5998 sec. 3: we accept a gateway authenticated by a mutual EAP method
            # alone (strongSwan's client always announces it when it does EAP).
            payloads.append(NotifyPayload(notify_type=NotifyType.EAP_ONLY_AUTHENTICATION))
        cp = client_request(sa)  # sec. 1.2: ..., AUTH, [CP(CFG_REQUEST),] SAi2, TSi, TSr
        if cp is not None:
            payloads.append(cp)
        if self.child_name is not None:
            self.request = ChildRequest(sa, config.child(self.child_name), with_ke=False)
            payloads += self.request.payloads(sa)
            payloads += self.request.ts(sa)
        return payloads

    def _psk_peer(self, sa: TaskContext) -> Identity:
        assert self.remote is not None
        if self.remote.is_any:
            return Identity.parse(sa.remote_addr[0])
        return self.remote

    def process(self, sa: TaskContext, payloads: list[Payload], now: float) -> bool:
        assert self.local is not None and self.remote is not None
        if self.phase != "initial":
            return self._process_eap(sa, payloads, now)
        config = sa.config
        idr_payload = find_typed(payloads, PayloadType.IDr)
        auth_payload = find(payloads, AuthPayload)
        # RFC 5998: IDr and the first EAP Request, no AUTH: an EAP-only gateway.
        eap_only = (
            idr_payload is not None
            and auth_payload is None
            and uses_eap(config.local)
            and find(payloads, EapPayload) is not None
        )
        if (idr_payload is None or auth_payload is None) and not eap_only:
            error = first_error(payloads)
            name = notify_name(int(error.notify_type)) if error is not None else "no AUTH"
            if error is not None and error.notify_type == NotifyType.AUTHENTICATION_FAILED:
                reason = (
                    "peer answered AUTHENTICATION_FAILED: it could not verify our AUTH (PSK "
                    "mismatch, unknown identity, or our certificate is not trusted there)"
                )
                sa.emit(
                    AuthenticationFailed(
                        sa.ike_sa_id, sa.name, "peer-rejected", reason, sa.remote_addr
                    )
                )
                sa.fail(now, reason, NotifyType.AUTHENTICATION_FAILED)
                return False
            raise ProtocolError(f"peer answered IKE_AUTH with {name}", None)
        assert idr_payload is not None  # (eap_only implies it)
        try:
            peer = Identity.from_payload(int(idr_payload.id_type), bytes(idr_payload.data))
            if not self.remote.is_any and not self.remote.matches(peer):
                raise AuthenticationError(
                    f"responder identifies as {peer}, we expect {self.remote}",
                    check="identity-mismatch",
                )
            if eap_only:
                accept_eap_only(config, peer)
                self.eap_only = True
            elif uses_eap(config.remote):
                raise AuthenticationError(
                    f"{peer} authenticated with an AUTH payload, but connection "
                    f"{config.name!r} expects EAP-only authentication (remote auth = "
                    f"{config.remote.auth}); set remote auth = pubkey for this gateway",
                    check="method-mismatch",
                )
            else:
                if not uses_eap(config.local):  # with EAP: in the last round
                    initiator_confirm(sa, self.ppk, payloads)  # RFC 8784: the PPK in our keys
                octets = octets_for(
                    sa,
                    initiator_side=False,
                    id_body=idr_payload.serialize(),
                    message_id=self.message_id,
                )
                verify_auth(sa, config.remote, self.local, peer, payloads, octets, now)
            if uses_eap(config.local):
                self.peer, self.idr_body = peer, idr_payload.serialize()
                return self._start_eap(sa, payloads, now)
        except ProtocolError as error:
            check = error.check if isinstance(error, AuthenticationError) else "bad-signature"
            sa.emit(
                AuthenticationFailed(sa.ike_sa_id, sa.name, check, error.reason, sa.remote_addr)
            )
            if uses_eap(config.local):
                # The responder is not established yet (EAP would follow): just go.
                sa.fail(now, error.reason, NotifyType.AUTHENTICATION_FAILED)
                return False
            # Sec. 2.21.2: tell the responder (it considers the SA established), then go.
            sa.queue_task(AuthFailedNotifyTask(error.reason), now, start=False, first=True)
            return False
        return self._complete(sa, peer, payloads, now)

    def _start_eap(self, sa: TaskContext, payloads: list[Payload], now: float) -> bool:
        """The responder authenticated itself; now EAP authenticates us (sec. 2.16)."""
        assert self.local is not None
        self.eap = client_methods_peer(sa, eap_identity(sa.config, str(self.local)), now)
        self.phase = "eap"
        return self._eap_step(sa, payloads, now)

    def _eap_step(self, sa: TaskContext, payloads: list[Payload], now: float) -> bool:
        assert self.eap is not None
        answer = self.eap.process(eap_payload(payloads))  # EapError: AUTHENTICATION_FAILED
        if answer is not None:
            self.eap_out = answer.serialize()
        elif self.eap.succeeded:
            if self.eap_only:
                check_eap_only_method(self.eap.method_type, str(self.peer))
            self.phase = "auth"
        else:
            raise AuthenticationError(
                f"EAP failed: {self.eap.failure_reason or 'the gateway sent EAP-Failure'}",
                check="eap",
            )
        # The next round is this task again, with the next Message ID.
        sa.queue_task(self, now, start=False, first=True)
        return False

    def _process_eap(self, sa: TaskContext, payloads: list[Payload], now: float) -> bool:
        assert self.peer is not None and self.eap is not None
        try:
            if self.phase == "eap":
                return self._eap_step(sa, payloads, now)
            initiator_confirm(sa, self.ppk, payloads)  # RFC 8784: the PPK in our keys
            octets = octets_for(
                sa, initiator_side=False, id_body=self.idr_body, message_id=self.message_id
            )
            verify_msk_auth(sa, self.eap.msk, octets, payloads, str(self.peer))
        except ProtocolError as error:
            refused = first_error(payloads)
            reason = error.reason
            if refused is not None and refused.notify_type == NotifyType.AUTHENTICATION_FAILED:
                reason = f"the gateway refused our EAP authentication ({reason})"
            check = error.check if isinstance(error, AuthenticationError) else "eap"
            sa.emit(AuthenticationFailed(sa.ike_sa_id, sa.name, check, reason, sa.remote_addr))
            sa.fail(now, reason, NotifyType.AUTHENTICATION_FAILED)
            return False
        return self._complete(sa, self.peer, payloads, now)

    def _complete(
        self, sa: TaskContext, peer: Identity, payloads: list[Payload], now: float
    ) -> bool:
        """Authenticated both ways: the IKE SA is up; then the CFG_REPLY and the Child SA."""
        assert self.local is not None
        sa.local_id = str(self.local)
        sa.remote_id = str(peer)
        if process_auth_redirect(sa, payloads, self.child_name, now):
            return False  # RFC 5685 sec. 4.3: authenticated, redirected, no Child SA
        sa.to("recv_auth_response")
        on_established(sa, now)
        try:
            client_reply(sa, payloads)
        except ProtocolError as error:
            # Sec. 2.19: without the virtual IP we asked for the tunnel is useless (strongSwan
            # closes the IKE SA too); the Child SA, if any, goes with it.
            auth_exchange_failed(sa, error, received=True)
            # Queued, not started: this IKE_AUTH's Message ID is still the current one.
            sa.queue_task(IkeDeleteTask(error.reason), now, start=False, first=True)
            return False
        if self.request is not None:
            self._process_child(sa, payloads, now)
        return False

    def _process_child(self, sa: TaskContext, payloads: list[Payload], now: float) -> None:
        assert self.request is not None
        refused = received_child_error(payloads)
        if refused is not None:
            name, notify = refused
            reason = f"responder refused Child SA '{self.request.config.name}': {name}"
            if notify == NotifyType.TS_UNACCEPTABLE:
                reason += (
                    f" (we proposed TSi {_fmt(self.request.local_ts)}, TSr "
                    f"{_fmt(self.request.remote_ts)})"
                )
            elif notify == NotifyType.NO_PROPOSAL_CHOSEN:
                reason += (
                    " (we offered "
                    + ", ".join(to_strongswan(p) for p in self.request.proposals)
                    + ")"
                )
            child_failure(
                sa, self.request.config, reason, notify, received=True, exchange="IKE_AUTH"
            )
            return
        try:
            child = self.request.process(
                sa, payloads, sa.keymat.nonce_i, sa.keymat.nonce_r, None, now
            )
        except ProtocolError as error:
            child_failure(
                sa,
                self.request.config,
                error.reason,
                error.notify,
                received=False,
                exchange="IKE_AUTH",
            )
            # The Child SA exists at the responder: tell it to delete it (sec. 2.9).
            spi = find_child_spi(payloads)
            if spi is not None:
                sa.queue_task(delete_spis_task([spi]), now, start=False)
            return
        install_child(sa, child, now)

    def abort(self, sa: TaskContext, reason: str, now: float) -> None:
        sa.emit(
            NegotiationFailed(
                sa.ike_sa_id, sa.name, reason, None, received=True, exchange="IKE_AUTH"
            )
        )
        sa.fail(now, reason)


class AuthFailedNotifyTask(Task):
    """INFORMATIONAL with AUTHENTICATION_FAILED after the responder's AUTH did not verify
    (RFC 7296 sec. 2.21.2); the IKE SA ends with the exchange, answered or not."""

    exchange = ExchangeType.INFORMATIONAL
    name = "INFORMATIONAL(AUTHENTICATION_FAILED)"
    retransmit_tries = 1

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def build(self, sa: TaskContext, now: float) -> list[Payload]:
        return [NotifyPayload(notify_type=NotifyType.AUTHENTICATION_FAILED)]

    def process(self, sa: TaskContext, payloads: list[Payload], now: float) -> bool:
        sa.fail(now, self.reason, NotifyType.AUTHENTICATION_FAILED)
        return False

    def abort(self, sa: TaskContext, reason: str, now: float) -> None:
        sa.fail(now, self.reason, NotifyType.AUTHENTICATION_FAILED)


def _fmt(selectors: list[Ts]) -> str:
    return format_list(selectors)


def find_child_spi(payloads: list[Payload]) -> bytes | None:
    sa_payload = find(payloads, SaPayload)
    if sa_payload is None or len(sa_payload.proposals) != 1:
        return None
    spi = sa_payload.proposals[0].spi
    return bytes(spi) if len(spi) == 4 else None


def _select_config(sa: TaskContext, peer: Identity, wanted: Identity | None) -> IkeConfig:
    """Responder: the first candidate config (same IKE proposal choice) whose remote
    identity accepts ``peer`` and whose local identity is what the initiator asked for."""
    candidates = [sa.config] + [c for c in sa.candidate_configs if c is not sa.config]
    for config in candidates:
        if not Identity.parse(config.remote.id).matches(peer):
            continue
        if wanted is not None:
            ours = identity_for(sa, config.local, sa.local_addr)
            if not ours.matches(wanted) and not Identity.parse(config.local.id).is_any:
                continue
        return config
    expected = ", ".join(f"{c.name}: {c.remote.id}" for c in candidates)
    raise AuthenticationError(
        f"no connection accepts peer identity {peer} (configured remote ids: {expected})",
        check="identity-mismatch",
    )


class IkeAuthResponder(Responder):
    """Responder side of IKE_AUTH (the router admits it in INIT_DONE / INTERMEDIATE)."""

    def respond(self, sa: TaskContext, request: Request) -> list[Payload]:
        return respond_ike_auth(sa, request.payloads, request.message_id, request.now)

    def refused(self, sa: TaskContext, error: ProtocolError) -> None:
        notify = error.notify
        if notify is not None and not sa.established:
            # Sec. 2.21.2: a refused IKE_AUTH leaves no IKE SA behind.
            reason = f"IKE_AUTH refused: {error.reason}"
            sa.after_response(lambda when: sa.fail(when, reason, notify))


def respond_ike_auth(
    sa: TaskContext, payloads: list[Payload], message_id: int, now: float
) -> list[Payload]:
    if sa.keymat.additional_ke_done < len(sa.keymat.additional_ke):
        raise ProtocolError("IKE_AUTH before the additional key exchanges completed")
    if isinstance(sa.eap_state, GatewayEap):
        return _respond_eap(sa, sa.eap_state, payloads, message_id, now)
    idi_payload = find_typed(payloads, PayloadType.IDi)
    if idi_payload is None:
        raise ProtocolError("IKE_AUTH request without IDi", NotifyType.INVALID_SYNTAX)
    idr_wanted = find_typed(payloads, PayloadType.IDr)
    sa.peer.certreq = find_all(payloads, CertReqPayload)
    try:
        peer = Identity.from_payload(int(idi_payload.id_type), bytes(idi_payload.data))
        wanted = (
            Identity.from_payload(int(idr_wanted.id_type), bytes(idr_wanted.data))
            if idr_wanted is not None
            else None
        )
        config = _select_config(sa, peer, wanted)
        sa.config = config
        local = identity_for(sa, config.local, sa.local_addr)
        if find(payloads, AuthPayload) is None:
            if not uses_eap(config.remote):
                raise AuthenticationError(
                    f"{peer} sent no AUTH (it asks for EAP), but connection {config.name!r} "
                    f"authenticates peers with {config.remote.auth}",
                    check="method-mismatch",
                )
            return _start_eap(sa, config, payloads, peer, local, idi_payload, message_id, now)
        if uses_eap(config.remote):
            raise AuthenticationError(
                f"{peer} authenticated with an AUTH payload, connection {config.name!r} "
                f"expects {config.remote.auth}",
                check="method-mismatch",
            )
        checked = responder_payloads(sa, payloads)  # RFC 8784: the PPK, or NO_PPK_AUTH
        octets = octets_for(
            sa, initiator_side=True, id_body=idi_payload.serialize(), message_id=message_id
        )
        verify_auth(sa, config.remote, local, peer, checked, octets, now)
    except ProtocolError as error:
        check = error.check if isinstance(error, AuthenticationError) else "bad-signature"
        reason = error.reason
        sa.emit(AuthenticationFailed(sa.ike_sa_id, sa.name, check, reason, sa.remote_addr))
        sa.after_response(lambda when: sa.fail(when, reason, NotifyType.AUTHENTICATION_FAILED))
        return [NotifyPayload(notify_type=NotifyType.AUTHENTICATION_FAILED)]
    sa.local_id = str(local)
    sa.remote_id = str(peer)
    sa.peer.initial_contact = find_notify(payloads, NotifyType.INITIAL_CONTACT) is not None
    idr = id_payload(local, PayloadType.IDr)
    our_octets = octets_for(
        sa, initiator_side=False, id_body=idr.serialize(), message_id=message_id
    )
    try:
        auth_payloads = build_auth(sa, config.local, local, peer, our_octets)
    except SignerError as error:
        # Our key (a token) could not sign: this SA fails, established ones are untouched.
        reason = error.reason
        sa.emit(AuthenticationFailed(sa.ike_sa_id, sa.name, error.check, reason, sa.remote_addr))
        sa.after_response(lambda when: sa.fail(when, reason, NotifyType.AUTHENTICATION_FAILED))
        return [NotifyPayload(notify_type=NotifyType.AUTHENTICATION_FAILED)]
    childless_refusal = _childless_refusal(config.childless, _has_child(payloads))
    if childless_refusal is not None:
        # strongSwan answers INVALID_SYNTAX and the IKE SA ends (RFC 6023 leaves it open).
        sa.emit(
            NegotiationFailed(
                sa.ike_sa_id, sa.name, childless_refusal, NotifyType.INVALID_SYNTAX,
                received=False, exchange="IKE_AUTH",
            )
        )  # fmt: skip
        sa.after_response(lambda when: sa.fail(when, childless_refusal, NotifyType.INVALID_SYNTAX))
        return [NotifyPayload(notify_type=NotifyType.INVALID_SYNTAX)]
    response: list[Payload] = [idr]
    response += [p for p in auth_payloads if isinstance(p, CertPayload)]
    response += [p for p in auth_payloads if not isinstance(p, CertPayload)]
    response += responder_notifies(sa)  # RFC 8784: an empty PPK_IDENTITY
    redirect = auth_redirect(sa)
    if redirect is not None:
        # RFC 5685 sec. 4.3: authenticated, sent elsewhere; no Child SA, and the IKE SA
        # never comes up here (the client drops it without a Delete, as charon does).
        reason = f"{sa.remote_id} redirected to another gateway (IKE_AUTH)"
        sa.after_response(lambda when: sa.destroy(when, reason))
        return [*response, redirect]
    return _established_response(sa, payloads, response, str(peer), now)


def _start_eap(
    sa: TaskContext,
    config: IkeConfig,
    payloads: list[Payload],
    peer: Identity,
    local: Identity,
    idi_payload: IdPayload,
    message_id: int,
    now: float,
) -> list[Payload]:
    """First response of an EAP IKE_AUTH (sec. 2.16): IDr, [CERT,] AUTH, EAP; with
    EAP-only authentication (RFC 5998, our ``local`` round is EAP) IDr and EAP alone."""
    idr = id_payload(local, PayloadType.IDr)
    auth_payloads: list[Payload] = []
    if eap_only_gateway(config):
        announced = find_notify(payloads, NotifyType.EAP_ONLY_AUTHENTICATION) is not None
        check_eap_only_gateway(config, announced, peer)
    else:
        our_octets = octets_for(
            sa, initiator_side=False, id_body=idr.serialize(), message_id=message_id
        )
        auth_payloads = build_auth(sa, config.local, local, peer, our_octets)
    request = start_gateway(
        sa, config, payloads, peer, local, idi_payload.serialize(), idr.serialize(), now
    )
    response: list[Payload] = [idr]
    response += [p for p in auth_payloads if isinstance(p, CertPayload)]
    response += [p for p in auth_payloads if not isinstance(p, CertPayload)]
    return [*response, request]


def _respond_eap(
    sa: TaskContext, state: GatewayEap, payloads: list[Payload], message_id: int, now: float
) -> list[Payload]:
    """The EAP rounds, then the MSK-keyed AUTH and the first request's Child SA / CP."""
    authenticator = state.authenticator
    try:
        if not state.done and isinstance(authenticator, ExternalEapAuthenticator):
            relay_response(sa, state, payloads)  # auth = eap-radius: answered later
            return []
        if not state.done:
            assert isinstance(authenticator, EapAuthenticator)
            answer = authenticator.process(eap_payload(payloads))
            pending = authenticator.pending_failure
            if pending is not None and not state.reported:
                # Reported now: a peer may leave without acknowledging (charon does).
                state.reported = True
                reason = f"EAP {describe_method(state)} for {state.identity!r} failed: {pending}"
                sa.emit(AuthenticationFailed(sa.ike_sa_id, sa.name, "eap", reason,
                                             sa.remote_addr))  # fmt: skip
            if authenticator.finished:
                state.done = True
                if not authenticator.succeeded:
                    raise AuthenticationError(
                        f"EAP {describe_method(state)} for {state.identity!r} failed: "
                        f"{authenticator.failure_reason}",
                        check="eap",
                    )
            return [EapPayload(answer.serialize())]
        msk = authenticator.msk  # None after EAP-MD5: SK_pi/SK_pr (sec. 2.16)
        checked = responder_payloads(sa, payloads)  # RFC 8784: the PPK, or NO_PPK_AUTH
        octets = octets_for(sa, initiator_side=True, id_body=state.idi_body, message_id=message_id)
        verify_msk_auth(sa, msk, octets, checked, state.identity)
    except ProtocolError as error:
        check = error.check if isinstance(error, AuthenticationError) else "eap"
        reason = error.reason
        if not state.reported:
            state.reported = True
            sa.emit(AuthenticationFailed(sa.ike_sa_id, sa.name, check, reason, sa.remote_addr))
        sa.after_response(lambda when: sa.fail(when, reason, NotifyType.AUTHENTICATION_FAILED))
        if not state.done or authenticator.succeeded:
            return [NotifyPayload(notify_type=NotifyType.AUTHENTICATION_FAILED)]
        # The EAP-Failure goes to the peer; the IKE SA ends after it.
        return [EapPayload(EapPacket(EapCode.FAILURE, 0).serialize())]
    sa.eap_state = None
    sa.local_id = str(state.local)
    sa.remote_id = str(state.peer)
    our_octets = octets_for(sa, initiator_side=False, id_body=state.idr_body, message_id=message_id)
    response: list[Payload] = [msk_auth(sa, msk, our_octets), *responder_notifies(sa)]
    return _established_response(sa, state.first_request, response, state.identity, now)


def _established_response(
    sa: TaskContext, payloads: list[Payload], response: list[Payload], identity: str, now: float
) -> list[Payload]:
    """The responder authenticated the peer: established, then CP and the Child SA of the
    request that opened IKE_AUTH (``payloads``). ``identity``: whom leases are for."""
    sa.to("recv_auth_request")
    on_established(sa, now)
    return _cp_and_child(sa, payloads, response, identity, now, may_defer=True)


def _cp_and_child(
    sa: TaskContext,
    payloads: list[Payload],
    response: list[Payload],
    identity: str,
    now: float,
    may_defer: bool = False,
) -> list[Payload]:
    """The CFG_REPLY and the Child SA of an authenticated IKE_AUTH request. When the pools
    must fetch the address first (``AddressPending``), the response waits: an
    ``AddressRequested`` event, then ``Dispatcher.address_ready`` runs this again."""
    try:
        try:
            cp_reply = gateway_reply(sa, payloads, now, identity)
        except AddressPending as pending:
            if not may_defer:
                raise ProtocolError(str(pending), NotifyType.INTERNAL_ADDRESS_FAILURE) from None
            sa.emit(AddressRequested(sa.ike_sa_id, sa.name, pending.identity, pending.pool))
            sa.pending_address = lambda when: _cp_and_child(sa, payloads, response, identity, when)
            sa.defer_response()
            return []
    except ProtocolError as error:
        # A malformed CFG_REQUEST or no address to give (INTERNAL_ADDRESS_FAILURE, sec.
        # 3.15.4): no lease was taken; the IKE SA, of no use without the Child SA, goes.
        notify = error.notify or NotifyType.INTERNAL_ADDRESS_FAILURE
        auth_exchange_failed(sa, ProtocolError(error.reason, notify), received=False)
        response.append(NotifyPayload(notify_type=notify))
        reason = error.reason
        sa.after_response(lambda when: sa.delete_ike(when, reason))
        return response
    if cp_reply is not None:
        response.append(cp_reply)
    if _has_child(payloads):
        try:
            child, sa_payloads, ts, _ = respond_child(
                sa,
                payloads,
                sa.keymat.nonce_i,
                sa.keymat.nonce_r,
                now,
                with_ke=False,
                exchange="IKE_AUTH",
            )
        except ProtocolError as error:
            if error.notify is None:
                raise
            auth_exchange_failed(sa, error, received=False)
            # Sec. 1.2 / 2.21.3: the IKE SA stands; only the Child SA is refused.
            response.append(NotifyPayload(notify_type=error.notify, data=error.notify_data))
            return response
        response += sa_payloads + ts
        sa.after_response(lambda when: install_child(sa, child, when))
    return response


def _childless_refusal(mode: str, has_child: bool) -> str | None:
    """Why an IKE_AUTH request is refused under ``childless`` (None: it is not)."""
    if mode == "never" and not has_child:
        return "the peer initiated a childless IKE SA (RFC 6023), and childless = never"
    if mode == "force" and has_child:
        return "the peer did not initiate a childless IKE SA, and childless = force"
    return None


def _has_child(payloads: list[Payload]) -> bool:
    return find(payloads, SaPayload) is not None


__all__ = ["IkeAuthResponder", "IkeAuthTask", "NoncePayload", "respond_ike_auth"]
