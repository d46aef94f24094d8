"""IKE SA rekeying with CREATE_CHILD_SA (RFC 7296 sec. 1.3.2, 2.18) and its collisions
(sec. 2.8.1, 2.8.2).

The new IKE SA gets new SPIs, nonces and a fresh key exchange; SKEYSEED = prf(SK_d (old),
g^ir (new) | Ni | Nr). Whoever initiated the rekey is the new SA's original initiator.
Child SAs move to the new IKE SA unchanged; the rekey initiator deletes the old IKE SA.

Collision: both ends rekey at once; each answers the other, two new IKE SAs exist; the one
created with the lowest of the four nonces is redundant and its creator deletes it, the
winner deletes the old one. A rekey request while we are creating, rekeying or deleting a
Child SA, or after the SA was replaced, gets TEMPORARY_FAILURE (sec. 2.25.2).
"""

from __future__ import annotations

from ikev2.crypto.keyexchange import KeyExchange
from ikev2.enums import ExchangeType, NotifyType, ProtocolId, TransformType
from ikev2.errors import ProtocolError
from ikev2.events import IkeSaRekeyed, NegotiationFailed
from ikev2.keymat import additional_methods
from ikev2.payloads import KePayload, NoncePayload, Proposal, SaPayload
from ikev2.proposals import (
    NoProposalChosen,
    check_selected_proposal,
    chosen_transform,
    select_proposal,
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
    first_error,
    new_ke,
    notify_name,
)
from ikev2.tasks.child_create import ChildCreateTask
from ikev2.tasks.child_rekey import ChildRekeyTask
from ikev2.tasks.followup_ke import FollowupKeTask, start_followups
from ikev2.tasks.ike_delete import ChildDeleteTask, IkeDeleteTask
from ikev2.tasks.ike_init import _prefer_peer_group, ike_proposals
from ikev2.tasks.lifetimes import start_ike_timers
from ikev2.timers import random_fraction

REKEYED_LINGER = 60.0  # how long a replaced IKE SA waits for the peer's Delete


def _derive(
    old: TaskContext,
    new: TaskContext,
    chosen: Proposal,
    shared: bytes,
    nonce_i: bytes,
    nonce_r: bytes,
    additional: list[bytes] | None = None,
) -> None:
    """SKEYSEED = prf(SK_d (old), g^ir (new) | SK(1..n) | Ni | Nr), sec. 2.18 / RFC 9370."""
    new.keymat.derive_rekeyed(
        old.keymat, chosen, shared, nonce_i, nonce_r, new.spi_i, new.spi_r, additional or ()
    )


def adopt(old: TaskContext, new: TaskContext, now: float) -> None:
    """Move the Child SAs (and their timers) to ``new`` and report the rekey."""
    new.children.update(old.children)
    old.children.clear()
    for name in old.timers.names():
        if name.startswith("child_"):
            new.timers.set(name, old.timers.get(name))
            old.timers.cancel(name)
    for name in ("ike_rekey", "ike_reauth", "ike_expire", "dpd"):
        old.timers.cancel(name)
    old.timers.set("rekeyed_linger", now + REKEYED_LINGER)
    old.replaced_by(new)
    new.established_at = now
    start_ike_timers(new, now)
    keymat = new.keymat
    # Keys exist once derived (``_derive`` ran before any adopt).
    assert keymat.encr is not None and keymat.prf_id is not None
    old.emit(
        IkeSaRekeyed(
            new.ike_sa_id,
            new.name,
            old_ike_sa_id=old.ike_sa_id,
            spi_i=int.from_bytes(new.spi_i, "big"),
            spi_r=int.from_bytes(new.spi_r, "big"),
            old_spi_i=int.from_bytes(old.spi_i, "big"),
            old_spi_r=int.from_bytes(old.spi_r, "big"),
            encr=keymat.encr,
            encr_key_bits=keymat.encr_key_bits,
            integ=keymat.integ,
            prf=keymat.prf_id,
            ke=int(keymat.ke_method or 0),
        )
    )


