"""IKE_SA_INIT (RFC 7296 sec. 1.2, 2.6, 2.7, 2.10, 2.14) and IKE_INTERMEDIATE key
exchanges (RFC 9242, RFC 9370).

Initiator: SA, KE, Ni, NAT_DETECTION_*, IKEV2_FRAGMENTATION_SUPPORTED,
SIGNATURE_HASH_ALGORITHMS (and INTERMEDIATE_EXCHANGE_SUPPORTED with additional key
exchanges); retried with the COOKIE the responder demands (sec. 2.6) or with the group an
INVALID_KE_PAYLOAD asks for (sec. 1.3). Responder: select a proposal, compute the keys.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

from ikev2.crypto.auth import build_signature_hash_algorithms, parse_signature_hash_algorithms
from ikev2.crypto.keyexchange import KeyExchange
from ikev2.crypto.keys import derive_ike_keys, update_ike_keys_additional_ke
from ikev2.crypto.prf import Prf
from ikev2.crypto.sk import make_sk_cipher, sk_key_lengths
from ikev2.enums import (
    CertEncoding,
    EncrId,
    ExchangeType,
    IntegId,
    KeId,
    NotifyType,
    PayloadType,
    PrfId,
    ProtocolId,
    TransformType,
)
from ikev2.errors import ProtocolError
from ikev2.events import NegotiationFailed
from ikev2.message import IKE_HEADER_SIZE, IkeHeader, serialize_payload_chain
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
    parse_proposals,
    select_proposal,
    to_strongswan,
    transforms_of,
)
from ikev2.states import IkeState
from ikev2.tasks import (
    Task,
    check_nonce,
    find,
    find_notify,
    first_error,
    new_ke,
    notify_name,
)
from ikev2.tasks.followup_ke import ADDKE_TYPES, additional_methods
from ikev2.tasks.ike_natd import evaluate, float_to_nat_t, natd_notifies

if TYPE_CHECKING:
    from ikev2.sa import IkeSa

NONCE_SIZE = 32
MAX_COOKIE_RETRIES = 3


def apply_proposal(sa: IkeSa, chosen: Proposal) -> None:
    encr = chosen_transform(chosen, TransformType.ENCR)
    prf = chosen_transform(chosen, TransformType.PRF)
    ke = chosen_transform(chosen, TransformType.KE)
    if encr is None or prf is None or ke is None:
        raise ProtocolError("IKE proposal without ENCR, PRF or KE", NotifyType.NO_PROPOSAL_CHOSEN)
    integ = chosen_transform(chosen, TransformType.INTEG)
    sa.encr = EncrId(encr.id)
    sa.encr_key_bits = encr.key_length
    sa.integ = IntegId(integ.id) if integ is not None and integ.id != 0 else None
    sa.prf_id = PrfId(prf.id)
    sa.ke_method = KeId(ke.id)
    sa.additional_ke = additional_methods(chosen)
    sa.chosen_proposal = chosen


def algorithm_summary(sa: IkeSa) -> str:
    return to_strongswan(sa.chosen_proposal) if sa.chosen_proposal is not None else "-"


def install_keys(sa: IkeSa, keys: Any) -> None:
    """Set SK_* and build both SK ciphers (ours: SK_ei/SK_ai when we are the initiator)."""
    assert sa.encr is not None
    sa.keys = keys
    if sa.initiator:
        out_e, out_a, in_e, in_a = keys.sk_ei, keys.sk_ai, keys.sk_er, keys.sk_ar
    else:
        out_e, out_a, in_e, in_a = keys.sk_er, keys.sk_ar, keys.sk_ei, keys.sk_ai
    sa.cipher_out = make_sk_cipher(
        sa.encr, sa.encr_key_bits, sa.integ, out_e, out_a or None, rng=sa.ctx.rng
    )
    sa.cipher_in = make_sk_cipher(sa.encr, sa.encr_key_bits, sa.integ, in_e, in_a or None)


def key_lengths(sa: IkeSa) -> tuple[int, int]:
    assert sa.encr is not None
    try:
        return sk_key_lengths(sa.encr, sa.encr_key_bits, sa.integ)
    except ProtocolError as error:
        raise ProtocolError(error.reason, NotifyType.NO_PROPOSAL_CHOSEN) from None


def derive_initial_keys(sa: IkeSa, shared_secret: bytes) -> None:
    assert sa.prf_id is not None
    sa.prf = Prf(sa.prf_id)
    encr_len, integ_len = key_lengths(sa)
    keys = derive_ike_keys(
        sa.prf, shared_secret, sa.nonce_i, sa.nonce_r, sa.spi_i, sa.spi_r, encr_len, integ_len
    )
    install_keys(sa, keys)


def signature_hashes_notify() -> NotifyPayload:
    """RFC 7427 sec. 4: what we can verify (SHA-1 only when policy allows it, never offered)."""
    return NotifyPayload(
        notify_type=NotifyType.SIGNATURE_HASH_ALGORITHMS, data=build_signature_hash_algorithms()
    )


def parse_signature_hashes(payloads: list[Any]) -> list[int]:
    notify = find_notify(payloads, NotifyType.SIGNATURE_HASH_ALGORITHMS)
    if notify is None:
        return []
    return parse_signature_hash_algorithms(bytes(notify.data))


def ike_proposals(sa: IkeSa, config: Any = None) -> list[Proposal]:
    config = config or sa.config
    return parse_proposals(config.proposals, ProtocolId.IKE)


def capability_notifies(sa: IkeSa, peer_payloads: list[Any] | None) -> list[NotifyPayload]:
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

    def build(self, sa: IkeSa, now: float) -> list[Any]:
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
        if not sa.nonce_i:
            sa.nonce_i = sa.ctx.rng(NONCE_SIZE)
        sa.spi_r = bytes(8)
        payloads: list[Any] = []
        if self.cookie:
            # Sec. 2.6: the COOKIE notify is the first payload of the retried request.
            payloads.append(NotifyPayload(notify_type=NotifyType.COOKIE, data=self.cookie))
        payloads += [
            SaPayload(proposals=self.proposals),
            KePayload(group=KeId(self.ke_method), data=self.ke.our_payload()),
            NoncePayload(nonce=sa.nonce_i),
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
        if any(transforms_of(p, t) for p in self.proposals for t in ADDKE_TYPES):
            payloads.append(NotifyPayload(notify_type=NotifyType.INTERMEDIATE_EXCHANGE_SUPPORTED))
        return payloads

    def process(self, sa: IkeSa, payloads: list[Any], now: float) -> bool:
        assert self.proposals is not None and self.ke is not None
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
        apply_proposal(sa, chosen)
        if int(ke_payload.group) != int(sa.ke_method or 0) or sa.ke_method != self.ke_method:
            raise ProtocolError("KE payload group differs from the chosen proposal")
        sa.nonce_r = check_nonce(find(payloads, NoncePayload))
        shared = self.ke.compute(bytes(ke_payload.data))
        derive_initial_keys(sa, shared)
        sa.init_response = sa.current_response_raw
        evaluate(sa, payloads, sa.spi_i, sa.spi_r)
        float_to_nat_t(sa)
        sa.peer_fragmentation = sa.config.fragmentation != "no" and (
            find_notify(payloads, NotifyType.IKEV2_FRAGMENTATION_SUPPORTED) is not None
        )
        sa.peer_signature_hashes = parse_signature_hashes(payloads)
        sa.peer_certreq = [p for p in payloads if isinstance(p, CertReqPayload)]
        if sa.additional_ke:
            sa.to("recv_init_response_intermediate")
            for index in reversed(range(len(sa.additional_ke))):
                sa.queue_task(IkeIntermediateTask(index), now, start=False, first=True)
        else:
            sa.to("recv_init_response")
        return False

    def abort(self, sa: IkeSa, reason: str, now: float) -> None:
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


def respond_ike_init(sa: IkeSa, payloads: list[Any], now: float) -> list[Any]:
    """Responder side of IKE_SA_INIT. Raises ProtocolError for NO_PROPOSAL_CHOSEN and
    INVALID_KE_PAYLOAD (answered statelessly by the dispatcher)."""
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
    apply_proposal(sa, chosen)
    if int(ke_payload.group) != sa.ke_method:
        raise ProtocolError(
            f"initiator sent a KE payload for group {int(ke_payload.group)}, we chose "
            f"{sa.ke_method.name if sa.ke_method else '?'}",
            NotifyType.INVALID_KE_PAYLOAD,
            notify_data=int(sa.ke_method or 0).to_bytes(2, "big"),
        )
    ke = new_ke(sa, int(ke_payload.group))
    shared = ke.compute(bytes(ke_payload.data))
    sa.nonce_i = nonce_i
    sa.nonce_r = sa.ctx.rng(NONCE_SIZE)
    derive_initial_keys(sa, shared)
    evaluate(sa, payloads, sa.spi_i, bytes(8))
    sa.udp_encap = sa.nat_local or sa.nat_remote
    sa.peer_fragmentation = sa.config.fragmentation != "no" and (
        find_notify(payloads, NotifyType.IKEV2_FRAGMENTATION_SUPPORTED) is not None
    )
    sa.peer_signature_hashes = parse_signature_hashes(payloads)
    sa.peer_intermediate = (
        find_notify(payloads, NotifyType.INTERMEDIATE_EXCHANGE_SUPPORTED) is not None
    )
    response: list[Any] = [
        SaPayload(proposals=[chosen]),
        KePayload(group=ke_payload.group, data=ke.our_payload()),
        NoncePayload(nonce=sa.nonce_r),
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
    certreq = certreq_payload(sa)
    if certreq is not None:
        response.append(certreq)
    if sa.additional_ke:
        response.append(NotifyPayload(notify_type=NotifyType.INTERMEDIATE_EXCHANGE_SUPPORTED))
    sa.timers.set("half_open", now + HALF_OPEN_TIMEOUT)
    return response


HALF_OPEN_TIMEOUT = 30.0


def select_failure_text(
    ours: list[Proposal], received: list[Proposal], allowed: list[Proposal]
) -> str:
    from ikev2.proposals import explain_mismatch

    text = explain_mismatch(ours, received, ProtocolId.IKE)
    if len(allowed) != len(received):
        text += " (some of the peer's proposals use algorithms refused by our policy)"
    return text


def certreq_payload(sa: IkeSa) -> CertReqPayload | None:
    """CERTREQ with the SHA-1 hashes of our trust anchors' public keys (sec. 3.7)."""
    auth = sa.config.remote
    if auth.auth != "pubkey" or not auth.cacerts or not sa.config.local.send_certreq:
        return None
    try:
        from ikev2.crypto.certs import ca_key_hashes
    except ImportError:
        return None
    return CertReqPayload(
        encoding=CertEncoding.X509_CERT_SIGNATURE, data=b"".join(ca_key_hashes(auth.cacerts))
    )


