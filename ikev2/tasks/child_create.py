"""Child SA negotiation: the first one inside IKE_AUTH (RFC 7296 sec. 1.2) and new ones in
CREATE_CHILD_SA (sec. 1.3.1), with traffic selector narrowing (sec. 2.9), optional PFS, and
USE_TRANSPORT_MODE / ESP_TFC_PADDING_NOT_SUPPORTED (sec. 1.3.1).

Shared with ``child_rekey`` (sec. 1.3.3): proposal building, selection, key derivation
(sec. 2.17) and installation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ikev2.child import ChildSa
from ikev2.config import ChildConfig
from ikev2.crypto.keyexchange import KeyExchange
from ikev2.enums import (
    EncrId,
    EsnId,
    ExchangeType,
    IntegId,
    NotifyType,
    PayloadType,
    ProtocolId,
    TransformType,
)
from ikev2.errors import ProtocolError
from ikev2.events import ChildSaEstablished, ChildSaRekeyed, NegotiationFailed
from ikev2.keymat import additional_methods
from ikev2.payloads import KePayload, NoncePayload, NotifyPayload, Proposal, SaPayload
from ikev2.proposals import (
    NoProposalChosen,
    check_selected_proposal,
    chosen_transform,
    parse_proposals,
    select_proposal,
    to_strongswan,
    transforms_of,
    without_key_exchange,
)
from ikev2.states import ChildState
from ikev2.tasks import (
    Payload,
    Request,
    Responder,
    Task,
    TaskContext,
    check_nonce,
    find,
    find_notify,
    find_typed,
    first_error,
    new_ke,
    notify_name,
)
from ikev2.tasks.followup_ke import start_followups
from ikev2.tasks.ike_config import resolve_selectors
from ikev2.timers import jittered_rekey
from ikev2.ts import (
    Ts,
    format_list,
    from_payload,
    is_subset,
    narrow,
    to_payload,
)

# ESP/AH key sizes (RFC 4106, 4309, 7634, 3602, 3686, 4868, 2404, 3566, 4494, 4543):
# AEAD salts are part of the encryption key material (sec. 2.17 takes them from KEYMAT).
_SALT = {
    EncrId.ENCR_AES_GCM_8: 4,
    EncrId.ENCR_AES_GCM_12: 4,
    EncrId.ENCR_AES_GCM_16: 4,
    EncrId.ENCR_NULL_AUTH_AES_GMAC: 4,
    EncrId.ENCR_AES_CCM_8: 3,
    EncrId.ENCR_AES_CCM_12: 3,
    EncrId.ENCR_AES_CCM_16: 3,
    EncrId.ENCR_AES_CTR: 4,
    EncrId.ENCR_CHACHA20_POLY1305: 4,
    EncrId.ENCR_CAMELLIA_CTR: 4,
}
_FIXED_ENCR_BITS = {EncrId.ENCR_CHACHA20_POLY1305: 256, EncrId.ENCR_3DES: 192, EncrId.ENCR_NULL: 0}
_INTEG_KEY = {
    IntegId.AUTH_HMAC_MD5_96: 16,
    IntegId.AUTH_HMAC_SHA1_96: 20,
    IntegId.AUTH_AES_XCBC_96: 16,
    IntegId.AUTH_AES_CMAC_96: 16,
    IntegId.AUTH_HMAC_SHA2_256_128: 32,
    IntegId.AUTH_HMAC_SHA2_384_192: 48,
    IntegId.AUTH_HMAC_SHA2_512_256: 64,
    IntegId.AUTH_AES_128_GMAC: 20,
    IntegId.AUTH_AES_192_GMAC: 28,
    IntegId.AUTH_AES_256_GMAC: 36,
}


def esp_key_lengths(encr: int | None, bits: int | None, integ: int | None) -> tuple[int, int]:
    encr_len = 0
    if encr is not None:
        encr_id = EncrId(encr)
        key_bits = bits if bits is not None else _FIXED_ENCR_BITS.get(encr_id)
        if key_bits is None:
            raise ProtocolError(
                f"{encr_id.name} without a key length", NotifyType.NO_PROPOSAL_CHOSEN
            )
        encr_len = key_bits // 8 + _SALT.get(encr_id, 0)
    integ_len = 0
    if integ not in (None, 0):
        try:
            integ_len = _INTEG_KEY[IntegId(integ)]
        except (KeyError, ValueError):
            raise ProtocolError(
                f"integrity algorithm {integ} not supported", NotifyType.NO_PROPOSAL_CHOSEN
            ) from None
    return encr_len, integ_len


def child_proposals(config: ChildConfig, spi: bytes, *, with_ke: bool) -> list[Proposal]:
    """Our ESP (or AH) proposals with our SPI; without KE transforms in IKE_AUTH."""
    if config.ah_proposals and not config.esp_proposals:
        proposals = parse_proposals(config.ah_proposals, ProtocolId.AH)
    else:
        proposals = parse_proposals(config.esp_proposals, ProtocolId.ESP)
    if not with_ke:
        proposals = [without_key_exchange(p) for p in proposals]
    for proposal in proposals:
        proposal.spi = spi
    return proposals


def pfs_group(proposals: list[Proposal]) -> int | None:
    """The KE method of our first proposal (None: no PFS configured)."""
    for transform in transforms_of(proposals[0], TransformType.KE):
        if int(transform.id) != 0:
            return int(transform.id)
    return None


def configured_ts(sa: TaskContext, config: ChildConfig) -> tuple[list[Ts], list[Ts]]:
    """(local, remote) selectors with ``dynamic`` resolved to the IKE addresses, or to the
    virtual IPs of a remote-access IKE SA (``ike_config.resolve_selectors``, sec. 2.19)."""
    asking = [] if sa.peer.local_vips else list(sa.config.vips)
    local = resolve_selectors(config.local_ts, sa.local_addr[0], sa.peer.local_vips, asking)
    remote = resolve_selectors(config.remote_ts, sa.remote_addr[0], sa.peer.remote_vips, [])
    return local, remote


def ts_payloads(sa: TaskContext, local: list[Ts], remote: list[Ts]) -> list[Payload]:
    """TSi/TSr from our side's point of view (TSi = the exchange initiator's)."""
    return [to_payload(PayloadType.TSi, local), to_payload(PayloadType.TSr, remote)]


def mode_notifies(config: ChildConfig) -> list[NotifyPayload]:
    out = []
    if config.mode == "transport":
        out.append(NotifyPayload(notify_type=NotifyType.USE_TRANSPORT_MODE))
    if not config.tfc_padding:
        out.append(NotifyPayload(notify_type=NotifyType.ESP_TFC_PADDING_NOT_SUPPORTED))
    return out


def apply_child_proposal(child: ChildSa, chosen: Proposal) -> None:
    encr = chosen_transform(chosen, TransformType.ENCR)
    integ = chosen_transform(chosen, TransformType.INTEG)
    esn = chosen_transform(chosen, TransformType.ESN)
    ke = chosen_transform(chosen, TransformType.KE)
    child.protocol = ProtocolId(int(chosen.protocol))
    child.encr = EncrId(encr.id) if encr is not None else None
    child.encr_key_bits = encr.key_length if encr is not None else None
    child.integ = IntegId(integ.id) if integ is not None and integ.id != 0 else None
    child.esn = esn is not None and esn.id == EsnId.ESN
    child.ke_method = int(ke.id) if ke is not None else 0
    child.addke_methods = additional_methods(chosen)
    if len(chosen.spi) != 4 or not any(chosen.spi):
        raise ProtocolError("Child SA proposal without a valid 4-octet SPI")
    child.spi_out = int.from_bytes(chosen.spi, "big")
    child.proposal_text = to_strongswan(chosen)


def derive_child_keys(
    sa: TaskContext,
    child: ChildSa,
    nonce_i: bytes,
    nonce_r: bytes,
    shared_secret: bytes | None,
    *,
    we_initiated: bool,
    additional: list[bytes] | None = None,
) -> None:
    """KEYMAT = prf+(SK_d, [g^ir | SK(1..n) |] Ni | Nr), i->r keys first (sec. 2.17,
    RFC 9370 sec. 2.2.4)."""
    encr_len, integ_len = esp_key_lengths(child.encr, child.encr_key_bits, child.integ)
    keys = sa.keymat.child_keys(
        nonce_i, nonce_r, shared_secret, encr_len, integ_len, additional or ()
    )
    if we_initiated:
        child.encr_key_out, child.integ_key_out = keys.encr_i2r, keys.integ_i2r
        child.encr_key_in, child.integ_key_in = keys.encr_r2i, keys.integ_r2i
    else:
        child.encr_key_out, child.integ_key_out = keys.encr_r2i, keys.integ_r2i
        child.encr_key_in, child.integ_key_in = keys.encr_i2r, keys.integ_i2r
    child.nonce_i, child.nonce_r = nonce_i, nonce_r
    child.initiator = we_initiated


def install_child(
    sa: TaskContext, child: ChildSa, now: float, *, outbound_after_delete: bool = False
) -> ChildSaEstablished:
    """Mark installed, arm its lifetime timers, and tell the data plane."""
    child.to("installed")
    child.installed_at = now
    config = child.config
    sa.children[child.child_sa_id] = child
    if config.rekey_time > 0:
        child.rekey_at = now + jittered_rekey(
            config.rekey_time, config.effective_rand_time(), sa.ctx.rng
        )
        sa.timers.set(f"child_rekey:{child.child_sa_id}", child.rekey_at)
    life = config.effective_life_time()
    if life > 0:
        child.expire_at = now + life
        sa.timers.set(f"child_expire:{child.child_sa_id}", child.expire_at)
    event = child.established_event(
        sa.ike_sa_id,
        sa.name,
        udp_encap=sa.peer.udp_encap,
        local_addr=sa.local_addr,
        remote_addr=sa.remote_addr,
    )
    old = child.rekeyed_from
    if old is not None:
        sa.emit(
            ChildSaRekeyed(
                sa.ike_sa_id,
                sa.name,
                old_child_sa_id=old.child_sa_id,
                old_spi_in=old.spi_in,
                old_spi_out=old.spi_out,
                new=event,
                outbound_after_delete=outbound_after_delete,
            )
        )
    else:
        sa.emit(event)
    return event


@dataclass
class ChildSelection:
    config: ChildConfig
    proposal: Proposal
    local_ts: list[Ts]  # ours (responder: narrowed TSr)
    remote_ts: list[Ts]  # the peer's (responder: narrowed TSi)
    transport: bool


def select_child(
    sa: TaskContext,
    payloads: list[Payload],
    *,
    with_ke: bool,
    configs: list[ChildConfig] | None = None,
) -> ChildSelection:
    """Responder: pick the child config whose selectors and proposals fit the request.

    Raises ProtocolError(TS_UNACCEPTABLE) naming both sides' selectors, or
    NoProposalChosen naming each transform type on both sides."""
    sa_payload = find(payloads, SaPayload)
    tsi = find_typed(payloads, PayloadType.TSi)
    tsr = find_typed(payloads, PayloadType.TSr)
    if sa_payload is None or tsi is None or tsr is None:
        raise ProtocolError("Child SA request without SA, TSi and TSr payloads")
    proposed_i = from_payload(tsi)
    proposed_r = from_payload(tsr)
    offered = sa.ctx.policy.filter_proposals(
        [p for p in sa_payload.proposals if int(p.protocol) in (ProtocolId.ESP, ProtocolId.AH)]
    )
    for proposal in sa_payload.proposals:
        if int(proposal.protocol) in (ProtocolId.ESP, ProtocolId.AH) and len(proposal.spi) != 4:
            raise ProtocolError("ESP/AH proposal SPI size is not 4")
    transport_requested = find_notify(payloads, NotifyType.USE_TRANSPORT_MODE) is not None
    candidates = configs if configs is not None else sa.config.children
    ts_failures: list[str] = []
    proposal_failure: NoProposalChosen | None = None
    for config in candidates:
        local, remote = configured_ts(sa, config)
        narrowed_remote = narrow(proposed_i, remote)
        narrowed_local = narrow(proposed_r, local)
        if not narrowed_remote or not narrowed_local:
            ts_failures.append(
                f"child '{config.name}' allows local {format_list(local)} / remote "
                f"{format_list(remote)}"
            )
            continue
        ours = child_proposals(config, b"\0\0\0\0", with_ke=with_ke)
        try:
            chosen = select_proposal(ours, offered, ours[0].protocol, skip_ke=not with_ke)
        except NoProposalChosen as error:
            if proposal_failure is None:
                proposal_failure = NoProposalChosen(
                    f"child '{config.name}': {error.reason}"
                    + (
                        " (some peer proposals use algorithms our policy refuses)"
                        if len(offered) != len(sa_payload.proposals)
                        else ""
                    )
                )
            continue
        return ChildSelection(
            config,
            chosen,
            narrowed_local,
            narrowed_remote,
            transport_requested and config.mode == "transport",
        )
    if proposal_failure is not None:
        raise proposal_failure
    raise ProtocolError(
        f"traffic selectors unacceptable: peer proposed TSi {format_list(proposed_i)}, "
        f"TSr {format_list(proposed_r)}; " + ("; ".join(ts_failures) or "no children configured"),
        NotifyType.TS_UNACCEPTABLE,
    )


def child_response_payloads(
    sa: TaskContext, child: ChildSa, proposal: Proposal, transport: bool
) -> tuple[list[Payload], list[Payload]]:
    """SA (with our SPI), TSi, TSr for a responder (TSi = the peer's side)."""
    ours = Proposal(
        proposal.number,
        proposal.protocol,
        child.spi_in.to_bytes(4, "big"),
        list(proposal.transforms),
    )
    payloads: list[Payload] = []
    if transport:
        payloads.append(NotifyPayload(notify_type=NotifyType.USE_TRANSPORT_MODE))
    if not child.config.tfc_padding:
        payloads.append(NotifyPayload(notify_type=NotifyType.ESP_TFC_PADDING_NOT_SUPPORTED))
    payloads.append(SaPayload(proposals=[ours]))
    return payloads, [
        to_payload(PayloadType.TSi, child.remote_ts),
        to_payload(PayloadType.TSr, child.local_ts),
    ]


class ChildRequest:
    """Initiator-side state of one Child SA negotiation (IKE_AUTH or CREATE_CHILD_SA)."""

    def __init__(self, sa: TaskContext, config: ChildConfig, *, with_ke: bool) -> None:
        self.config = config
        self.with_ke = with_ke
        self.child = ChildSa(child_sa_id=sa.ctx.new_child_sa_id(), config=config)
        self.child.mode = config.mode
        self.child.spi_in = int.from_bytes(sa.ctx.new_spi(4), "big")
        self.proposals = child_proposals(
            config, self.child.spi_in.to_bytes(4, "big"), with_ke=with_ke
        )
        self.local_ts, self.remote_ts = configured_ts(sa, config)
        self.ke: KeyExchange | None = None
        self.ke_method = pfs_group(self.proposals) if with_ke else None

    def payloads(self, sa: TaskContext) -> list[Payload]:
        out: list[Payload] = list(mode_notifies(self.config))
        out.append(SaPayload(proposals=self.proposals))
        return out

    def ts(self, sa: TaskContext) -> list[Payload]:
        if not self.local_ts or not self.remote_ts:
            raise ProtocolError(f"child '{self.config.name}' has no usable traffic selectors", None)
        return ts_payloads(sa, self.local_ts, self.remote_ts)

    def process(
        self,
        sa: TaskContext,
        payloads: list[Payload],
        nonce_i: bytes,
        nonce_r: bytes,
        shared: bytes | None,
        now: float,
    ) -> ChildSa:
        """Check the responder's choice and derive keys; raises ProtocolError."""
        sa_payload = find(payloads, SaPayload)
        tsi = find_typed(payloads, PayloadType.TSi)
        tsr = find_typed(payloads, PayloadType.TSr)
        if sa_payload is None or tsi is None or tsr is None or len(sa_payload.proposals) != 1:
            raise ProtocolError("Child SA response without one proposal, TSi and TSr")
        chosen = sa_payload.proposals[0]
        check_selected_proposal(
            self.proposals, chosen, self.proposals[0].protocol, expect_ke=self.with_ke
        )
        child = self.child
        apply_child_proposal(child, chosen)
        selected_local = from_payload(tsi)
        selected_remote = from_payload(tsr)
        # Sec. 2.9: the responder may only narrow; anything outside what we proposed is a
        # protocol violation we refuse.
        if (
            not selected_local
            or not selected_remote
            or not (
                is_subset(selected_local, self.local_ts)
                and is_subset(selected_remote, self.remote_ts)
            )
        ):
            raise ProtocolError(
                f"responder's traffic selectors TSi {format_list(selected_local)} TSr "
                f"{format_list(selected_remote)} are not a subset of ours (TSi "
                f"{format_list(self.local_ts)} TSr {format_list(self.remote_ts)})",
                NotifyType.TS_UNACCEPTABLE,
            )
        child.local_ts, child.remote_ts = selected_local, selected_remote
        transport = find_notify(payloads, NotifyType.USE_TRANSPORT_MODE) is not None
        if self.config.mode == "transport" and not transport:
            raise ProtocolError(
                "we asked for transport mode, responder did not accept it",
                NotifyType.NO_PROPOSAL_CHOSEN,
            )
        child.mode = "transport" if transport else "tunnel"
        child.tfc_padding = find_notify(payloads, NotifyType.ESP_TFC_PADDING_NOT_SUPPORTED) is None
        derive_or_defer_child_keys(sa, child, nonce_i, nonce_r, shared, we_initiated=True)
        return child


def child_failure(
    sa: TaskContext,
    config: ChildConfig,
    reason: str,
    notify: NotifyType | None,
    *,
    received: bool,
    exchange: str,
) -> None:
    sa.emit(
        NegotiationFailed(
            sa.ike_sa_id,
            sa.name,
            reason,
            notify,
            received=received,
            exchange=exchange,
            child=config.name,
        )
    )


def derive_or_defer_child_keys(
    sa: TaskContext,
    child: ChildSa,
    nonce_i: bytes,
    nonce_r: bytes,
    shared: bytes | None,
    *,
    we_initiated: bool,
) -> None:
    """Record the nonces and derive the Child SA's keys (RFC 7296 sec. 2.17), or, with RFC
    9370 additional key exchanges, keep the KE secret until IKE_FOLLOWUP_KE completes."""
    child.nonce_i, child.nonce_r = nonce_i, nonce_r
    if not child.addke_methods:
        derive_child_keys(sa, child, nonce_i, nonce_r, shared, we_initiated=we_initiated)
        return
    if shared is None:
        raise ProtocolError(
            "additional key exchanges without a KE method", NotifyType.NO_PROPOSAL_CHOSEN
        )
    child.pending_shared = shared  # keys after the IKE_FOLLOWUP_KE exchanges


def received_child_error(payloads: list[Payload]) -> tuple[str, NotifyType | None] | None:
    error = first_error(payloads)
    if error is None:
        return None
    try:
        notify = NotifyType(int(error.notify_type))
    except ValueError:
        notify = None
    return notify_name(int(error.notify_type)), notify


class ChildCreateTask(Task):
    """CREATE_CHILD_SA for an additional Child SA (sec. 1.3.1), optional PFS."""

    exchange = ExchangeType.CREATE_CHILD_SA
    name = "CREATE_CHILD_SA"

    def __init__(self, config: ChildConfig) -> None:
        self.config = config
        self.request: ChildRequest | None = None
        self.nonce = b""
        self.ke_retried = False

    def build(self, sa: TaskContext, now: float) -> list[Payload] | None:
        if not sa.established:
            return None
        if self.request is None:
            self.request = ChildRequest(sa, self.config, with_ke=True)
        request = self.request
        self.nonce = sa.ctx.rng(32)
        payloads = request.payloads(sa)
        payloads.append(NoncePayload(nonce=self.nonce))
        if request.ke_method is not None:
            request.ke = new_ke(sa, request.ke_method)
            payloads.append(KePayload(group=request.ke_method, data=request.ke.our_payload()))
        payloads += request.ts(sa)
        return payloads

    def process(self, sa: TaskContext, payloads: list[Payload], now: float) -> bool:
        assert self.request is not None
        error = received_child_error(payloads)
        if error is not None:
            name, notify = error
            if notify == NotifyType.INVALID_KE_PAYLOAD and not self.ke_retried:
                retry = retry_group(self.request.proposals, payloads)
                if retry is not None:
                    self.ke_retried = True
                    self.request.ke_method = retry
                    sa.queue_task(self, now, start=False, first=True)
                    return False
            if notify == NotifyType.TEMPORARY_FAILURE:
                sa.queue_task(self, now, start=False)  # retried after what is queued
                return False
            raise ProtocolError(f"peer refused the Child SA: {name}", notify)
        nonce_r = check_nonce_payload(payloads)
        shared = pfs_shared(self.request, payloads)
        child = self.request.process(sa, payloads, self.nonce, nonce_r, shared, now)
        if child.addke_methods:

            def finish(secrets: list[bytes], when: float) -> None:
                derive_child_keys(
                    sa, child, self.nonce, nonce_r, shared, we_initiated=True, additional=secrets
                )
                install_child(sa, child, when)

            def fail(reason: str, when: float) -> None:
                self.abort(sa, reason, when)

            start_followups(sa, child.addke_methods, payloads, finish, fail, now, owner=self)
            return False
        install_child(sa, child, now)
        return False

    def abort(self, sa: TaskContext, reason: str, now: float) -> None:
        child_failure(sa, self.config, reason, None, received=True, exchange="CREATE_CHILD_SA")


def check_nonce_payload(payloads: list[Payload]) -> bytes:
    return check_nonce(find(payloads, NoncePayload))


def retry_group(proposals: list[Proposal], payloads: list[Payload]) -> int | None:
    notify = find_notify(payloads, NotifyType.INVALID_KE_PAYLOAD)
    if notify is None or len(notify.data) != 2:
        return None
    group = int.from_bytes(notify.data, "big")
    offered = {int(t.id) for p in proposals for t in transforms_of(p, TransformType.KE)}
    return group if group in offered and group != 0 else None


def pfs_shared(request: ChildRequest, payloads: list[Payload]) -> bytes | None:
    """The PFS shared secret if the responder chose a KE method (sec. 1.3.1)."""
    ke_payload = find(payloads, KePayload)
    sa_payload = find(payloads, SaPayload)
    chosen_ke = chosen_transform(sa_payload.proposals[0], TransformType.KE) if sa_payload else None
    if chosen_ke is None or int(chosen_ke.id) == 0:
        return None
    if request.ke is None or ke_payload is None or int(ke_payload.group) != int(chosen_ke.id):
        raise ProtocolError("responder chose a KE method but sent no matching KE payload")
    if int(request.ke.method) != int(chosen_ke.id):
        raise ProtocolError("responder chose a KE method other than the one we sent")
    return request.ke.compute(bytes(ke_payload.data))


def responder_pfs(
    sa: TaskContext, selection: ChildSelection, payloads: list[Payload]
) -> tuple[bytes | None, KePayload | None]:
    """Responder side of PFS: compute with the initiator's KE if a KE method was chosen;
    INVALID_KE_PAYLOAD if its KE payload is for another group (sec. 1.3)."""
    chosen_ke = chosen_transform(selection.proposal, TransformType.KE)
    if chosen_ke is None or int(chosen_ke.id) == 0:
        return None, None
    ke_payload = find(payloads, KePayload)
    if ke_payload is None or int(ke_payload.group) != int(chosen_ke.id):
        raise ProtocolError(
            "KE payload missing or for another group than the chosen proposal",
            NotifyType.INVALID_KE_PAYLOAD,
            notify_data=int(chosen_ke.id).to_bytes(2, "big"),
        )

    ke = new_ke(sa, int(chosen_ke.id))
    shared = ke.compute(bytes(ke_payload.data))
    return shared, KePayload(group=ke_payload.group, data=ke.our_payload())


def respond_child(
    sa: TaskContext,
    payloads: list[Payload],
    nonce_i: bytes,
    nonce_r: bytes,
    now: float,
    *,
    with_ke: bool,
    configs: list[ChildConfig] | None = None,
    rekeyed_from: ChildSa | None = None,
    exchange: str = "CREATE_CHILD_SA",
) -> tuple[ChildSa, list[Payload], list[Payload], KePayload | None]:
    """Negotiate a Child SA as responder; returns (child, sa+notify payloads, ts payloads,
    our KE payload). The child is installed by the caller once the response exists."""
    selection = select_child(sa, payloads, with_ke=with_ke, configs=configs)
    shared, our_ke = (None, None)
    if with_ke:
        shared, our_ke = responder_pfs(sa, selection, payloads)
    child = ChildSa(child_sa_id=sa.ctx.new_child_sa_id(), config=selection.config)
    apply_child_proposal(child, selection.proposal)
    child.spi_in = int.from_bytes(sa.ctx.new_spi(4), "big")
    child.local_ts, child.remote_ts = selection.local_ts, selection.remote_ts
    child.mode = "transport" if selection.transport else "tunnel"
    child.tfc_padding = find_notify(payloads, NotifyType.ESP_TFC_PADDING_NOT_SUPPORTED) is None
    child.rekeyed_from = rekeyed_from
    derive_or_defer_child_keys(sa, child, nonce_i, nonce_r, shared, we_initiated=False)
    sa_payloads, ts = child_response_payloads(sa, child, selection.proposal, selection.transport)
    return child, sa_payloads, ts, our_ke


class ChildCreateResponder(Responder):
    """CREATE_CHILD_SA responder for a new Child SA (no REKEY_SA notify)."""

    def respond(self, sa: TaskContext, request: Request) -> list[Payload]:
        return respond_create_child(sa, request.payloads, request.now)


def respond_create_child(sa: TaskContext, payloads: list[Payload], now: float) -> list[Payload]:
    """The body of :class:`ChildCreateResponder`."""

    nonce_i = check_nonce(find(payloads, NoncePayload))
    nonce_r = sa.ctx.rng(32)
    try:
        child, sa_payloads, ts, our_ke = respond_child(
            sa, payloads, nonce_i, nonce_r, now, with_ke=True
        )
    except ProtocolError as error:
        if error.notify in (NotifyType.NO_PROPOSAL_CHOSEN, NotifyType.TS_UNACCEPTABLE):
            sa.emit(
                NegotiationFailed(
                    sa.ike_sa_id,
                    sa.name,
                    error.reason,
                    error.notify,
                    received=False,
                    exchange="CREATE_CHILD_SA",
                )
            )
        raise
    response = [*sa_payloads, NoncePayload(nonce=nonce_r)]
    if our_ke is not None:
        response.append(our_ke)
    if child.addke_methods:
        response.append(defer_install(sa, child, lambda when: install_child(sa, child, when), now))
    else:
        sa.after_response(lambda when: install_child(sa, child, when))
    return response + ts


def defer_install(
    sa: TaskContext, child: ChildSa, install: Callable[[float], object], now: float
) -> NotifyPayload:
    """Responder with RFC 9370 additional key exchanges: derive the keys and install once
    the last IKE_FOLLOWUP_KE has been answered; returns the ADDITIONAL_KEY_EXCHANGE notify."""

    def finish(secrets: list[bytes], when: float) -> None:
        derive_child_keys(
            sa,
            child,
            child.nonce_i,
            child.nonce_r,
            child.pending_shared,
            we_initiated=False,
            additional=secrets,
        )
        child.pending_shared = None
        install(when)

    return sa.followup_responder().register(sa, child.addke_methods, finish, now)


__all__ = [
    "ChildCreateResponder",
    "ChildCreateTask",
    "ChildRequest",
    "ChildState",
    "install_child",
    "respond_child",
    "respond_create_child",
]