class IkeRekeyTask(Task):
    exchange = ExchangeType.CREATE_CHILD_SA
    name = "CREATE_CHILD_SA(rekey IKE)"

    def __init__(self) -> None:
        self.spi = b""
        self.nonce = b""
        self.ke: KeyExchange | None = None
        self.ke_method: int | None = None
        self.proposals: list[Proposal] = []
        #: The new IKE SA of the peer's rekey we answered while ours was in flight (sec.
        #: 2.8.2); settled when our response arrives.
        self.collision: TaskContext | None = None

    def build(self, sa: TaskContext, now: float) -> list[Payload] | None:
        if sa.state is not IkeState.ESTABLISHED:
            return None
        sa.to("rekey_start")
        self.collision = None
        self.spi = sa.ctx.new_spi(8)
        self.proposals = ike_proposals(sa)
        for proposal in self.proposals:
            proposal.spi = self.spi
        if self.ke_method is None:
            self.ke_method = int(sa.keymat.ke_method or 0)
        self.ke = new_ke(sa, self.ke_method)
        self.nonce = sa.ctx.rng(32)
        return [
            SaPayload(proposals=self.proposals),
            NoncePayload(nonce=self.nonce),
            KePayload(group=self.ke_method, data=self.ke.our_payload()),
        ]

    def _retry_later(self, sa: TaskContext, now: float) -> None:
        if sa.state is IkeState.REKEYING:
            sa.to("rekey_failed")
        sa.timers.set("ike_rekey", now + 2.0 + 6.0 * random_fraction(sa.ctx.rng))

    def process(self, sa: TaskContext, payloads: list[Payload], now: float) -> bool:
        assert self.ke is not None
        collision = self.collision
        error = first_error(payloads)
        if error is not None:
            notify = int(error.notify_type)
            if collision is not None and collision.alive:
                # The peer refused ours but we answered its rekey: that one stands.
                sa.to("rekeyed_by_peer")
                adopt(sa, collision, now)
                return False
            if notify == NotifyType.TEMPORARY_FAILURE:
                self._retry_later(sa, now)
                return False
            if notify == NotifyType.INVALID_KE_PAYLOAD and len(error.data) == 2:
                group = int.from_bytes(error.data, "big")
                offered = {
                    int(t.id)
                    for p in self.proposals
                    for t in p.transforms
                    if int(t.type) == TransformType.KE
                }
                if group in offered and group != self.ke_method:
                    self.ke_method = group
                    sa.to("rekey_failed")
                    sa.queue_task(self, now, start=False, first=True)
                    return False
            sa.to("rekey_failed")
            sa.emit(
                NegotiationFailed(
                    sa.ike_sa_id,
                    sa.name,
                    f"peer refused to rekey the IKE SA: {notify_name(notify)}",
                    NotifyType(notify) if notify in NotifyType._value2member_map_ else None,
                    received=True,
                    exchange="CREATE_CHILD_SA",
                )
            )
            return False
        sa_payload = find(payloads, SaPayload)
        ke_payload = find(payloads, KePayload)
        if sa_payload is None or ke_payload is None or len(sa_payload.proposals) != 1:
            raise ProtocolError("IKE rekey response without one proposal and a KE payload")
        chosen = sa_payload.proposals[0]
        check_selected_proposal(self.proposals, chosen, ProtocolId.IKE)
        if len(chosen.spi) != 8 or not any(chosen.spi):
            raise ProtocolError("IKE rekey response without an 8-octet SPI")
        ke_chosen = chosen_transform(chosen, TransformType.KE)
        if ke_chosen is None or int(ke_chosen.id) != self.ke_method:
            raise ProtocolError("IKE rekey response with another KE method than ours")
        nonce_r = check_nonce(find(payloads, NoncePayload))
        shared = self.ke.compute(bytes(ke_payload.data))
        methods = additional_methods(chosen)
        if methods:

            def finish(secrets: list[bytes], when: float) -> None:
                self._complete(sa, chosen, shared, nonce_r, secrets, when)

            def fail(reason: str, when: float) -> None:
                if sa.state is IkeState.REKEYING:
                    sa.to("rekey_failed")

            start_followups(sa, methods, payloads, finish, fail, now, owner=self)
            return False
        self._complete(sa, chosen, shared, nonce_r, [], now)
        return False

    def _complete(
        self,
        sa: TaskContext,
        chosen: Proposal,
        shared: bytes,
        nonce_r: bytes,
        additional: list[bytes],
        now: float,
    ) -> None:
        if sa.state is not IkeState.REKEYING:
            return  # deleted (or replaced by the peer) while the exchanges ran
        collision = self.collision
        new = sa.new_rekeyed_sa(initiator=True, spi_i=self.spi, spi_r=bytes(chosen.spi))
        _derive(sa, new, chosen, shared, self.nonce, nonce_r, additional)
        new.to("created_by_rekey")
        new.register()
        lost = (
            collision is not None
            and collision.alive
            and min(self.nonce, nonce_r) < min(collision.keymat.nonce_i, collision.keymat.nonce_r)
        )
        if lost:
            # Lost (sec. 2.8.2): ours is redundant, we delete it; the peer's new SA takes
            # the Child SAs and the peer deletes the old one.
            sa.to("rekeyed_by_peer")
            assert collision is not None
            adopt(sa, collision, now)
            new.delete_ike(now, "redundant after IKE rekey collision")
            return
        # No collision, or won: the peer deletes its redundant SA (``collision``).
        sa.to("rekey_done")
        adopt(sa, new, now)
        sa.queue_task(IkeDeleteTask("rekeyed"), now, start=False, first=True)
        return

    def abort(self, sa: TaskContext, reason: str, now: float) -> None:
        if sa.state is IkeState.REKEYING:
            sa.to("rekey_failed")


