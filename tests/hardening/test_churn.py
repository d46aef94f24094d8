"""Churn: IKE SAs created and deleted in waves against one daemon (issue 20, target 3).

The short version of ``python -m bench.churn_soak`` (10 000 SAs, 10 minutes or more): 3
waves of 100 IKE SAs, ESP on 5 of each wave. After every wave the daemon holds no SA, and
its descriptors, asyncio tasks and threads are what they were after the first wave; no
warning was logged; every ESP packet of the sample was decrypted. The memory plateau needs
the long run (docs/hardening.md). ``AIOIPSEC_CHURN_SAS`` sets the total.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from aioipsec.netns import Lab
from bench.churn_soak import run_soak
from tests.e2e.helpers import requirements_or_skip

from .test_floods import record

pytestmark = [pytest.mark.netns]
TOTAL = int(os.environ.get("AIOIPSEC_CHURN_SAS", "300"))


@pytest.mark.timeout(120 + TOTAL // 5)
def test_waves_of_ike_sas_leave_nothing_behind() -> None:
    requirements_or_skip("ip")
    with tempfile.TemporaryDirectory(prefix="churn-") as tmp, Lab("churn") as lab:
        soak = run_soak(lab, Path(tmp), total=TOTAL, wave=100, minutes=0)
    summary = soak.summary()
    record("churn", **summary)
    waves = soak.waves
    assert summary["sas_created"] >= TOTAL and summary["sas_failed"] == 0, summary
    assert summary["sas_deleted"] == summary["sas_created"], summary
    assert summary["daemon_ike_sas_after_each_wave"] == [0], summary
    assert summary["esp_sent"] > 0 and summary["esp_decrypted"] == summary["esp_sent"], summary
    # Constant from the first wave on: nothing kept per SA.
    assert len({w.fds for w in waves}) == 1, [w.fds for w in waves]
    assert len({w.tasks for w in waves}) == 1 and waves[0].tasks is not None, [
        w.tasks for w in waves
    ]
    assert len({w.threads for w in waves}) == 1, [w.threads for w in waves]
    assert summary["log_warnings"] == 0, summary
