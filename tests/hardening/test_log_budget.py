"""The global log budget (issue 13, F3).

Raw ESP needs no handshake, so its source can be spoofed: a limiter keyed on the source
address logged every packet of a flood from 50,000 sources (50,000 lines, 5.6 MB). One
budget above every per-key limiter bounds what the network can make the daemon write,
and one summary line counts what it dropped.

The budget on its own (an injected clock), then 50,000 spoofed-source unknown-SPI ESP
packets against the running daemon: the log lines are counted, the CPU per packet is
recorded (``$AIOIPSEC_HARDENING_FIGURES``, docs/hardening.md).
"""

from __future__ import annotations

import io
import logging
import re
import time

import pytest
import structlog

from aioipsec.log import configure_logging, get_logger
from aioipsec.ratelimit import LogBudget, install_log_budget

from .lab import GW_EVIL_SIDE, Hosts, daemon_healthy, daemon_pid
from .test_floods import cpu_seconds, record, start_flood

SPOOFED_PACKETS = 50_000


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_budget_passes_a_burst_then_its_rate_and_counts_the_rest() -> None:
    clock = Clock()
    budget = LogBudget(rate=10.0, burst=50, clock=clock)
    summaries: list[int] = []
    budget._emit = summaries.append
    assert sum(budget.take() for _ in range(1000)) == 50
    assert budget.suppressed == 950
    clock.now = 2.0  # 20 more tokens
    assert sum(budget.take() for _ in range(1000)) == 20
    assert summaries == []  # the summary is written by report() (every 10 s in the daemon)
    assert budget.report() == 1930 and summaries == [1930]
    assert budget.report() == 0  # nothing new: no line
    clock.now = 1000.0  # the bucket never holds more than the burst
    assert sum(budget.take() for _ in range(1000)) == 50


def test_installed_budget_drops_structlog_and_logging_lines_with_a_summary() -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream=stream)
    budget, uninstall = install_log_budget(rate=0.0001, burst=5)
    stdlib = logging.getLogger("ikev2.test_budget")
    try:
        log = get_logger("test")
        for n in range(100):
            log.info("per-packet line", n=n)
        for n in range(20):
            stdlib.warning("engine warning %d", n)
    finally:
        uninstall()
        structlog.reset_defaults()
    lines = stream.getvalue().splitlines()
    assert len([line for line in lines if "per-packet line" in line]) == 5
    (summary,) = [line for line in lines if "suppressed by the global log budget" in line]
    assert '"suppressed": 115' in summary  # 95 structlog + 20 logging records
    assert budget.suppressed == 115


@pytest.mark.netns
@pytest.mark.timeout(150)
def test_spoofed_source_unknown_spi_flood_makes_bounded_log_lines(hosts: Hosts) -> None:
    gw = hosts.gw()
    packet = b"\x0b\xad\xba\xd0" + bytes(4) + bytes(range(64))
    pid = daemon_pid(gw)
    before = gw.call("stats")
    lines_before = len(gw.log_text().splitlines())
    cpu_before = cpu_seconds(pid)
    # 10,000 packets a second (5 s): what the daemon's socket takes without overflowing.
    flood = start_flood(hosts, "esp-spoofed", packet, GW_EVIL_SIDE, rate=10_000, seconds=20,
                        packets=SPOOFED_PACKETS)  # fmt: skip
    flood.popen.wait(60)
    match = re.search(r"sent (\d+) in ([\d.]+) s", flood.log_text())
    assert match, flood.log_text()
    sent, seconds = int(match.group(1)), float(match.group(2))
    # The periodic summary (every 10 s) is written, and the daemon has drained its socket
    # (the unknown-SPI count stands still).
    assert gw.process is not None
    assert gw.process.wait_for_log("suppressed by the global log budget", timeout=15)
    counted, deadline = -1, time.monotonic() + 15
    while time.monotonic() < deadline:
        now = gw.call("stats")["esp"]["unknown_spi"]
        if now == counted:
            break
        counted = now
        time.sleep(0.5)
    after = daemon_healthy(gw)
    arrived = after["esp"]["unknown_spi"] - before["esp"]["unknown_spi"]
    cpu = cpu_seconds(pid) - cpu_before
    lines = gw.log_text().splitlines()[lines_before:]
    text = "\n".join(lines)
    suppressed = sum(int(n) for n in re.findall(r"suppressed[\"=: ]+(\d+)", text))
    figures = dict(
        sent=sent,
        seconds=seconds,
        arrived=arrived,
        log_lines=len(lines),
        log_bytes=len(text),
        summary_lines=text.count("suppressed by the global log budget"),
        suppressed_counted=after.get("log", {}).get("lines-suppressed"),
        daemon_cpu_us_per_packet=round(1e6 * cpu / max(arrived, 1), 1),
    )
    record("esp_spoofed_unknown_spi_flood", **figures)
    assert sent == SPOOFED_PACKETS and arrived > SPOOFED_PACKETS // 2, figures
    # Bounded: the burst (200) and 20 lines a second while it lasted, not one per source.
    assert len(lines) <= 200 + 20 * (seconds + 12) + 10, figures
    # What was dropped is said, with its count.
    assert figures["summary_lines"] >= 1 and suppressed > 0, gw.log_tail(20)
    assert after["log"]["lines-suppressed"] >= arrived - len(lines), figures
