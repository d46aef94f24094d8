"""The interop matrix (issue 6; the rows live in aioipsec/interop/matrix.py): our daemon against
strongSwan in both roles, directly, through a NAT, with packet loss, over IPv6, with
certificates (ECDSA, RSA-PSS, Ed25519), several IKE/ESP algorithm sets, traffic selectors,
proposal mismatch, rekeys and deletes. Each row is one Scenario run by the harness; both peers'
views of the SAs are checked against each other.

The rows run JOBS at a time in their own namespaces (AIOIPSEC_INTEROP_JOBS, default 3), started
by the first test of this module; each test waits for its own row. A failing row keeps its work
directory (both logs, wire.pcap, our daemon's Wireshark key tables) and names it."""

from __future__ import annotations

import concurrent.futures
import os
import threading

import pytest

from aioipsec.interop.matrix import MATRIX, RowResult, run_row
from aioipsec.interop.scenario import Scenario
from tests.components import require_component

TOKEN_COMPONENTS = {
    "softhsm": ("softhsm2", "python-pkcs11"),
    "tpm": ("swtpm", "tpm2-tools", "tpm2-pytss"),
    "tpm-pkcs11": ("swtpm", "tpm2-pkcs11", "python-pkcs11"),
}

pytestmark = [
    pytest.mark.interop,
    pytest.mark.netns,
    pytest.mark.needs("root", "charon"),
]

JOBS = int(os.environ.get("AIOIPSEC_INTEROP_JOBS", "3"))
KEEP = os.environ.get("AIOIPSEC_KEEP_WORKDIR") == "1"
ROW_TIMEOUT = 150  # seconds one row may take once started (lossy + rekeys rows: ~30 s)


class _Pool:
    """The selected rows, submitted in collection order to a pool of JOBS threads."""

    def __init__(self, rows: list[Scenario]) -> None:
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=JOBS)
        self.started: dict[str, threading.Event] = {}
        self.futures: dict[str, concurrent.futures.Future[RowResult]] = {}
        for index, scenario in enumerate(rows):
            event = threading.Event()
            self.started[scenario.name] = event
            self.futures[scenario.name] = self.pool.submit(self._one, index, scenario, event)

    @staticmethod
    def _one(index: int, scenario: Scenario, event: threading.Event) -> RowResult:
        event.set()
        run, error, workdir = run_row(scenario, keep=KEEP, lab_tag=f"mx{index}")
        return scenario, run, error, workdir, 0.0

    def result(self, name: str) -> RowResult:
        # Wait for the row to start (rows queue behind each other), then bound its own time.
        while not self.started[name].wait(1.0):
            pass
        return self.futures[name].result(timeout=ROW_TIMEOUT)


@pytest.fixture(scope="module")
def matrix_pool(request):
    selected = [
        item.callspec.params["scenario"]
        for item in request.session.items
        if getattr(item, "originalname", "") == "test_matrix" and hasattr(item, "callspec")
    ]
    pool = _Pool(selected)
    yield pool
    pool.pool.shutdown(wait=True, cancel_futures=True)


# The row's own bound is ROW_TIMEOUT; the mark also covers waiting for rows queued before it.
@pytest.mark.timeout(ROW_TIMEOUT * 3)
@pytest.mark.parametrize("scenario", MATRIX, ids=[s.name for s in MATRIX])
def test_matrix(scenario, matrix_pool):
    if scenario.token:  # our key in a token (issue 16): the token's components too
        require_component(*TOKEN_COMPONENTS[scenario.token])
    _, run, error, workdir, _ = matrix_pool.result(scenario.name)
    assert run is not None, f"{error}\nlogs, wire.pcap, keys kept in {workdir}"
    report = "\n".join(f"--- {side} ---\n{text}" for side, text in run.logs.items())
    assert run.problems == [], f"{run.problems}\nkept in {workdir}\n{report}"
    for note in run.notes:
        print(f"{scenario.name}: note: {note}")
    if scenario.expect_failure:
        return  # _check_expected_failure: the notify in both logs, no SA installed
    assert run.ping is not None and run.ping.received > 0
    if not scenario.loss_percent:
        assert run.ping.received == scenario.ping_count
    if scenario.nat_rebind:
        assert run.ping_after_rebind is not None and run.ping_after_rebind.received > 0
        assert run.rebind_ports is not None and len(run.rebind_ports) >= 2
    if scenario.keep_alive is not None and scenario.nat:
        assert run.keepalives_seen is not None and run.keepalives_seen >= 2
    if scenario.nat and not scenario.nat_rebind:
        responder_view = run.responder_sas[scenario.connection_name]
        assert responder_view["remote-host"] == "10.200.0.254"  # the NAT's public side
    print(
        f"{scenario.name}: established in {run.establish_seconds * 1000:.0f} ms, "
        f"ping {run.ping.received}/{run.ping.transmitted} avg {run.ping.rtt_avg_ms} ms"
    )
