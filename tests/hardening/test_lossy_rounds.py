"""40 % loss of IKE in both directions: establish and rekey, every round (issue 20, target 2).

The short version of ``python -m tests.hardening.lossy_rounds --loss 40 --rounds 20``: 2
rounds with the lossy-link retransmission settings of docs/hardening.md (1.5 s, base 1.0,
24 tries). ``AIOIPSEC_LOSSY_ROUNDS`` sets the count (long mode: 20). The rounds run in two
labs at once, as ``--parallel 2`` does: a round spends most of its time waiting for
retransmission timers, so two labs take about as long as one.
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Any

import pytest

from .conftest import _hosts
from .lab import Hosts
from .lossy_rounds import LOSSY, run_rounds, schedule_seconds
from .test_floods import record

pytestmark = [pytest.mark.netns]
LONG = os.environ.get("AIOIPSEC_HARDENING_LONG") == "1"
ROUNDS = int(os.environ.get("AIOIPSEC_LOSSY_ROUNDS", "20" if LONG else "2"))
LABS = 2


@pytest.mark.timeout(int((ROUNDS + 1) // LABS * 3 * (schedule_seconds(*LOSSY) + 20)) + 90)
def test_establish_and_rekey_at_40_percent_loss_every_round(hosts: Hosts) -> None:
    shares = [ROUNDS // LABS + (i < ROUNDS % LABS) for i in range(LABS)]
    parts: list[dict[str, Any] | BaseException] = [RuntimeError("not run")] * LABS

    def share(index: int, lab_hosts: Hosts) -> None:
        try:
            parts[index] = run_rounds(lab_hosts, 40, shares[index], LOSSY)
        except BaseException as error:  # re-raised in the test's thread
            parts[index] = error

    with contextlib.contextmanager(_hosts)("lossb") as second:
        threads = [
            threading.Thread(target=share, args=(index, lab_hosts))
            for index, lab_hosts in enumerate([hosts, second])
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    for part in parts:
        if isinstance(part, BaseException):
            raise part
    done = [part for part in parts if isinstance(part, dict)]
    results = [r for part in done for r in part["results"]]
    dropped = sum(part["ike_packets_dropped"] for part in done)
    figures = {k: v for k, v in done[0].items() if k != "results"}
    figures.update(rounds=ROUNDS, succeeded=sum(r["ok"] for r in results), parallel=LABS)
    figures["ike_packets_dropped"] = dropped
    record("lossy_rounds", **figures)
    assert len(results) == ROUNDS, results
    failed = [r for r in results if not r["ok"]]
    assert not failed, failed
    assert dropped > 0, "the loss rules dropped nothing: proved nothing"
