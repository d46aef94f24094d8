"""IKE and Child SA lifetimes (strongSwan's rekey_time / reauth_time / over_time /
rand_time) and liveness checks (RFC 7296 sec. 2.4), driven by the SA's TimerSet.

IKE SA: rekey at ``rekey_time - random(rand_time)``, reauthenticate at ``reauth_time -
random(rand_time)``, hard expiry ``over_time`` after the later of the two. Child SA: rekey
at ``rekey_time - random(rand_time)``, hard expiry at ``life_time``. Jitter keeps two peers
with the same config from rekeying at the same moment (fewer sec. 2.8.1 collisions).
"""

from __future__ import annotations

from ikev2.events import ChildSaExpiring
from ikev2.states import ChildState, IkeState
from ikev2.tasks.context import TaskContext
from ikev2.timers import jittered_rekey


def start_ike_timers(sa: TaskContext, now: float) -> None:
    config = sa.config
    rand = config.effective_rand_time()
    latest = 0.0
    if config.rekey_time > 0:
        at = now + jittered_rekey(config.rekey_time, rand, sa.ctx.rng)
        sa.timers.set("ike_rekey", at)
        latest = max(latest, config.rekey_time)
    if config.reauth_time > 0:
        at = now + jittered_rekey(config.reauth_time, rand, sa.ctx.rng)
        sa.timers.set("ike_reauth", at)
        latest = max(latest, config.reauth_time)
    if latest > 0:
        sa.timers.set("ike_expire", now + latest + config.effective_over_time())
    schedule_dpd(sa, now)


def schedule_dpd(sa: TaskContext, now: float) -> None:
    if sa.config.dpd_delay > 0:
        sa.timers.set("dpd", max(now, sa.last_peer_activity) + sa.config.dpd_delay)


def on_timer(sa: TaskContext, name: str, now: float) -> None:
    if name == "ike_rekey":
        if sa.state is IkeState.ESTABLISHED:
            sa.rekey_ike(now)
        elif sa.state is IkeState.REKEYING:
            sa.timers.set("ike_rekey", now + 10.0)
    elif name == "ike_reauth":
        # Make-before-break reauthentication (sec. 2.8.3) when the engine can create the
        # new IKE SA; an IKE SA on its own deletes instead.
        if sa.established and not sa.reauthenticate(now):
            sa.delete_ike(now, "reauthentication time reached")
    elif name == "ike_expire":
        sa.delete_ike(now, "IKE SA lifetime expired")
        # Do not wait for the peer's answer longer than one retransmission series.
    elif name == "rekeyed_linger":
        # The peer never deleted the IKE SA it replaced: drop it ourselves.
        if sa.state is IkeState.REKEYED:
            sa.destroy(now, "rekeyed")
    elif name == "dpd":
        if not sa.established:
            return
        idle = now - sa.last_peer_activity
        if idle >= sa.config.dpd_delay:
            sa.send_liveness(now)
            sa.timers.set("dpd", now + sa.config.dpd_delay)
        else:
            schedule_dpd(sa, now)
    elif name.startswith("child_rekey:"):
        child = sa.children.get(int(name.split(":", 1)[1]))
        if child is not None and child.state is ChildState.INSTALLED and sa.established:
            sa.emit(
                ChildSaExpiring(sa.ike_sa_id, sa.name, child.config.name, child.child_sa_id, "time")
            )
            sa.rekey_child(child.child_sa_id, now)
        elif child is not None and child.state is ChildState.INSTALLED:
            sa.timers.set(name, now + 10.0)
    elif name.startswith("child_expire:"):
        child = sa.children.get(int(name.split(":", 1)[1]))
        if child is None or not child.alive:
            return
        if sa.established:
            sa.delete_child(child.child_sa_id, now)
        else:
            sa.child_gone(child, "lifetime expired")
