"""IKE_SA_INIT (RFC 7296 sec. 1.2, 2.6, 2.7, 2.10, 2.14) and IKE_INTERMEDIATE key
exchanges (RFC 9242, RFC 9370).

Initiator: SA, KE, Ni, NAT_DETECTION_*, IKEV2_FRAGMENTATION_SUPPORTED,
SIGNATURE_HASH_ALGORITHMS (and INTERMEDIATE_EXCHANGE_SUPPORTED with additional key
exchanges); retried with the COOKIE the responder demands (sec. 2.6) or with the group an
INVALID_KE_PAYLOAD asks for (sec. 1.3). Responder: select a proposal, compute the keys.
"""

from __future__ import annotations

from ikev2.config import IkeConfig
from ikev2.crypto.auth import build_signature_hash_algorithms, parse_signature_hash_algorithms
from ikev2.crypto.certs import ca_key_hashes
from ikev2.crypto.keyexchange import KeyExchange
from ikev2.enums import CertEncoding, ExchangeType, KeId, NotifyType, ProtocolId, TransformType
from ikev2.errors import ProtocolError
from ikev2.events import NegotiationFailed
from ikev2.keymat import ADDKE_TYPES
from ikev2.payloads import (
    CertReqPayload,
    KePayload,
    NoncePayload,
    NotifyPayload,
    Proposal,
    SaPayload,
)
from ikev2.proposals import (
    NoProposalChosen,
    check_selected_proposal,
    chosen_transform,
    display_list,
    explain_mismatch,
    parse_proposals,
    select_proposal,
    to_strongswan,
    transforms_of,
)
from ikev2.states import IkeState
from ikev2.tasks import (
    Payload,
    Request,
    Responder,
    Task,
    TaskContext,
    check_nonce,
    find,
    find_notify,
    first_error,
    new_ke,
    notify_name,
)
from ikev2.tasks.ike_intermediate import IkeIntermediateTask
from ikev2.tasks.ike_natd import evaluate, float_to_nat_t, natd_notifies
from ikev2.tasks.ike_ppk import note_use_ppk, use_ppk_notifies
from ikev2.tasks.ike_redirect import init_notifies, peer_announced, process_init_redirect

NONCE_SIZE = 32
MAX_COOKIE_RETRIES = 3


def signature_hashes_notify() -> NotifyPayload:
    """RFC 7427 sec. 4: what we can verify (SHA-1 only when policy allows it, never offered)."""
    return NotifyPayload(
        notify_type=NotifyType.SIGNATURE_HASH_ALGORITHMS, data=build_signature_hash_algorithms()
    )


def parse_signature_hashes(payloads: list[Payload]) -> list[int]:
    notify = find_notify(payloads, NotifyType.SIGNATURE_HASH_ALGORITHMS)
    if notify is None:
        return []
    return parse_signature_hash_algorithms(bytes(notify.data))


def ike_proposals(sa: TaskContext, config: IkeConfig | None = None) -> list[Proposal]:
    config = config or sa.config
    return parse_proposals(config.proposals, ProtocolId.IKE)


def capability_notifies(
    sa: TaskContext, peer_payloads: list[Payload] | None
) -> list[NotifyPayload]:
    """FRAGMENTATION_SUPPORTED and SIGNATURE_HASH_ALGORITHMS (the responder only echoes
    fragmentation support when the initiator announced it, RFC 7383 sec. 2.3)."""
    out: list[NotifyPayload] = []
    if sa.config.fragmentation != "no" and (
        peer_payloads is None
        or find_notify(peer_payloads, NotifyType.IKEV2_FRAGMENTATION_SUPPORTED) is not None
    ):
        out.append(NotifyPayload(notify_type=NotifyType.IKEV2_FRAGMENTATION_SUPPORTED))
    if sa.config.local.signature_auth != "classic" and sa.config.remote.signature_auth != "classic":
        out.append(signature_hashes_notify())
    # RFC 6023 sec. 3: the responder's IKE_SA_INIT response says whether it accepts an
    # IKE_AUTH without a Child SA (charon's initiator sends nothing; we announce it both
    # ways, which is allowed); `childless = never` announces nothing.
    if sa.config.childless != "never":
        out.append(NotifyPayload(notify_type=NotifyType.CHILDLESS_IKEV2_SUPPORTED))
    return out


