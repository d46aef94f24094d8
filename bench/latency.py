"""Latency of the things a person waits for: control commands, ``initiate``, one ping.

For each stack (``aioipsec`` and ``strongswan``, alternating, ROUNDS rounds) the tunnel of
:mod:`bench.netbench` is brought up, then:

* **command**: wall time of a control command that lists the SAs, process start included,
  run from the root namespace (both control sockets are files): ``aioipsec --socket S
  sas`` (the console script beside this Python, as a user runs it) against ``swanctl
  --list-sas --uri U``; the median of ``--commands``;
* **initiate**: the IKE SA is terminated and re-initiated; the wall time of the initiate
  command (``aioipsec initiate`` / ``swanctl --initiate``), and whether the responder already
  lists the Child SA as INSTALLED when the command returns (then nothing remains to wait
  for), else the time until it does (polled every 5 ms);
* **request** (our daemon only): the same initiate as a request over the control socket
  from the benchmark's process: the daemons' share of ``initiate``, without a command's start;
* **swanctl initiate** (our daemon only): ``swanctl --initiate`` through our daemon's VICI
  socket, the client charon's figure uses;
* **ping**: the idle RTT through the tunnel (``--pings`` pings, 20 ms apart).

Run as root: ``python -m bench.latency --rounds 3``. Prints JSON lines, one per stack and
round, then a summary (medians). Shares no code path with ``make test``: no thresholds.

``--base REV`` adds an A/B of our own code: the packages of commit REV (``aioipsec@REV``)
and of the checkout as it is, uncommitted changes included (``aioipsec@work``), both run
from exported trees in the same way (daemons and commands), in the round's order
``aioipsec@REV, aioipsec@work, strongswan`` (reversed every other round).
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

from aioipsec.controlclient import ControlClient
from aioipsec.interop.ours import AioipsecPeer
from aioipsec.interop.peers import CharonPeer
from aioipsec.netns import Lab
from bench.ab import base_and_work_trees
from bench.netbench import _FROM_TREE, Settings, Tunnel, _installed, _ping_avg

STACKS = ("aioipsec", "strongswan")
SUMMARY_KEYS = (
    "command_ms", "initiate_ms", "request_ms", "swanctl_initiate_ms", "responder_after_ms",
    "ping_ms",
)  # fmt: skip
REPO = Path(__file__).resolve().parent.parent
# The command line of an exported tree, as bench.netbench starts the daemon from one.
_CLI_FROM_TREE = _FROM_TREE.replace("aioipsec.daemon", "aioipsec")


def _wall(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, capture_output=True, check=True, timeout=60)
    return time.perf_counter() - started


def _cli(tunnel: Tunnel) -> list[str]:
    """The ``aioipsec`` command: the venv's console script (what a user runs; ``python -m``
    would add runpy's imports), or our code of an exported tree (--base)."""
    tree = tunnel.settings.source_tree
    if tree is not None:
        return [sys.executable, "-c", _CLI_FROM_TREE, tree]
    script = Path(sys.executable).parent / "aioipsec"
    return [str(script)] if script.exists() else [sys.executable, "-m", "aioipsec"]


def _list_command(tunnel: Tunnel) -> list[str]:
    peer = tunnel.peers["initiator"]
    if isinstance(peer, AioipsecPeer):
        return [*_cli(tunnel), "--socket", str(peer.control_socket), "sas"]
    assert isinstance(peer, CharonPeer)
    charon = peer.charon
    return ["swanctl", "--list-sas", "--uri", charon.vici_uri]