def our_rekey(sa: TaskContext) -> IkeRekeyTask | None:
    """Our IKE rekey in flight (its CREATE_CHILD_SA or one of its IKE_FOLLOWUP_KE)."""
    task = sa.active_task
    if isinstance(task, FollowupKeTask):
        task = task.owner
    return task if isinstance(task, IkeRekeyTask) else None


class IkeRekeyResponder(Responder):
    """CREATE_CHILD_SA with an IKE proposal: the peer rekeys the IKE SA (sec. 1.3.2)."""

    def respond(self, sa: TaskContext, request: Request) -> list[Payload]:
        return respond_ike_rekey(sa, request.payloads, request.now)


def respond_ike_rekey(sa: TaskContext, payloads: list[Payload], now: float) -> list[Payload]:
    if sa.state not in (IkeState.ESTABLISHED, IkeState.REKEYING):
        raise ProtocolError(
            "IKE SA is not established or already rekeyed", NotifyType.TEMPORARY_FAILURE
        )
    if isinstance(
        sa.active_task, ChildCreateTask | ChildRekeyTask | ChildDeleteTask | FollowupKeTask
    ):
        raise ProtocolError(
            "a Child SA exchange of ours is in progress", NotifyType.TEMPORARY_FAILURE
        )
    sa_payload = find(payloads, SaPayload)
    ke_payload = find(payloads, KePayload)
    if sa_payload is None or ke_payload is None:
        raise ProtocolError("IKE rekey request without SA or KE payload")
    for proposal in sa_payload.proposals:
        if len(proposal.spi) != 8 or not any(proposal.spi):
            raise ProtocolError("IKE rekey proposal without an 8-octet SPI")
    nonce_i = check_nonce(find(payloads, NoncePayload))
    offered = sa.ctx.policy.filter_proposals(sa_payload.proposals)
    ours = ike_proposals(sa)
    try:
        try:
            chosen = select_proposal(
                _prefer_peer_group(ours, int(ke_payload.group)), offered, ProtocolId.IKE
            )
        except NoProposalChosen:
            chosen = select_proposal(ours, offered, ProtocolId.IKE)
    except NoProposalChosen as error:
        sa.emit(
            NegotiationFailed(
                sa.ike_sa_id,
                sa.name,
                f"IKE rekey: {error.reason}",
                NotifyType.NO_PROPOSAL_CHOSEN,
                received=False,
                exchange="CREATE_CHILD_SA",
            )
        )
        raise
    ke_chosen = chosen_transform(chosen, TransformType.KE)
    if ke_chosen is None or int(ke_payload.group) != int(ke_chosen.id):
        group = int(ke_chosen.id) if ke_chosen is not None else 0
        raise ProtocolError(
            "IKE rekey KE payload for another group",
            NotifyType.INVALID_KE_PAYLOAD,
            notify_data=group.to_bytes(2, "big"),
        )
    if sa.state is IkeState.REKEYING and additional_methods(chosen):
        # A collision with additional key exchanges cannot be settled by comparing nonces
        # before both chains of IKE_FOLLOWUP_KE are done: refuse, both sides retry after a
        # random delay (as strongSwan does, RFC 9370 sec. 2.2.4).
        raise ProtocolError(
            "IKE rekey collision with additional key exchanges", NotifyType.TEMPORARY_FAILURE
        )
    ke = new_ke(sa, int(ke_payload.group))
    shared = ke.compute(bytes(ke_payload.data))
    nonce_r = sa.ctx.rng(32)
    spi_r = sa.ctx.new_spi(8)
    response_proposal = Proposal(chosen.number, chosen.protocol, spi_r, list(chosen.transforms))

    def switch(additional: list[bytes], when: float) -> None:
        if sa.state not in (IkeState.ESTABLISHED, IkeState.REKEYING):
            return  # deleted or replaced meanwhile
        new = sa.new_rekeyed_sa(initiator=False, spi_i=bytes(chosen.spi), spi_r=spi_r)
        _derive(sa, new, chosen, shared, nonce_i, nonce_r, additional)
        new.to("created_by_rekey")
        new.register()
        if sa.state is IkeState.REKEYING:
            ours = our_rekey(sa)
            if ours is not None:
                ours.collision = new  # decided when our own rekey response arrives
            return
        sa.to("rekeyed_by_peer")
        adopt(sa, new, when)

    response: list[Payload] = [
        SaPayload(proposals=[response_proposal]),
        NoncePayload(nonce=nonce_r),
        KePayload(group=ke_payload.group, data=ke.our_payload()),
    ]
    methods = additional_methods(chosen)
    if methods:
        response.append(sa.followup_responder().register(sa, methods, switch, now))
    else:
        sa.after_response(lambda when: switch([], when))
    return response
