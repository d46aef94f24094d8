"""aioipsec.gcpolicy: what it freezes, and that released SAs' cycles are collected again."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from aioipsec import gcpolicy
from aioipsec.gcpolicy import CollectorPolicy


@pytest.fixture
def policy() -> Iterator[CollectorPolicy]:
    thresholds = gc.get_threshold()
    live = {"n": 0}
    collector = CollectorPolicy(live=lambda: live["n"])
    collector.start(None)
    try:
        yield collector
    finally:
        collector.stop()
        gc.unfreeze()
        assert gc.get_threshold() == thresholds


class Node:
    """An object in a reference cycle (as an SA and its tasks are)."""

    def __init__(self) -> None:
        self.me = self


def test_start_freezes_the_heap_and_full_passes_freeze_their_survivors(
    policy: CollectorPolicy,
) -> None:
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold()[2] == gcpolicy.OLD_PASS_EVERY
    kept = [Node() for _ in range(1000)]
    before = gc.get_freeze_count()
    gc.collect()  # a full pass: its survivors (kept) go to the frozen set
    assert gc.get_freeze_count() >= before + len(kept)
    assert policy.frozen_after_pass >= 1


def test_released_cycles_are_collected_after_enough_releases(policy: CollectorPolicy) -> None:
    nodes = [Node() for _ in range(gcpolicy.RECLAIM_MIN)]
    refs = [weakref.ref(node) for node in nodes]
    gc.collect()  # a full pass: the nodes are frozen now
    del nodes  # cyclic garbage, which the collector cannot see while it is frozen
    gc.collect()
    assert all(ref() is not None for ref in refs)
    policy.released(gcpolicy.RECLAIM_MIN - 1)
    assert not policy.maybe_reclaim()  # not enough released yet
    assert all(ref() is not None for ref in refs)
    policy.released()
    assert policy.maybe_reclaim()
    assert policy.pending_releases == 0
    assert all(ref() is None for ref in refs)
    assert gc.get_freeze_count() > 0  # and the rest frozen again