def _initiate_command(tunnel: Tunnel, name: str) -> list[str]:
    peer = tunnel.peers["initiator"]
    if isinstance(peer, AioipsecPeer):
        return [
            *_cli(tunnel), "--socket", str(peer.control_socket),
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


def measure(
    stack: str, round_number: int, workdir: Path, commands: int, pings: int,
    trees: dict[str, str] | None = None,
) -> dict:  # fmt: skip
    """One stack, one round; STACK ``aioipsec@LABEL`` runs our code from TREES[LABEL]."""
    result: dict[str, Any] = {"stack": stack, "round": round_number}
    kind, _, label = stack.partition("@")
    tree = (trees or {}).get(label) if label else None
    with Lab(f"l{round_number}{kind[:2]}{label[:1]}") as lab:
        tunnel = Tunnel(
            lab, kind, workdir / f"{kind}{label}-{round_number}", Settings(source_tree=tree)
        )
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
        peer = tunnel.peers["initiator"]
        if isinstance(peer, AioipsecPeer):
            # The daemons' share: the same request over the control socket from this
            # process, without a command's start.
            request_ms = []
            for _ in range(3):
                peer.terminate(name)
                if _wait(lambda: not responder.list_sas().get(name)) is None:
                    raise RuntimeError(f"{stack}: the IKE SA did not go away")
                with ControlClient(peer.control_socket, timeout=30) as client:
                    started = time.perf_counter()
                    client.call("initiate", {"child": name, "ike": name})
                    request_ms.append((time.perf_counter() - started) * 1e3)
            result["request_ms"] = statistics.median(request_ms)
            # The same initiate from swanctl (C, what charon's figure uses) through our
            # daemon's VICI socket: the daemons' share plus a command that starts in
            # ~10 ms instead of Python's ~20 ms.
            vici = Path(peer.control_socket).with_suffix(".vici")
            swanctl_ms = []
            for _ in range(3):
                peer.terminate(name)
                if _wait(lambda: not responder.list_sas().get(name)) is None:
                    raise RuntimeError(f"{stack}: the IKE SA did not go away")
                argv = ["swanctl", "--initiate", "--uri", f"unix://{vici}", "--child", name,
                        "--ike", name]  # fmt: skip
                swanctl_ms.append(_wall(argv) * 1e3)
            result["swanctl_initiate_ms"] = statistics.median(swanctl_ms)
        tunnel._wait_ping()
        out = subprocess.run(
            tunnel.ping_argv(pings, 0.02), capture_output=True, text=True, timeout=60
        ).stdout
        result["ping_ms"] = _ping_avg(out)[0]
    return result


def compile_packages() -> None:
    """Bytecode for our packages (see main): a command must not measure the compiler."""
    import compileall

    for package in ("aioipsec", "ikev2", "esp", "nat_t", "tun"):
        compileall.compile_dir(Path(__file__).parent.parent / package, quiet=1)


def run_rounds(rounds: int, workdir: Path, log: Any = print) -> list[dict[str, Any]]:
    """``bench.compare --latency``: both stacks, alternating, ROUNDS rounds."""
    compile_packages()
    runs = []
    for round_number in range(1, rounds + 1):
        for stack in STACKS if round_number % 2 else STACKS[::-1]:
            run = measure(stack, round_number, workdir, commands=10, pings=100)
            log(f"latency round {round_number} {stack}: " + json.dumps(run))
            runs.append(run)
    return runs


def render_section(runs: list[dict[str, Any]]) -> list[str]:
    """The latency section of docs/performance.md (median (min-max) over the rounds)."""

    def cell(stack: str, key: str, digits: int = 1) -> str:
        values = [run[key] for run in runs if run["stack"] == stack and key in run]
        if not values:
            return "n/a"
        middle = statistics.median(values)
        if len(values) == 1:
            return f"{middle:.{digits}f}"
        return f"{middle:.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"

    lines = ["## Latency: control commands, initiate, idle ping (`bench.latency`)", ""]
    lines.append(
        "Wall times from the root namespace, the command's start included (`aioipsec` is "
        "the console script of `make venv`'s editable install, a `.pth` path without an "
        "import finder): a listing (`aioipsec sas` / `swanctl "
        "--list-sas`, median of 10), `initiate` of the terminated tunnel until the command "
        "returns (median of 3; both daemons answer once the Child SA is installed), our "
        "daemons' share of it (the same request over the control socket from the "
        "benchmark's process), `swanctl --initiate` through our daemon's VICI socket (the "
        "client charon's figure uses), and the idle ping RTT (100 pings 20 ms apart)."
    )
    lines.append("")
    lines.append(
        "| stack | listing (ms) | initiate command (ms) | request alone (ms) | "
        "swanctl --initiate (ms) | idle ping RTT (ms) |"
    )
    lines.append("| --- | --- | --- | --- | --- | --- |")
    for stack in STACKS:
        swanctl = "initiate_ms" if stack == "strongswan" else "swanctl_initiate_ms"
        lines.append(
            f"| {stack} | {cell(stack, 'command_ms')} | {cell(stack, 'initiate_ms')} | "
            f"{cell(stack, 'request_ms')} | {cell(stack, swanctl)} | "
            f"{cell(stack, 'ping_ms', 3)} |"
        )
    lines.append("")
    return lines


def target_lines(runs: list[dict[str, Any]]) -> list[str]:
    """Issue 17: initiate <= 2x charon + swanctl; `aioipsec sas` <= 40 ms."""

    def median(stack: str, key: str) -> float | None:
        values = [run[key] for run in runs if run["stack"] == stack and key in run]
        return statistics.median(values) if values else None

    lines = []
    ours, theirs = median("aioipsec", "initiate_ms"), median("strongswan", "initiate_ms")
    vici = median("aioipsec", "swanctl_initiate_ms")
    if ours and theirs:
        lines.append(
            f"- `initiate` <= 2x charon + swanctl: "
            f"{'met' if ours <= 2 * theirs else '**not met**'} with `aioipsec initiate` "
            f"({ours / theirs:.1f}x: {ours:.0f} vs {theirs:.0f} ms)"
            + (
                f"; {'met' if vici <= 2 * theirs else '**not met**'} with swanctl through "
                f"our VICI socket ({vici / theirs:.1f}x: {vici:.0f} ms)."
                if vici
                else "."
            )
        )
    listing = median("aioipsec", "command_ms")
    if listing:
        lines.append(
            f"- `aioipsec sas` <= 40 ms: {'met' if listing <= 40 else '**not met**'} "
            f"({listing:.0f} ms, median)."
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--commands", type=int, default=10, help="listings per round")
    parser.add_argument("--pings", type=int, default=100)
    parser.add_argument("--stacks", default=",".join(STACKS))
    parser.add_argument("--base", help="also our code at this commit, against the checkout")
    args = parser.parse_args(argv)
    stacks = args.stacks.split(",")
    # An installed package has its bytecode; a checkout run with PYTHONDONTWRITEBYTECODE
    # (or never imported before) would compile every module at each command's start
    # (~60 ms here) and measure the compiler, not the command.
    compile_packages()
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-latency-") as tmp:
        trees: dict[str, str] = {}
        if args.base:
            trees = base_and_work_trees(args.base, Path(tmp))
            stacks = [s for s in stacks if s != "aioipsec"]
            stacks[:0] = [f"aioipsec@{args.base}", "aioipsec@work"]
        for round_number in range(1, args.rounds + 1):
            order = stacks if round_number % 2 else stacks[::-1]
            for stack in order:
                run = measure(stack, round_number, Path(tmp), args.commands, args.pings, trees)
                print(json.dumps(run), flush=True)
                runs.append(run)
    for stack in stacks:
        mine = [run for run in runs if run["stack"] == stack]
        summary = {
            key: round(statistics.median(run[key] for run in mine), 3)
            for key in SUMMARY_KEYS
            if all(key in run for run in mine)
        }
        print(json.dumps({"stack": stack, "median": summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
