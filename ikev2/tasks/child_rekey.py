"""Child SA rekeying (RFC 7296 sec. 1.3.3, 2.8) with make-before-break and collisions.

Make-before-break: the new Child SA is installed (``ChildSaRekeyed``) before the old one is
deleted; the old inbound SA keeps working until its ``ChildSaDeleted``, so the data plane
loses nothing. The initiator of the rekey deletes the old SA (sec. 2.8).

Collisions (sec. 2.8.1): both ends rekey the same Child SA at once. Each answers the
other's request, so two new SAs exist; "the SA created with the lowest of the four nonces"
is redundant and is deleted by the end that created it (the initiator of that exchange);
the winner deletes the old SA. A rekey request for a Child SA we already replaced or are
deleting gets TEMPORARY_FAILURE, one for an unknown SPI CHILD_SA_NOT_FOUND (sec. 2.25).
"""

from __future__ import annotations

from ikev2.child import ChildSa
from ikev2.enums import ExchangeType, NotifyType, ProtocolId
from ikev2.errors import ProtocolError
from ikev2.payloads import KePayload, NoncePayload, NotifyPayload
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
    new_ke,
)
from ikev2.tasks.child_create import (
    ChildRequest,
    check_nonce_payload,
    child_failure,
    defer_install,
    derive_child_keys,
    install_child,
    pfs_shared,
    received_child_error,
    respond_child,
    retry_group,
)
from ikev2.tasks.followup_ke import start_followups
from ikev2.tasks.ike_delete import ChildDeleteTask, delete_spis_task
from ikev2.timers import random_fraction

TEMPORARY_FAILURE_RETRY = (2.0, 8.0)  # seconds, a random delay before retrying (sec. 2.25)


class ChildRekeyTask(Task):
    exchange = ExchangeType.CREATE_CHILD_SA
    name = "CREATE_CHILD_SA(rekey Child)"

    def __init__(self, old: ChildSa) -> None:
        self.old = old
        self.request: ChildRequest | None = None
        self.nonce = b""
        self.ke_retried = False

    def build(self, sa: TaskContext, now: float) -> list[Payload] | None:
        old = self.old
        if old.state is not ChildState.INSTALLED or old.child_sa_id not in sa.children:
            return None  # deleted or already rekeyed by the peer meanwhile
        if not sa.established:
            return None
        old.to("rekey_start")
        if self.request is None:
            self.request = ChildRequest(sa, old.config, with_ke=True)
            # Sec. 2.8: the new SA carries the same traffic as the old one.
            self.request.local_ts = list(old.local_ts)
            self.request.remote_ts = list(old.remote_ts)
        request = self.request
        self.nonce = sa.ctx.rng(32)
        payloads: list[Payload] = [
            NotifyPayload(
                notify_type=NotifyType.REKEY_SA,
                protocol=old.protocol,
                spi=old.spi_in.to_bytes(4, "big"),
            )
        ]
        payloads += request.payloads(sa)
        payloads.append(NoncePayload(nonce=self.nonce))
        if request.ke_method is not None:
            request.ke = new_ke(sa, request.ke_method)
            payloads.append(KePayload(group=request.ke_method, data=request.ke.our_payload()))
        payloads += request.ts(sa)
        return payloads

    def _give_up(self, sa: TaskContext) -> None:
        if self.old.state is ChildState.REKEYING:
            self.old.to("rekey_failed")

    def process(self, sa: TaskContext, payloads: list[Payload], now: float) -> bool:
        assert self.request is not None
        old = self.old
        error = received_child_error(payloads)
        if error is not None:
            name, notify = error
            self._give_up(sa)
            if not old.alive:
                return False  # a Delete crossed our rekey: nothing left to rekey
            if notify == NotifyType.TEMPORARY_FAILURE:
                if old.peer_rekey is not None and old.peer_rekey.alive:
                    # The peer rekeyed it and refused ours: its new SA stands (sec. 2.8.1).
                    old.successor = old.peer_rekey
                    old.to("rekeyed_by_peer")
                    return False
                low, high = TEMPORARY_FAILURE_RETRY
                delay = low + (high - low) * random_fraction(sa.ctx.rng)
                sa.timers.set(f"child_rekey:{old.child_sa_id}", now + delay)
                return False
            if notify == NotifyType.INVALID_KE_PAYLOAD and not self.ke_retried:
                group = retry_group(self.request.proposals, payloads)
                if group is not None:
                    self.ke_retried = True
                    self.request.ke_method = group
                    sa.queue_task(self, now, start=False, first=True)
                    return False
            if notify == NotifyType.CHILD_SA_NOT_FOUND:
                sa.child_gone(old, "peer does not know it any more (CHILD_SA_NOT_FOUND)")
                return False
            child_failure(
                sa,
                old.config,
                f"peer refused to rekey Child SA {old.describe()}: {name}",
                notify,
                received=True,
                exchange="CREATE_CHILD_SA",
            )
            return False

        nonce_r = check_nonce_payload(payloads)
        shared = pfs_shared(self.request, payloads)
        new = self.request.process(sa, payloads, self.nonce, nonce_r, shared, now)
        if new.addke_methods:

            def finish(secrets: list[bytes], when: float) -> None:
                derive_child_keys(
                    sa, new, self.nonce, nonce_r, shared, we_initiated=True, additional=secrets
                )
                self._complete(sa, new, nonce_r, when)

            def fail(reason: str, when: float) -> None:
                self._give_up(sa)

            start_followups(sa, new.addke_methods, payloads, finish, fail, now, owner=self)
            return False
        self._complete(sa, new, nonce_r, now)
        return False

    def _complete(self, sa: TaskContext, new: ChildSa, nonce_r: bytes, now: float) -> None:
        """Install the new SA and delete the old one, or settle a collision (sec. 2.8.1)."""
        old = self.old
        if not old.alive:
            # The peer deleted the old SA while our rekey was in flight: keep the new one
            # as an ordinary Child SA.
            install_child(sa, new, now)
            return
        peer_new = old.peer_rekey
        if peer_new is not None and peer_new.alive:
            ours_lowest = min(self.nonce, nonce_r)
            if ours_lowest < peer_new.lowest_nonce:
                # We lost (sec. 2.8.1): our new SA is redundant; we created it, we delete
                # it, and the peer deletes the old one. It is never installed here: the
                # peer answered our request, so it only receives on it (it sends on the
                # old SA until that is deleted, then on its own new one).
                old.successor = peer_new
                old.to("rekeyed_by_peer")
                sa.queue_task(
                    delete_spis_task([new.spi_in.to_bytes(4, "big")]),
                    now,
                    start=False,
                    first=True,
                )
                return
            # We won: our SA replaces the old one; the peer deletes its redundant one.
        new.rekeyed_from = old
        install_child(sa, new, now)
        old.successor = new
        old.to("rekey_done")
        sa.queue_task(ChildDeleteTask(old, "rekeyed"), now, start=False, first=True)
        return

    def abort(self, sa: TaskContext, reason: str, now: float) -> None:
        self._give_up(sa)


