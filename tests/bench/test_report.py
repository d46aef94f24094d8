"""The benchmark's arithmetic and report rendering, on hand-made figures (no root needed).

These check that the numbers in docs/performance.md are computed as it says (medians,
spreads, per-round ratios, CPU per GB, py-spy summaries); they never time anything.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.compare import (
    cpu_per_gb,
    fmt_spread,
    render_chart,
    render_report,
    round_ratios,
    spread,
    summarise_collapsed,
    tcp_metric,
)
from bench.ike_load import StepResult, percentiles
from bench.netbench import StackRun, TcpResult, UdpResult, UdpStep, _ping_avg


def _run(stack: str, number: int, mbit: float, cpu: float = 1.0) -> StackRun:
    run = StackRun(stack=stack, round=number, ping_idle_ms=0.5, ping_load_ms=2.0)
    for streams in (1, 4):
        for reverse in (False, True):
            run.tcp.append(
                TcpResult(streams, reverse, mbit, 0, int(mbit * 1e6 / 8 * 5), cpu, cpu * 2)
            )
    run.udp = [UdpResult(1400, 10000.0, [UdpStep(10000, 10000.0, 0.0)]), UdpResult(64, 0.0)]
    return run


def _data(runs: list[StackRun]) -> dict:
    return {
        "command": "python -m bench.compare --test",
        "date": "2026-01-01 00:00 UTC",
        "rounds": max(r.round for r in runs),
        "elapsed_minutes": 1.0,
        "machine": {
            "cpus": "2 x test",
            "kernel": "k",
            "python": "3",
            "strongswan": "s",
            "iperf3": "i",
        },
        "settings": {
            "tcp_seconds": 5,
            "udp_growth": 1.6,
            "udp_step_seconds": 3,
            "loss_limit_percent": 0.1,
            "udp_packet_sizes": [1400, 64],
        },
        "runs": [r.to_json() for r in runs],
    }


def test_spread_and_format() -> None:
    assert spread([3.0, None, 1.0, 2.0]) == (2.0, 1.0, 3.0)
    assert spread([None]) is None
    assert fmt_spread([100.0, 300.0, 200.0]) == "200 (100-300)"
    assert fmt_spread([1.234], 2, "x") == "1.23x"
    assert fmt_spread([]) == "n/a"


def test_ratios_are_taken_within_each_round() -> None:
    runs = [
        _run("strongswan", 1, 100),
        _run("aioipsec", 1, 300),
        _run("strongswan", 2, 200),
        _run("aioipsec", 2, 200),
        _run("aioipsec", 3, 500),  # no baseline in round 3: no ratio
    ]
    assert round_ratios(runs, "aioipsec", "strongswan", tcp_metric(1, False)) == [3.0, 1.0]


def test_cpu_per_gb() -> None:
    run = _run("aioipsec", 1, 800, cpu=2.0)  # 4 runs of 500 MB, 2 s each
    assert cpu_per_gb(run, "initiator") == pytest.approx(8.0 / 2.0)
    assert cpu_per_gb(run, "responder") == pytest.approx(16.0 / 2.0)
    plain = _run("plain", 1, 800)
    for result in plain.tcp:
        result.cpu_initiator_s = None
    assert cpu_per_gb(plain, "initiator") is None


def test_json_round_trip() -> None:
    run = _run("mixed", 2, 123.0)
    assert StackRun.from_json(run.to_json()) == run


def test_report_and_chart(tmp_path: Path) -> None:
    runs = [
        _run(s, n, m) for n in (1, 2, 3) for s, m in (("strongswan", 100 + n), ("aioipsec", 350))
    ]
    data = _data(runs)
    report = render_report(data, "perf.png")
    assert "| aioipsec | 350 (350-350) |" in report
    assert "![" in report and "images/perf.png" in report
    ratio_line = next(line for line in report.splitlines() if line.startswith("| aioipsec /"))
    assert "[3.47, 3.43, 3.40]" in ratio_line
    assert "TCP throughput >= 3x" in report and ": met;" in report
    chart = tmp_path / "perf.png"
    assert render_chart(data, chart)
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_says_when_the_target_is_missed() -> None:
    runs = [_run("strongswan", 1, 240), _run("aioipsec", 1, 260)]
    assert "**not met**" in render_report(_data(runs), None)


def test_collapsed_stack_summary() -> None:
    text = (
        "main (/x/aioipsec/daemon.py:10);send (/x/aioipsec/runtime/sockets.py:5) 30\n"
        "main (/x/aioipsec/daemon.py:10);encrypt (/x/esp/fastpath.py:7) 10\n"
        "garbage line\n"
    )
    summary = summarise_collapsed(text)
    assert summary["samples"] == 40
    assert summary["self"][0][1] == pytest.approx(0.75)
    assert summary["self"][0][0].startswith("send (")
    # The entry frame is on every stack: left out of the inclusive ranking.
    assert [name.split(" ")[0] for name, _ in summary["total"]] == ["send", "encrypt"]


def test_ping_summary_parsing() -> None:
    output = (
        "20 packets transmitted, 19 received, 5% packet loss, time 1000ms\n"
        "rtt min/avg/max/mdev = 0.101/0.250/0.900/0.050 ms\n"
    )
    assert _ping_avg(output) == (0.25, 20, 19)
    assert _ping_avg("") == (None, 0, 0)


def test_percentiles_and_rate() -> None:
    values = [float(v) for v in range(1, 101)]
    result = percentiles(values)
    assert result["p50"] == 51.0 and result["p99"] == 100.0 and result["max"] == 100.0
    assert percentiles([]) == {}
    assert StepResult(None, 10, 8, 2, 0, 2.0).rate == 4.0


def test_profile_section() -> None:
    runs = [_run("strongswan", 1, 240), _run("aioipsec", 1, 260)]
    data = _data(runs)
    side = {"self": [("sendto (x.py)", 0.3)], "total": [("drain (x.py)", 0.6)], "samples": 9}
    data["profile"] = {
        "mbit_per_s": 250.0,
        "sides": {"initiator": {**side, "cpu_share": 0.8}, "responder": side},
    }
    report = render_report(data, None)
    assert "**initiator (sender)**: 9 samples; the daemon used 80% of one core" in report
    assert "| 30.0% | `sendto (x.py)` | | 60.0% | `drain (x.py)` |" in report
    assert "**responder (receiver)**: 9 samples." in report
