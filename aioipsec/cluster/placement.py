"""Placement: which member a new client goes to (docs/cluster.md). Pure functions over a
view of the members; the engine asks synchronously (``ikev2.redirects.RedirectPlacement``),
so the view is whatever the store last published (``aioipsec.cluster.store``).

A client is never sent to a member that is draining, dead (its heartbeat expired: it is
not in the view), or full (``max_ike_sas``), nor back to the member asking. When no other
member qualifies the answer is None: serve the client here (a cluster that cannot place
a client must not turn it away).

* ``none``: never redirect (a draining member still sends new clients elsewhere).
* ``round-robin``: each new IKE_SA_INIT goes to the next live member in name order,
  this one included (then it stays here).
* ``least-loaded``: to the member with the fewest IKE SAs (Child SAs, then CPU, break
  ties), when it has fewer than this member; decided at IKE_SA_INIT.
* ``identity-hash``: decided at IKE_AUTH from the authenticated identity, by rendezvous
  (highest random weight) hashing, so an identity always lands on the same member while
  the membership is the same, and only the identities of a member that leaves move.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class MemberState:
    """What one member publishes (``aioipsec.cluster.store``)."""

    member: str  # its address or FQDN, as clients reach it
    ike_sas: int = 0
    child_sas: int = 0
    cpu: float = 0.0  # share of one CPU this process used since the last heartbeat
    draining: bool = False
    max_ike_sas: int = 0  # 0: no limit

    @property
    def full(self) -> bool:
        return self.max_ike_sas > 0 and self.ike_sas >= self.max_ike_sas

    def to_record(self) -> dict[str, object]:
        return {
            "member": self.member,
            "ike_sas": self.ike_sas,
            "child_sas": self.child_sas,
            "cpu": round(self.cpu, 3),
            "draining": self.draining,
            "max_ike_sas": self.max_ike_sas,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> MemberState:
        """From the JSON a member published; KeyError / ValueError / TypeError if it is
        not such a record."""
        return cls(
            member=str(record["member"]),
            ike_sas=int(record.get("ike_sas", 0)),
            child_sas=int(record.get("child_sas", 0)),
            cpu=float(record.get("cpu", 0.0)),
            draining=bool(record.get("draining", False)),
            max_ike_sas=int(record.get("max_ike_sas", 0)),
        )


def candidates(view: dict[str, MemberState], me: str) -> list[MemberState]:
    """Members a client may be sent to: alive (in the view), not draining, not full, not
    this member; in name order."""
    return [
        state
        for name, state in sorted(view.items())
        if name != me and not state.draining and not state.full
    ]


def least_loaded(
    view: dict[str, MemberState], me: str, *, draining: bool, sent: dict[str, int] | None = None
) -> str | None:
    """The least-loaded other member when it is less loaded than this one (or whenever
    this one is draining or full). ``sent``: clients sent to each member since the view
    was read (they are not in its published load yet)."""
    others = candidates(view, me)
    if not others:
        return None
    sent = sent or {}
    best = min(
        others, key=lambda s: (s.ike_sas + sent.get(s.member, 0), s.child_sas, s.cpu, s.member)
    )
    mine = view.get(me)
    if draining or mine is None or mine.full:
        return best.member
    if (best.ike_sas, best.child_sas) < (mine.ike_sas, mine.child_sas):
        return best.member
    return None


def round_robin(view: dict[str, MemberState], me: str, counter: int) -> str | None:
    """The ``counter``-th live member (this one included, then None: serve here)."""
    members = sorted(name for name, state in view.items() if not state.draining and not state.full)
    if me not in members:
        members = sorted([*members, me])
    chosen = members[counter % len(members)]
    return None if chosen == me else chosen


def identity_hash(view: dict[str, MemberState], me: str, identity: str) -> str | None:
    """Rendezvous hashing of ``identity`` over the live, non-draining, non-full members
    (this one included unless it is draining)."""
    pool = [name for name, state in view.items() if not state.draining and not state.full]
    mine = view.get(me)
    if mine is not None and not mine.draining and me not in pool:
        pool.append(me)  # full: still the home of the identities hashed here
    if not pool:
        return None

    def weight(member: str) -> bytes:
        return hashlib.sha256(f"{member}\0{identity}".encode()).digest()

    chosen = max(pool, key=weight)
    return None if chosen == me else chosen


@dataclass
class Placement:
    """The policy over a changing view: what ``ikev2.redirects.RedirectPlacement`` asks.
    ``view`` is replaced by the store after every heartbeat; ``usable`` is False while the
    store is unreachable (then nobody is redirected: new clients are served here)."""

    me: str
    policy: str
    view: dict[str, MemberState]
    draining: bool = False
    usable: bool = True
    _counter: int = 0
    # Clients redirected since the view was last read (the runtime clears it then): a
    # drain spreads its clients instead of sending all of them to one stale minimum.
    sent: dict[str, int] = field(default_factory=dict)

    def at_init(self, remote_addr: tuple[str, int], redirected_from: str | None) -> str | None:
        if not self.usable:
            return None
        if self.draining:
            return least_loaded(self.view, self.me, draining=True)
        if redirected_from is not None:
            return None  # placed once already: a stale view must not bounce it on
        if self.policy == "least-loaded":
            return least_loaded(self.view, self.me, draining=False)
        if self.policy == "round-robin":
            self._counter += 1
            return round_robin(self.view, self.me, self._counter - 1)
        return None

    def at_auth(self, remote_id: str, remote_addr: tuple[str, int]) -> str | None:
        if not self.usable or self.policy != "identity-hash" or self.draining:
            return None
        return identity_hash(self.view, self.me, remote_id)

    def drain_target(self, requested: str | None) -> str | None:
        """Where a drained client goes: ``requested`` (``drain --to``), else the least
        loaded other member."""
        if requested is not None:
            return requested
        if not self.usable:
            return None
        target = least_loaded(self.view, self.me, draining=True, sent=self.sent)
        if target is not None:
            self.sent[target] = self.sent.get(target, 0) + 1
        return target