class ChildRekeyResponder(Responder):
    """CREATE_CHILD_SA with REKEY_SA: the peer rekeys one of our Child SAs (sec. 1.3.3)."""

    def respond(self, sa: TaskContext, request: Request) -> list[Payload]:
        rekey = find_notify(request.payloads, NotifyType.REKEY_SA)
        assert rekey is not None  # routed here because it is there
        return respond_child_rekey(sa, request.payloads, rekey, request.now)


def respond_child_rekey(
    sa: TaskContext, payloads: list[Payload], rekey: NotifyPayload, now: float
) -> list[Payload]:
    protocol = int(rekey.protocol)
    if protocol not in (ProtocolId.ESP, ProtocolId.AH):
        # libreswan CVE-2023-38710: protocol 0/1 in REKEY_SA must not reach any lookup.
        raise ProtocolError(f"REKEY_SA for protocol {protocol}", NotifyType.INVALID_SYNTAX)
    if len(rekey.spi) != 4:
        raise ProtocolError("REKEY_SA with an SPI that is not 4 octets", NotifyType.INVALID_SYNTAX)
    spi = int.from_bytes(rekey.spi, "big")
    old = sa.find_child_by_spi(spi, outbound=True, protocol=ProtocolId(protocol))
    if old is None:
        raise ProtocolError(
            f"REKEY_SA for unknown Child SA {spi:08x}", NotifyType.CHILD_SA_NOT_FOUND
        )
    if old.state in (ChildState.REKEYED, ChildState.DELETING, ChildState.CREATING):
        raise ProtocolError(
            f"Child SA {old.describe()} is already being replaced or deleted",
            NotifyType.TEMPORARY_FAILURE,
        )
    nonce_i = check_nonce(find(payloads, NoncePayload))
    nonce_r = sa.ctx.rng(32)
    new, sa_payloads, ts, our_ke = respond_child(
        sa, payloads, nonce_i, nonce_r, now, with_ke=True, configs=[old.config], rekeyed_from=old
    )
    new.initiator = False
    if new.addke_methods and old.state is ChildState.REKEYING:
        # See ike_rekey: collisions with additional key exchanges are refused and retried.
        raise ProtocolError(
            "Child rekey collision with additional key exchanges", NotifyType.TEMPORARY_FAILURE
        )

    def install(when: float) -> None:
        install_child(sa, new, when, outbound_after_delete=True)
        if old.state is ChildState.REKEYING:
            old.peer_rekey = new  # a collision: decided when our own rekey completes
        elif old.state is ChildState.INSTALLED:
            old.successor = new
            old.to("rekeyed_by_peer")

    response = [*sa_payloads, NoncePayload(nonce=nonce_r)]
    if our_ke is not None:
        response.append(our_ke)
    if new.addke_methods:
        response.append(defer_install(sa, new, install, now))
    else:
        sa.after_response(install)
    return response + ts