class IkeInitTask(Task):
    exchange = ExchangeType.IKE_SA_INIT
    name = "IKE_SA_INIT"

    def __init__(self) -> None:
        self.cookie = b""
        self.cookie_retries = 0
        self.ke_method: int | None = None
        self.ke: KeyExchange | None = None
        self.proposals: list[Proposal] | None = None
        self.ke_retried = False
        self.received_notify: NotifyType | None = None
        self.use_ppk: list[NotifyPayload] = []

    def build(self, sa: TaskContext, now: float) -> list[Payload]:
        sa.to("send_init" if sa.state is IkeState.CREATED else "retry_init")
        if self.proposals is None:
            self.proposals = ike_proposals(sa)
        if self.ke_method is None:
            first_ke = chosen_transform(self.proposals[0], TransformType.KE)
            if first_ke is None:
                raise ProtocolError("first IKE proposal has no KE method", None)
            self.ke_method = int(first_ke.id)
        if self.ke is None or int(self.ke.method) != self.ke_method:
            self.ke = new_ke(sa, self.ke_method)
        if not sa.keymat.nonce_i:
            sa.keymat.nonce_i = sa.ctx.rng(NONCE_SIZE)
        sa.spi_r = bytes(8)
        payloads: list[Payload] = []
        if self.cookie:
            # Sec. 2.6: the COOKIE notify is the first payload of the retried request.
            payloads.append(NotifyPayload(notify_type=NotifyType.COOKIE, data=self.cookie))
        payloads += [
            SaPayload(proposals=self.proposals),
            KePayload(group=KeId(self.ke_method), data=self.ke.our_payload()),
            NoncePayload(nonce=sa.keymat.nonce_i),
        ]
        payloads += natd_notifies(
            sa.spi_i,
            bytes(8),
            sa.local_addr,
            sa.remote_addr,
            fake_nat=sa.config.encap,
            rng=sa.ctx.rng,
        )
        payloads += capability_notifies(sa, None)
        self.use_ppk = use_ppk_notifies(sa, None)  # RFC 8784 sec. 3
        payloads += self.use_ppk
        if any(transforms_of(p, t) for p in self.proposals for t in ADDKE_TYPES):
            payloads.append(NotifyPayload(notify_type=NotifyType.INTERMEDIATE_EXCHANGE_SUPPORTED))
        payloads += init_notifies(sa)  # RFC 5685 sec. 3, 6
        return payloads

    def process(self, sa: TaskContext, payloads: list[Payload], now: float) -> bool:
        assert self.proposals is not None and self.ke is not None
        redirect = find_notify(payloads, NotifyType.REDIRECT)
        if redirect is not None:  # RFC 5685 sec. 4.2 (True: ignored, sent again)
            return process_init_redirect(sa, redirect, now)
        cookie = find_notify(payloads, NotifyType.COOKIE)
        if cookie is not None:
            self.cookie_retries += 1
            if self.cookie_retries > MAX_COOKIE_RETRIES or not 1 <= len(cookie.data) <= 64:
                raise ProtocolError("responder keeps demanding COOKIEs", None)
            self.cookie = bytes(cookie.data)
            return True
        invalid_ke = find_notify(payloads, NotifyType.INVALID_KE_PAYLOAD)
        if invalid_ke is not None:
            if len(invalid_ke.data) != 2:
                raise ProtocolError("INVALID_KE_PAYLOAD without a 2-octet group", None)
            group = int.from_bytes(invalid_ke.data, "big")
            ours = {int(t.id) for p in self.proposals for t in transforms_of(p, TransformType.KE)}
            if self.ke_retried or group not in ours or group == self.ke_method:
                self.received_notify = NotifyType.INVALID_KE_PAYLOAD
                raise ProtocolError(
                    f"responder wants KE method {group}, which we do not offer "
                    f"(we offer {display_list(self.proposals)})",
                    NotifyType.INVALID_KE_PAYLOAD,
                )
            self.ke_retried = True
            self.ke_method = group
            return True
        error = first_error(payloads)
        if error is not None:
            what = notify_name(int(error.notify_type))
            reason = f"responder answered IKE_SA_INIT with {what}"
            if error.notify_type == NotifyType.NO_PROPOSAL_CHOSEN:
                reason += (
                    f": none of our IKE proposals was acceptable (we offered "
                    f"{', '.join(to_strongswan(p) for p in self.proposals)})"
                )
            self.received_notify = NotifyType(int(error.notify_type))
            raise ProtocolError(reason, self.received_notify)
        sa_payload = find(payloads, SaPayload)
        ke_payload = find(payloads, KePayload)
        if sa_payload is None or ke_payload is None or len(sa_payload.proposals) != 1:
            raise ProtocolError("IKE_SA_INIT response without one SA proposal and a KE payload")
        if not any(sa.spi_r):
            raise ProtocolError("IKE_SA_INIT response with a zero responder SPI")
        chosen = sa_payload.proposals[0]
        check_selected_proposal(self.proposals, chosen, ProtocolId.IKE)
        sa.keymat.apply_proposal(chosen)
        keymat = sa.keymat
        if (
            int(ke_payload.group) != int(keymat.ke_method or 0)
            or keymat.ke_method != self.ke_method
        ):
            raise ProtocolError("KE payload group differs from the chosen proposal")
        sa.keymat.nonce_r = check_nonce(find(payloads, NoncePayload))
        shared = self.ke.compute(bytes(ke_payload.data))
        sa.keymat.derive_initial(shared, sa.spi_i, sa.spi_r)
        evaluate(sa, payloads, sa.spi_i, sa.spi_r)
        float_to_nat_t(sa)
        sa.peer.fragmentation = sa.config.fragmentation != "no" and (
            find_notify(payloads, NotifyType.IKEV2_FRAGMENTATION_SUPPORTED) is not None
        )
        sa.peer.signature_hashes = parse_signature_hashes(payloads)
        sa.peer.childless = find_notify(payloads, NotifyType.CHILDLESS_IKEV2_SUPPORTED) is not None
        sa.peer.certreq = [p for p in payloads if isinstance(p, CertReqPayload)]
        note_use_ppk(sa, self.use_ppk, payloads)
        sa.peer.hash_and_url = (
            find_notify(payloads, NotifyType.HTTP_CERT_LOOKUP_SUPPORTED) is not None
        )
        if sa.keymat.additional_ke:
            sa.to("recv_init_response_intermediate")
            for index in reversed(range(len(sa.keymat.additional_ke))):
                sa.queue_task(IkeIntermediateTask(index), now, start=False, first=True)
        else:
            sa.to("recv_init_response")
        return False

    def abort(self, sa: TaskContext, reason: str, now: float) -> None:
        notify = self.received_notify
        sa.emit(
            NegotiationFailed(
                sa.ike_sa_id,
                sa.name,
                reason,
                notify,
                received=True,
                exchange="IKE_SA_INIT",
            )
        )
        sa.fail(now, reason, notify)


