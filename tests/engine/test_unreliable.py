"""Loss, duplication and reordering: every message sent twice, one direction dropping
30%, batches shuffled; the two engines must still converge to the same SAs."""

from __future__ import annotations

import random

import pytest

from ikev2.events import ChildSaRekeyed, IkeSaEstablished, IkeSaRekeyed
from tests.engine.harness import make_pair
from tests.engine.test_lifecycle import assert_consistent, installed_children


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("lossy", ["a->b", "b->a"])
def test_converges_under_loss_duplication_reordering(seed: int, lossy: str) -> None:
    net = make_pair(seed=seed + 10, fragment_size=300)
    net.duplicate = True
    net.reorder = True
    net.rng = random.Random(seed)
    loss = random.Random(seed * 31 + 1)
    net.drop = lambda datagram, direction: direction == lossy and loss.random() < 0.3
    ike_id = net.a.initiate("conn", "net", now=0.0)
    net.run_until(120.0)
    assert net.events("a", IkeSaEstablished) and net.events("b", IkeSaEstablished)
    assert_consistent(net)
    child = next(iter(installed_children(net, "a").values()))
    net.a.rekey_child(ike_id, child.child_sa_id, net.now)
    net.run_until(net.now + 120.0)
    assert net.events("a", ChildSaRekeyed) and net.events("b", ChildSaRekeyed)
    (info_b,) = net.b.sas()
    net.b.rekey_ike(info_b.ike_sa_id, net.now)
    net.run_until(net.now + 120.0)
    assert net.events("a", IkeSaRekeyed) and net.events("b", IkeSaRekeyed)
    assert_consistent(net)
    assert len(installed_children(net, "a")) == 1
    (info_a,) = net.a.sas()
    net.a.terminate_ike(info_a.ike_sa_id, net.now)
    net.run_until(net.now + 200.0)
    assert net.a.sas() == []
    assert net.b.sas() == []