# ------------------------------------------------------------------ IKE_INTERMEDIATE


def _int_auth_octets(
    sa: IkeSa, payloads: list[Any], outgoing: bool, message_id: int, message: Any
) -> bytes:
    """IntAuth_*_A | IntAuth_*_P of RFC 9242 sec. 3.3.2, computed as if the message had
    not been fragmented: the IKE header and SK payload header with the lengths of the
    unfragmented message, then the inner payloads in clear."""
    from ikev2.message import encrypted_message_length

    plain = serialize_payload_chain(payloads)
    if message is not None and not message.is_fragment and message.sk_offset is not None:
        return message.associated_data + plain
    cipher = sa.cipher_out if outgoing else sa.cipher_in
    assert cipher is not None
    length = encrypted_message_length(payloads, cipher)
    # IKE_INTERMEDIATE requests always come from the original initiator (RFC 9242 sec. 3).
    from_initiator = sa.initiator if outgoing else not sa.initiator
    header = IkeHeader(
        spi_i=sa.spi_i,
        spi_r=sa.spi_r,
        next_payload=PayloadType.SK,
        exchange=ExchangeType.IKE_INTERMEDIATE,
        initiator=from_initiator,
        response=not from_initiator,
        message_id=message_id,
        length=length,
    )
    first = int(payloads[0].TYPE) if payloads else 0
    return header.serialize() + struct.pack("!BBH", first, 0, length - IKE_HEADER_SIZE) + plain