def _prefer_peer_group(ours: list[Proposal], group: int) -> list[Proposal]:
    """Our proposals with the KE transforms reduced to ``group`` where they offer it, so that
    selection picks the group the initiator already sent a KE payload for (avoids an
    INVALID_KE_PAYLOAD round trip, as charon does)."""
    out = []
    for proposal in ours:
        kes = transforms_of(proposal, TransformType.KE)
        if any(int(t.id) == group for t in kes):
            transforms = [
                t
                for t in proposal.transforms
                if int(t.type) != TransformType.KE or int(t.id) == group
            ]
            out.append(Proposal(proposal.number, proposal.protocol, proposal.spi, transforms))
    return out


class IkeInitResponder(Responder):
    """Responder side of IKE_SA_INIT. Raises ProtocolError for NO_PROPOSAL_CHOSEN and
    INVALID_KE_PAYLOAD (answered statelessly by the dispatcher)."""

    def respond(self, sa: TaskContext, request: Request) -> list[Payload]:
        return respond_ike_init(sa, request.payloads, request.now)


def respond_ike_init(sa: TaskContext, payloads: list[Payload], now: float) -> list[Payload]:
    """The body of :class:`IkeInitResponder` (selection, keys, capabilities)."""
    sa.to("recv_init_request")
    sa_payload = find(payloads, SaPayload)
    ke_payload = find(payloads, KePayload)
    if sa_payload is None or ke_payload is None:
        raise ProtocolError("IKE_SA_INIT request without SA or KE payload")
    nonce_i = check_nonce(find(payloads, NoncePayload))
    offered = sa.ctx.policy.filter_proposals(sa_payload.proposals)
    chosen: Proposal | None = None
    first_failure: NoProposalChosen | None = None
    for config in sa.candidate_configs:
        ours = ike_proposals(sa, config)
        try:
            preferred = _prefer_peer_group(ours, int(ke_payload.group))
            try:
                chosen = select_proposal(preferred, offered, ProtocolId.IKE)
            except NoProposalChosen:
                chosen = select_proposal(ours, offered, ProtocolId.IKE)
        except NoProposalChosen as error:
            if first_failure is None:
                first_failure = error
                if len(offered) != len(sa_payload.proposals):
                    first_failure = NoProposalChosen(
                        select_failure_text(ours, sa_payload.proposals, offered)
                    )
            continue
        sa.config = config
        break
    if chosen is None:
        assert first_failure is not None
        raise first_failure
    keymat = sa.keymat
    keymat.apply_proposal(chosen)
    if int(ke_payload.group) != keymat.ke_method:
        raise ProtocolError(
            f"initiator sent a KE payload for group {int(ke_payload.group)}, we chose "
            f"{keymat.ke_method.name if keymat.ke_method else '?'}",
            NotifyType.INVALID_KE_PAYLOAD,
            notify_data=int(keymat.ke_method or 0).to_bytes(2, "big"),
        )
    ke = new_ke(sa, int(ke_payload.group))
    shared = ke.compute(bytes(ke_payload.data))
    sa.keymat.nonce_i = nonce_i
    sa.keymat.nonce_r = sa.ctx.rng(NONCE_SIZE)
    sa.keymat.derive_initial(shared, sa.spi_i, sa.spi_r)
    evaluate(sa, payloads, sa.spi_i, bytes(8))
    sa.peer.udp_encap = sa.peer.nat_local or sa.peer.nat_remote
    sa.peer.fragmentation = sa.config.fragmentation != "no" and (
        find_notify(payloads, NotifyType.IKEV2_FRAGMENTATION_SUPPORTED) is not None
    )
    sa.peer.signature_hashes = parse_signature_hashes(payloads)
    sa.peer.childless = find_notify(payloads, NotifyType.CHILDLESS_IKEV2_SUPPORTED) is not None
    sa.peer.intermediate = (
        find_notify(payloads, NotifyType.INTERMEDIATE_EXCHANGE_SUPPORTED) is not None
    )
    sa.peer.redirect = peer_announced(payloads)  # RFC 5685 sec. 3
    response: list[Payload] = [
        SaPayload(proposals=[chosen]),
        KePayload(group=ke_payload.group, data=ke.our_payload()),
        NoncePayload(nonce=sa.keymat.nonce_r),
    ]
    response += natd_notifies(
        sa.spi_i,
        sa.spi_r,
        sa.local_addr,
        sa.remote_addr,
        fake_nat=sa.config.encap,
        rng=sa.ctx.rng,
    )
    response += capability_notifies(sa, payloads)
    use_ppk = use_ppk_notifies(sa, payloads)  # RFC 8784 sec. 3
    note_use_ppk(sa, use_ppk, payloads)
    response += use_ppk
    certreq = certreq_payload(sa)
    if certreq is not None:
        response.append(certreq)
    response += ocsp_certreq(sa)  # RFC 4806
    if certreq is not None:
        response += http_lookup_notify(sa)  # sec. 3.10.1: with a CERTREQ
    if sa.keymat.additional_ke:
        response.append(NotifyPayload(notify_type=NotifyType.INTERMEDIATE_EXCHANGE_SUPPORTED))
    sa.timers.set("half_open", now + HALF_OPEN_TIMEOUT)
    return response


