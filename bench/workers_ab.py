"""workers = 1 against worker processes (issue 17 route 1), alternating, same code.

``python -m bench.workers_ab [--pairs 3] [--seconds 5] [--streams 1] [--b 2|sa:N]``: for
each pair brings up an aioipsec <-> aioipsec tunnel (:class:`bench.netbench.Tunnel`) with
both daemons at ``AIOIPSEC_WORKERS=1`` (A) and at B, in the order A B, B A, A B, ... and
measures iperf3 TCP both ways, with the CPU seconds per GB of every process of each daemon
(the daemon itself, and its worker processes added up) and the machine's busy share.
B is ``2`` (the direction split, the default) or ``sa:N`` (``AIOIPSEC_WORKERS=N``,
``AIOIPSEC_WORKER_STEERING=sa``: N SA-steered workers; the lab's tunnel has one Child SA,
so one worker owns it, both directions, and the others hand it what their TUN queues
read). Prints one JSON line per run, then the medians and the per-pair ratios B/A. A
benchmark, not a test: nothing here passes or fails.
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
from aioipsec.runtime.steering import STEERING_ENV
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


def parse_variant(text: str) -> tuple[int, str]:
    """``1``, ``2`` (direction split) or ``sa:N``: (workers, steering)."""
    if text.startswith("sa:"):
        return int(text[3:]), "sa"
    return int(text), "direction"


def run_once(variant: str, workdir: Path, seconds: float, streams: int) -> dict[str, Any]:
    workers, steering = parse_variant(variant)
    os.environ[WORKERS_ENV] = str(workers)
    os.environ[STEERING_ENV] = steering
    settings = Settings(tcp_seconds=seconds, daemon_log_level="warning")
    result: dict[str, Any] = {"workers": variant}
    with Lab(f"wk{workers}{steering[0]}") as lab:
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
                    used = sum(after[side].values()) - sum(before[side].values())
                    result[f"cpu/GB {key} {side} all"] = round(used / gigabytes, 2)
                    for role in ("daemon", "worker"):
                        used = after[side].get(role, 0.0) - before[side].get(role, 0.0)
                        if role == "worker" and variant == "1":
                            continue
                        result[f"cpu/GB {key} {side} {role}"] = round(used / gigabytes, 2)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--streams", type=int, default=1)
    parser.add_argument("--b", default="2", help="B: 2 (direction split) or sa:N")
    args = parser.parse_args(argv)
    parse_variant(args.b)  # refuse a bad one before the first run
    a_variant, b_variant = "1", args.b
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-workers-") as tmp:
        for pair in range(args.pairs):
            order = [a_variant, b_variant] if pair % 2 == 0 else [b_variant, a_variant]
            for variant in order:
                run = run_once(
                    variant,
                    Path(tmp) / f"w{variant.replace(':', '')}-{pair}",
                    args.seconds,
                    args.streams,
                )
                run["pair"] = pair
                print(json.dumps(run), flush=True)
                runs.append(run)
    keys = sorted({key for run in runs for key in run if key not in ("workers", "pair")})
    variants = (a_variant, b_variant)
    for key in keys:
        values = {
            w: [run[key] for run in runs if run["workers"] == w and run.get(key)] for w in variants
        }
        ratios = []
        for pair in range(args.pairs):
            a, b = (
                next((r.get(key) for r in runs if r["pair"] == pair and r["workers"] == w), None)
                for w in variants
            )
            if a and b:
                ratios.append(round(b / a, 2))
        median = {w: statistics.median(v) if v else None for w, v in values.items()}
        print(
            f"{key:40} A {median[a_variant]!s:>8}  B={b_variant} {median[b_variant]!s:>8}  "
            f"B/A per pair {ratios}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