def record_intermediate(
    sa: IkeSa, payloads: list[Any], *, outgoing: bool, message_id: int, message: Any = None
) -> None:
    """Fold one IKE_INTERMEDIATE message into IntAuth_i / IntAuth_r (RFC 9242 sec. 3.3.2)
    with the SK_pi / SK_pr in force for that exchange."""
    assert sa.prf is not None and sa.keys is not None
    octets = _int_auth_octets(sa, payloads, outgoing, message_id, message)
    from_initiator = sa.initiator if outgoing else not sa.initiator
    if from_initiator:
        sa.int_auth_i = sa.prf(sa.keys.sk_pi, sa.int_auth_i + octets)
    else:
        sa.int_auth_r = sa.prf(sa.keys.sk_pr, sa.int_auth_r + octets)


def update_keys_after_intermediate(sa: IkeSa, shared_secret: bytes) -> None:
    assert sa.prf is not None and sa.keys is not None
    encr_len, integ_len = key_lengths(sa)
    keys = update_ike_keys_additional_ke(
        sa.prf,
        sa.keys,
        shared_secret,
        sa.nonce_i,
        sa.nonce_r,
        sa.spi_i,
        sa.spi_r,
        encr_len,
        integ_len,
    )
    install_keys(sa, keys)


class IkeIntermediateTask(Task):
    """One RFC 9370 additional key exchange in IKE_INTERMEDIATE (initiator side)."""

    exchange = ExchangeType.IKE_INTERMEDIATE
    name = "IKE_INTERMEDIATE"

    def __init__(self, index: int) -> None:
        self.index = index
        self.ke: KeyExchange | None = None

    def build(self, sa: IkeSa, now: float) -> list[Any]:
        method = sa.additional_ke[self.index]
        self.ke = new_ke(sa, method)
        return [KePayload(group=_as_ke(method), data=self.ke.our_payload())]

    def process(self, sa: IkeSa, payloads: list[Any], now: float) -> bool:
        assert self.ke is not None
        error = first_error(payloads)
        if error is not None:
            raise ProtocolError(
                f"responder answered IKE_INTERMEDIATE with {notify_name(int(error.notify_type))}",
                NotifyType(int(error.notify_type)),
            )
        ke_payload = find(payloads, KePayload)
        if ke_payload is None or int(ke_payload.group) != sa.additional_ke[self.index]:
            raise ProtocolError("IKE_INTERMEDIATE response without the expected KE payload")
        shared = self.ke.compute(bytes(ke_payload.data))
        update_keys_after_intermediate(sa, shared)
        if self.index == len(sa.additional_ke) - 1:
            sa.to("intermediate_done")
        return False

    def abort(self, sa: IkeSa, reason: str, now: float) -> None:
        sa.emit(
            NegotiationFailed(
                sa.ike_sa_id, sa.name, reason, None, received=True, exchange="IKE_INTERMEDIATE"
            )
        )
        sa.fail(now, reason)