HALF_OPEN_TIMEOUT = 30.0


def select_failure_text(
    ours: list[Proposal], received: list[Proposal], allowed: list[Proposal]
) -> str:
    text = explain_mismatch(ours, received, ProtocolId.IKE)
    if len(allowed) != len(received):
        text += " (some of the peer's proposals use algorithms refused by our policy)"
    return text


def http_lookup_notify(sa: TaskContext) -> list[NotifyPayload]:
    """HTTP_CERT_LOOKUP_SUPPORTED (RFC 7296 sec. 3.10.1): the peer may send Hash and URL
    certificates, when we can fetch them (the daemon gave us a fetcher)."""
    if sa.config.remote.fetch_certificate is None or sa.config.remote.auth != "pubkey":
        return []
    return [NotifyPayload(notify_type=NotifyType.HTTP_CERT_LOOKUP_SUPPORTED)]


def ocsp_certreq(sa: TaskContext) -> list[CertReqPayload]:
    """RFC 4806 sec. 3.1: a CERTREQ for OCSP content (our ``ocsp = request | both`` with
    certificate authentication). Its responder list is empty: any responder the CA
    trusts will do (strongSwan lists only self-signed OCSP signers, and only logs them)."""
    if sa.config.ocsp not in ("request", "both") or sa.config.remote.auth != "pubkey":
        return []
    return [CertReqPayload(encoding=CertEncoding.OCSP_CONTENT, data=b"")]


def certreq_payload(sa: TaskContext) -> CertReqPayload | None:
    """CERTREQ with the SHA-1 hashes of our trust anchors' public keys (sec. 3.7)."""
    auth = sa.config.remote
    if auth.auth != "pubkey" or not auth.cacerts or not sa.config.local.send_certreq:
        return None
    return CertReqPayload(
        encoding=CertEncoding.X509_CERT_SIGNATURE, data=b"".join(ca_key_hashes(auth.cacerts))
    )
