"""The placement policies over a member view (aioipsec/cluster/placement.py)."""

from __future__ import annotations

from collections import Counter

from aioipsec.cluster.placement import (
    MemberState,
    Placement,
    candidates,
    identity_hash,
    least_loaded,
    round_robin,
)

ME, B, C = "192.0.2.1", "192.0.2.2", "192.0.2.3"


def view(*states: MemberState) -> dict[str, MemberState]:
    return {s.member: s for s in states}


def test_never_to_a_draining_full_or_own_member() -> None:
    members = view(
        MemberState(ME),
        MemberState(B, draining=True),
        MemberState(C, ike_sas=10, max_ike_sas=10),
    )
    assert candidates(members, ME) == []
    assert least_loaded(members, ME, draining=True) is None
    assert Placement(ME, "least-loaded", members, draining=True).at_init(("x", 500), None) is None


def test_least_loaded_only_when_lighter() -> None:
    members = view(MemberState(ME, ike_sas=3), MemberState(B, ike_sas=5), MemberState(C, ike_sas=2))
    assert least_loaded(members, ME, draining=False) == C
    members[C] = MemberState(C, ike_sas=3, child_sas=4)
    members[ME] = MemberState(ME, ike_sas=3, child_sas=4)
    assert least_loaded(members, ME, draining=False) is None  # a tie stays here
    assert least_loaded(members, ME, draining=True) == C  # draining: anyone else


def test_dead_member_is_not_in_the_view() -> None:
    """A member whose heartbeat expired is absent from the view: never chosen."""
    members = view(MemberState(ME, ike_sas=9), MemberState(B, ike_sas=1))
    assert least_loaded(members, ME, draining=False) == B
    del members[B]
    assert least_loaded(members, ME, draining=False) is None


def test_round_robin_cycles_through_live_members_including_this_one() -> None:
    members = view(MemberState(ME), MemberState(B), MemberState(C, draining=True))
    answers = [round_robin(members, ME, n) for n in range(4)]
    assert answers == [None, B, None, B]  # ME, B, ME, B: C is draining
    placement = Placement(ME, "round-robin", members)
    assert [placement.at_init(("x", 500), None) for _ in range(4)] == answers


def test_redirected_client_is_not_placed_again() -> None:
    members = view(MemberState(ME, ike_sas=9), MemberState(B, ike_sas=0))
    placement = Placement(ME, "least-loaded", members)
    assert placement.at_init(("x", 500), None) == B
    assert placement.at_init(("x", 500), "192.0.2.9") is None
    placement.usable = False  # the store is down: serve here
    assert placement.at_init(("x", 500), None) is None


def test_identity_hash_is_stable_and_moves_only_the_leavers_identities() -> None:
    identities = [f"user{n}@example.net" for n in range(300)]
    three = view(MemberState(ME), MemberState(B), MemberState(C))
    home = {i: identity_hash(three, ME, i) or ME for i in identities}
    assert set(Counter(home.values())) == {ME, B, C}
    assert {i: identity_hash(three, ME, i) or ME for i in identities} == home
    two = view(MemberState(ME), MemberState(B))  # C died
    moved = [i for i in identities if (identity_hash(two, ME, i) or ME) != home[i]]
    assert moved and all(home[i] == C for i in moved)
    # Asked on another member, the answer names the same home.
    assert all((identity_hash(three, B, i) or B) == home[i] for i in identities)


def test_identity_hash_placement_at_auth_only() -> None:
    members = view(MemberState(ME), MemberState(B), MemberState(C))
    placement = Placement(ME, "identity-hash", members)
    assert placement.at_init(("x", 500), None) is None
    targets = {placement.at_auth(f"u{n}", ("x", 500)) for n in range(50)}
    assert targets == {None, B, C}
    placement.draining = True
    assert placement.at_auth("u1", ("x", 500)) is None


def test_record_round_trip() -> None:
    state = MemberState(ME, ike_sas=4, child_sas=7, cpu=0.25, draining=True, max_ike_sas=9)
    assert MemberState.from_record(state.to_record()) == state


def test_drain_spreads_over_a_stale_view() -> None:
    members = view(MemberState(ME, ike_sas=6), MemberState(B, ike_sas=7), MemberState(C, ike_sas=6))
    placement = Placement(ME, "least-loaded", members, draining=True)
    targets = Counter(placement.drain_target(None) for _ in range(7))
    assert targets == {C: 4, B: 3}  # 6+4 and 7+3, not 13 and 7
    assert placement.drain_target(B) == B  # --to wins
