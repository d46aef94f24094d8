"""Smoke runs of the benchmark code with tiny sizes: real namespaces, daemons and iperf3, but
no figure is compared with any threshold (benchmarks are not tests; see docs/performance.md).

What is checked: every stage of the benchmark produces its results and cleans up after
itself (the namespaces are gone afterwards).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from aioipsec.netns import list_namespaces
from tests.components import require_component

pytestmark = [pytest.mark.netns]


def _require(*tools: str) -> None:
    """Root (network namespaces, TUN) and the named components; see tests/components.py."""
    require_component("root", "tun", *tools)


@pytest.fixture
def workdir() -> Iterator[Path]:
    # AF_UNIX socket paths hold at most 107 octets: keep the work directory short.
    path = Path(tempfile.mkdtemp(prefix="bench-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _our_namespaces() -> set[str]:
    return {name for name in list_namespaces() if name.startswith(f"aioipsec-{os.getpid()}-")}


@pytest.mark.timeout(180)
def test_compare_end_to_end_writes_report_and_chart(workdir: Path) -> None:
    _require("iperf3", "ip", "ping")
    from bench.compare import main

    out, chart, data = workdir / "perf.md", workdir / "perf.png", workdir / "perf.json"
    status = main([
        "--rounds", "1", "--stacks", "aioipsec,plain", "--tcp-seconds", "1",
        "--udp-step-seconds", "0.3", "--udp-max-steps", "2", "--ping-count", "3",
        "--out", str(out), "--chart", str(chart), "--json", str(data),
        "--workdir", str(workdir / "runs"),
    ])  # fmt: skip
    assert status == 0
    report = out.read_text()
    assert "| aioipsec |" in report and "| plain |" in report
    assert "Problems seen" not in report, report
    assert chart.read_bytes()[:4] == b"\x89PNG"
    assert not _our_namespaces()


@pytest.mark.timeout(120)
def test_measure_stack_with_strongswan_on_one_end(workdir: Path) -> None:
    _require("iperf3", "/usr/lib/ipsec/charon")
    from bench.netbench import Settings, measure_stack

    settings = Settings(
        tcp_seconds=1, tcp_streams=(1,), udp_packet_sizes=(1400,), udp_step_seconds=0.3,
        udp_max_steps=1, ping_count=3,
    )  # fmt: skip
    run = measure_stack("mixed", 1, workdir / "mixed", settings)
    assert run.problems == []
    assert {(r.streams, r.reverse) for r in run.tcp} == {(1, False), (1, True)}
    assert all(r.bytes > 0 and r.cpu_initiator_s is not None for r in run.tcp)
    assert run.ping_idle_ms is not None and run.tun_mtu == {"initiator": 1400, "responder": 1400}
    assert len(run.udp) == 1 and len(run.udp[0].steps) == 1
    assert not _our_namespaces()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("responder", ["aioipsec", "charon"])
def test_ike_load_generator(responder: str, workdir: Path) -> None:
    _require("ip", "/usr/lib/ipsec/charon")
    from bench.ike_load import LoadSettings, measure_responder

    settings = LoadSettings(sources=3, ports_per_source=2, window=4, step_seconds=0.5,
                            rates=(10,), drain_seconds=10)  # fmt: skip
    result = measure_responder(responder, workdir / responder, settings, scale=12, log=print)
    assert result.problems == []
    (step,) = result.steps
    assert step.started == step.established + step.failed and step.established > 0
    assert step.setup_ms["p50"] > 0
    assert result.max_rate[0].established > 0
    assert result.scale_sas >= 12 and result.rss_after_kib > 0
    assert not _our_namespaces()
