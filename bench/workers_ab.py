"""workers = 1 against workers = 2 (issue 17 route 1), alternating, same code.

``python -m bench.workers_ab [--pairs 3] [--seconds 5] [--streams 1]``: for each pair
brings up an aioipsec <-> aioipsec tunnel (:class:`bench.netbench.Tunnel`) with both
daemons at ``AIOIPSEC_WORKERS=1`` (A) and at ``AIOIPSEC_WORKERS=2`` (B), in the order A B,
B A, A B, ... and measures iperf3 TCP both ways, with the CPU seconds per GB of every
process of each daemon (the daemon itself, and its encrypt worker with workers = 2) and
the machine's busy share. Prints one JSON line per run, then the medians and the per-pair
ratios B/A. A benchmark, not a test: nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from aioipsec.netns import Lab
from aioipsec.runtime.workers import WORKERS_ENV
from bench.netbench import CLOCK_TICKS, Settings, Tunnel


def group_cpu(pgid: int) -> dict[str, float]:
    """CPU seconds of each process of process group PGID, by role: the daemon
    (``aioipsec.daemon``), its worker (``aioipsec.runtime.workers``), anything else."""
    seconds: dict[str, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_bytes()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        fields = stat.rsplit(b")", 1)[1].split()
        if int(fields[2]) != pgid:
            continue
        if b"aioipsec.runtime.workers" in cmdline:
            role = "worker"
        elif b"aioipsec.daemon" in cmdline or b"aioipsec" in cmdline:
            role = "daemon"
        else:
            role = "other"
        seconds[role] = seconds.get(role, 0.0) + (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return seconds


def run_once(workers: int, workdir: Path, seconds: float, streams: int) -> dict[str, Any]:
    os.environ[WORKERS_ENV] = str(workers)
    settings = Settings(tcp_seconds=seconds, daemon_log_level="warning")
    result: dict[str, Any] = {"workers": workers}
    with Lab(f"wk{workers}") as lab:
        tunnel = Tunnel(lab, "aioipsec", workdir, settings)
        tunnel.up()
        result["ping_ms"] = tunnel.ping_idle()
        with tunnel.iperf_server():
            for reverse in (False, True):
                before = {side: group_cpu(pgid) for side, pgid in tunnel.pgids.items()}
                tcp = tunnel.tcp(streams, reverse)
                after = {side: group_cpu(pgid) for side, pgid in tunnel.pgids.items()}
                key = tcp.direction
                result[f"mbit {key}"] = round(tcp.mbit_per_s, 1)
                result[f"busy {key}"] = round(tcp.machine_busy or 0, 3)
                gigabytes = tcp.bytes / 1e9
                for side in ("initiator", "responder"):
                    for role in ("daemon", "worker"):
                        used = after[side].get(role, 0.0) - before[side].get(role, 0.0)
                        if role == "worker" and workers == 1:
                            continue
                        result[f"cpu/GB {key} {side} {role}"] = round(used / gigabytes, 2)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--streams", type=int, default=1)
    args = parser.parse_args(argv)
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-workers-") as tmp:
        for pair in range(args.pairs):
            order = [1, 2] if pair % 2 == 0 else [2, 1]
            for workers in order:
                run = run_once(
                    workers, Path(tmp) / f"w{workers}-{pair}", args.seconds, args.streams
                )
                run["pair"] = pair
                print(json.dumps(run), flush=True)
                runs.append(run)
    keys = sorted({key for run in runs for key in run if key not in ("workers", "pair")})
    for key in keys:
        values = {
            w: [run[key] for run in runs if run["workers"] == w and run.get(key)] for w in (1, 2)
        }
        ratios = []
        for pair in range(args.pairs):
            a = next((r.get(key) for r in runs if r["pair"] == pair and r["workers"] == 1), None)
            b = next((r.get(key) for r in runs if r["pair"] == pair and r["workers"] == 2), None)
            if a and b:
                ratios.append(round(b / a, 2))
        median = {w: statistics.median(v) if v else None for w, v in values.items()}
        print(f"{key:40} w1 {median[1]!s:>8}  w2 {median[2]!s:>8}  w2/w1 per pair {ratios}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
