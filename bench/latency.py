"""Latency of the things a person waits for: control commands, ``initiate``, one ping.

For each stack (``aioipsec`` and ``strongswan``, alternating, ROUNDS rounds) the tunnel of
:mod:`bench.netbench` is brought up, then:

* **command**: wall time of a control command that lists the SAs, process start included,
  run from the root namespace (both control sockets are files): ``python -m aioipsec
  --socket S sas`` against ``swanctl --list-sas --uri U``; the median of ``--commands``;
* **initiate**: the IKE SA is terminated and re-initiated; the wall time of the initiate
  command (``aioipsec initiate`` / ``swanctl --initiate``), and whether the responder already
  lists the Child SA as INSTALLED when the command returns (then nothing remains to wait
  for), else the time until it does (polled every 5 ms);
* **ping**: the idle RTT through the tunnel (``--pings`` pings, 20 ms apart).

Run as root: ``python -m bench.latency --rounds 3``. Prints JSON lines, one per stack and
round, then a summary (medians). Shares no code path with ``make test``: no thresholds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from aioipsec.interop.ours import AioipsecPeer
from aioipsec.interop.peers import CharonPeer
from aioipsec.netns import Lab
from bench.netbench import Settings, Tunnel, _installed, _ping_avg

STACKS = ("aioipsec", "strongswan")


def _wall(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, capture_output=True, check=True, timeout=60)
    return time.perf_counter() - started


def _list_command(tunnel: Tunnel) -> list[str]:
    peer = tunnel.peers["initiator"]
    if isinstance(peer, AioipsecPeer):
        return [sys.executable, "-m", "aioipsec", "--socket", str(peer.control_socket), "sas"]
    assert isinstance(peer, CharonPeer)
    charon = peer.charon
    return ["swanctl", "--list-sas", "--uri", charon.vici_uri]


def _initiate_command(tunnel: Tunnel, name: str) -> list[str]:
    peer = tunnel.peers["initiator"]
    if isinstance(peer, AioipsecPeer):
        return [
            sys.executable, "-m", "aioipsec", "--socket", str(peer.control_socket),
            "initiate", "--child", name, "--ike", name,
        ]  # fmt: skip
    assert isinstance(peer, CharonPeer)
    charon = peer.charon
    return ["swanctl", "--initiate", "--uri", charon.vici_uri, "--child", name, "--ike", name]


def _wait(predicate: Any, limit: float = 20.0, step: float = 0.005) -> float | None:
    started = time.perf_counter()
    while time.perf_counter() - started < limit:
        if predicate():
            return time.perf_counter() - started
        time.sleep(step)
    return None


def measure(stack: str, round_number: int, workdir: Path, commands: int, pings: int) -> dict:
    result: dict[str, Any] = {"stack": stack, "round": round_number}
    with Lab(f"l{round_number}{stack[:2]}") as lab:
        tunnel = Tunnel(lab, stack, workdir / f"{stack}-{round_number}", Settings())
        tunnel.up()
        name = tunnel.scenario.connection_name
        listing = _list_command(tunnel)
        _wall(listing)  # warm the page cache
        result["command_ms"] = statistics.median(_wall(listing) for _ in range(commands)) * 1e3
        initiate_ms, after_ms = [], []
        responder = tunnel.peers["responder"]
        for _ in range(3):
            tunnel.peers["initiator"].terminate(name)
            gone = _wait(lambda: not responder.list_sas().get(name))
            if gone is None:
                raise RuntimeError(f"{stack}: the IKE SA did not go away")
            initiate_ms.append(_wall(_initiate_command(tunnel, name)) * 1e3)
            rest = _wait(lambda: _installed(responder.list_sas(), name))
            after_ms.append(rest * 1e3 if rest is not None else float("nan"))
        result["initiate_ms"] = statistics.median(initiate_ms)
        result["responder_after_ms"] = statistics.median(after_ms)
        tunnel._wait_ping()
        out = subprocess.run(
            tunnel.ping_argv(pings, 0.02), capture_output=True, text=True, timeout=60
        ).stdout
        result["ping_ms"] = _ping_avg(out)[0]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--commands", type=int, default=10, help="listings per round")
    parser.add_argument("--pings", type=int, default=100)
    parser.add_argument("--stacks", default=",".join(STACKS))
    args = parser.parse_args(argv)
    # An installed package has its bytecode; a checkout run with PYTHONDONTWRITEBYTECODE
    # (or never imported before) would compile every module at each command's start
    # (~60 ms here) and measure the compiler, not the command.
    import compileall

    for package in ("aioipsec", "ikev2", "esp", "nat_t", "tun"):
        compileall.compile_dir(Path(__file__).parent.parent / package, quiet=1)
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-latency-") as tmp:
        for round_number in range(1, args.rounds + 1):
            for stack in args.stacks.split(","):
                run = measure(stack, round_number, Path(tmp), args.commands, args.pings)
                print(json.dumps(run), flush=True)
                runs.append(run)
    for stack in args.stacks.split(","):
        mine = [run for run in runs if run["stack"] == stack]
        summary = {
            key: round(statistics.median(run[key] for run in mine), 3)
            for key in ("command_ms", "initiate_ms", "responder_after_ms", "ping_ms")
        }
        print(json.dumps({"stack": stack, "median": summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
