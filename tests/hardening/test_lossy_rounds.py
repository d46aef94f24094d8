"""40 % loss of IKE in both directions: establish and rekey, every round (issue 20, target 2).

The short version of ``python -m tests.hardening.lossy_rounds --loss 40 --rounds 20``: 2
rounds with the lossy-link retransmission settings of docs/hardening.md (1.5 s, base 1.0,
24 tries). ``AIOIPSEC_LOSSY_ROUNDS`` sets the count (long mode: 20).
"""

from __future__ import annotations

import os

import pytest

from .lab import Hosts
from .lossy_rounds import LOSSY, run_rounds, schedule_seconds
from .test_floods import record

pytestmark = [pytest.mark.netns]
LONG = os.environ.get("AIOIPSEC_HARDENING_LONG") == "1"
ROUNDS = int(os.environ.get("AIOIPSEC_LOSSY_ROUNDS", "20" if LONG else "2"))


@pytest.mark.timeout(int(ROUNDS * 3 * (schedule_seconds(*LOSSY) + 20)) + 60)
def test_establish_and_rekey_at_40_percent_loss_every_round(hosts: Hosts) -> None:
    result = run_rounds(hosts, 40, ROUNDS, LOSSY)
    record("lossy_rounds", **{k: v for k, v in result.items() if k != "results"})
    failed = [r for r in result["results"] if not r["ok"]]
    assert not failed, failed
    assert result["ike_packets_dropped"] > 0, "the loss rules dropped nothing: proved nothing"
