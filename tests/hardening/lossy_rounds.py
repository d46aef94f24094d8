"""Establish and rekey under heavy loss, round after round (issue 20, target 2).

    sudo .venv/bin/python -m tests.hardening.lossy_rounds --loss 40 --rounds 20 \\
        [--retransmit TIMEOUT,BASE,TRIES] [--parallel N] [--json FILE]

Each round starts a fresh pair of daemons (peer initiates, gw responds) behind nftables
rules at gw that drop LOSS % of UDP 500/4500 in each direction (``numgen random``, input and
output hooks), establishes the IKE SA and its Child SA, rekeys the Child SA, then the IKE
SA; a round succeeds when all three are done within the retransmission schedule (plus
10 s). Both daemons use the retransmission settings given (``[daemon] retransmit_timeout,
retransmit_base, retransmit_tries``); the defaults are strongSwan's, 4 s, 1.8, 5.

``--parallel N`` runs N labs at once (each in its own namespaces), the rounds split between
them: the rounds spend most of their time waiting for retransmission timers.
``tests/hardening/test_lossy_rounds.py`` runs 2 rounds at 40 % in ``make test``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from aioipsec.netns import Lab

from .lab import Hosts, build_hosts, initiate
from .test_loss_and_rekey import add_loss, dropped, rekey_both

DEFAULTS = (4.0, 1.8, 5)
# For lossy links: a retransmission every 1.5 s, no back-off, 24 of them (37.5 s before
# the peer is declared dead). At 40 % loss each way one transmission's round trip fails
# with probability 1 - 0.6 * 0.6 = 0.64; an exchange fails only when all 25 do: 0.64^25 =
# 1.4e-5, against 0.64^6 = 6.9 % with the defaults.
LOSSY = (1.5, 1.0, 24)
REPO = Path(__file__).resolve().parents[2]


def schedule_seconds(timeout: float, base: float, tries: int) -> float:
    """How long an exchange retransmits before the peer is declared dead."""
    return sum(timeout * base**n for n in range(tries + 1))


def one_round(hosts: Hosts, settings: tuple[float, float, int]) -> dict[str, Any]:
    timeout, base, tries = settings
    daemon = {"retransmit_timeout": timeout, "retransmit_base": base, "retransmit_tries": tries}
    wait = schedule_seconds(*settings) + 10
    gw = hosts.gw(daemon=daemon)
    peer = hosts.peer(daemon=daemon)
    started = time.monotonic()
    step = "establish"
    try:
        initiate(peer, wait)
        ike = peer.wait_for_child("legit", timeout=wait)
        established = time.monotonic() - started
        step = "rekey"
        rekey_both(peer, ike, wait)
        return {
            "ok": True,
            "established_s": round(established, 1),
            "total_s": round(time.monotonic() - started, 1),
        }
    except AssertionError as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return {
            "ok": False,
            "failed_at": step,
            "after_s": round(time.monotonic() - started, 1),
            "why": first_line[:300],
        }
    finally:
        peer.stop()
        gw.stop()


def run_rounds(
    hosts: Hosts, loss: int, rounds: int, settings: tuple[float, float, int], progress: Any = None
) -> dict[str, Any]:
    add_loss(hosts, loss)
    results = []
    for _ in range(rounds):
        results.append(one_round(hosts, settings))
        if progress:
            progress(results[-1])
    return {
        "loss_percent": loss,
        "settings": {"timeout": settings[0], "base": settings[1], "tries": settings[2]},
        "rounds": rounds,
        "succeeded": sum(r["ok"] for r in results),
        "ike_packets_dropped": dropped(hosts),
        "results": results,
    }


def _single(args: argparse.Namespace, settings: tuple[float, float, int]) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="lossy-", dir="/tmp"))
    try:
        with Lab(f"l{args.tag}") as lab:
            hosts = build_hosts(lab, workdir)
            return run_rounds(
                hosts, args.loss, args.rounds, settings,
                progress=lambda r: print(json.dumps(r), flush=True),
            )  # fmt: skip
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.hardening.lossy_rounds",
        description="Rounds of establish + Child rekey + IKE rekey between two aioipsec "
        "daemons under random loss of IKE in both directions (needs root).",
    )
    parser.add_argument("--loss", type=int, default=40, help="percent, each direction")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument(
        "--retransmit", default=",".join(str(v) for v in LOSSY),
        help="TIMEOUT,BASE,TRIES (default %(default)s, the lossy-link settings; "
        "strongSwan's defaults are 4,1.8,5)",
    )  # fmt: skip
    parser.add_argument("--parallel", type=int, default=1, help="labs at once")
    parser.add_argument("--tag", default="0", help=argparse.SUPPRESS)
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)
    timeout, base, tries = args.retransmit.split(",")
    settings = (float(timeout), float(base), int(tries))
    if args.parallel <= 1:
        result = _single(args, settings)
    else:
        shares = [args.rounds // args.parallel + (i < args.rounds % args.parallel)
                  for i in range(args.parallel)]  # fmt: skip
        workers = []
        outdir = Path(tempfile.mkdtemp(prefix="lossy-out-", dir="/tmp"))
        for index, share in enumerate(shares):
            if share:
                out = outdir / f"{index}.json"
                argv_ = [sys.executable, "-m", "tests.hardening.lossy_rounds", "--loss",
                         str(args.loss), "--rounds", str(share), "--retransmit",
                         args.retransmit, "--tag", str(index), "--json", str(out)]  # fmt: skip
                workers.append((subprocess.Popen(argv_, cwd=REPO), out))
        parts = []
        for process, out in workers:
            process.wait()
            parts.append(json.loads(out.read_text()))
        shutil.rmtree(outdir, ignore_errors=True)
        result = {
            **parts[0],
            "rounds": sum(p["rounds"] for p in parts),
            "succeeded": sum(p["succeeded"] for p in parts),
            "ike_packets_dropped": sum(p["ike_packets_dropped"] for p in parts),
            "results": [r for p in parts for r in p["results"]],
            "parallel": args.parallel,
        }
    summary = {k: v for k, v in result.items() if k != "results"}
    print(json.dumps(summary))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0 if result["succeeded"] == result["rounds"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