def _as_ke(method: int) -> KeId | int:
    try:
        return KeId(method)
    except ValueError:
        return method


def respond_intermediate(sa: IkeSa, payloads: list[Any], now: float) -> list[Any]:
    if sa.state is IkeState.INIT_DONE:
        sa.to("recv_intermediate")
    elif sa.state is not IkeState.INTERMEDIATE:
        raise ProtocolError("IKE_INTERMEDIATE outside of IKE SA setup")
    done = sa.intermediate_done
    if done >= len(sa.additional_ke):
        raise ProtocolError("IKE_INTERMEDIATE without a pending key exchange")
    ke_payload = find(payloads, KePayload)
    if ke_payload is None or int(ke_payload.group) != sa.additional_ke[done]:
        raise ProtocolError(
            "IKE_INTERMEDIATE KE payload does not match the negotiated additional key exchange",
            NotifyType.INVALID_KE_PAYLOAD,
            notify_data=sa.additional_ke[done].to_bytes(2, "big"),
        )
    ke = new_ke(sa, sa.additional_ke[done])
    shared = ke.compute(bytes(ke_payload.data))
    sa.intermediate_done = done + 1
    # The response is still protected with the current keys; the next message uses the
    # updated ones (RFC 9370 sec. 2.2.2).
    sa.after_response(lambda _now: update_keys_after_intermediate(sa, shared))
    return [KePayload(group=ke_payload.group, data=ke.our_payload())]
