"""A/B of the data plane: our daemon from two versions of the code, alternating.

``python -m bench.ab --base REV [--pairs 3] [--seconds 5]``: exports commit REV (the
packages ``aioipsec ikev2 esp nat_t tun``) into a temporary folder, then for each pair
brings up an aioipsec <-> aioipsec tunnel with the daemons of REV (A) and of the checkout
(B), in the order A B, B A, A B, ... (so neither side always runs first on a machine
shared with other work), and measures iperf3 TCP 1 stream both ways with the CPU seconds
per GB of each daemon. Prints one JSON line per run, then the medians and the per-pair
ratios B/A. A benchmark, not a test: nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path
from typing import Any

from aioipsec.netns import Lab
from bench.netbench import Settings, Tunnel

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("aioipsec", "ikev2", "esp", "nat_t", "tun")


def export(rev: str, target: Path) -> None:
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", rev, *PACKAGES], capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")


def base_and_work_trees(base: str, folder: Path) -> dict[str, str]:
    """Our packages of commit BASE and of the checkout as it is (uncommitted changes
    included), exported under FOLDER and compiled: ``{BASE: path, "work": path}``, for A/B
    runs in which both versions start the same way (bench.latency, bench.ike_load)."""
    import compileall
    import shutil

    trees = {base: str(folder / "base"), "work": str(folder / "work")}
    export(base, Path(trees[base]))
    for package in PACKAGES:
        shutil.copytree(REPO / package, Path(trees["work"]) / package,
                        ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    for tree in trees.values():
        compileall.compile_dir(tree, quiet=1)
    return trees


def run_once(label: str, tree: str | None, workdir: Path, seconds: float) -> dict[str, Any]:
    settings = Settings(tcp_seconds=seconds, source_tree=tree)
    result: dict[str, Any] = {"version": label}
    with Lab(f"ab{label}") as lab:
        tunnel = Tunnel(lab, "aioipsec", workdir, settings)
        tunnel.up()
        result["ping_ms"] = tunnel.ping_idle()
        with tunnel.iperf_server():
            for reverse in (False, True):
                tcp = tunnel.tcp(1, reverse)
                key = tcp.direction
                result[f"mbit {key}"] = round(tcp.mbit_per_s, 1)
                for side in ("initiator", "responder"):
                    cpu = tcp.cpu_seconds_per_gb(side)
                    result[f"cpu/GB {key} {side}"] = round(cpu, 2) if cpu else None
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="the commit to compare against (A)")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args(argv)
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-ab-") as tmp:
        tree = Path(tmp) / "base"
        export(args.base, tree)
        for pair in range(args.pairs):
            order = [("A", str(tree)), ("B", None)]
            if pair % 2:
                order.reverse()
            for label, source in order:
                run = run_once(label, source, Path(tmp) / f"{label}{pair}", args.seconds)
                run["pair"] = pair
                print(json.dumps(run), flush=True)
                runs.append(run)
    keys = [key for key in runs[0] if key not in ("version", "pair")]
    for key in keys:
        values = {
            label: [run[key] for run in runs if run["version"] == label and run[key] is not None]
            for label in ("A", "B")
        }
        ratios = []
        for pair in range(args.pairs):
            a = next(run[key] for run in runs if run["pair"] == pair and run["version"] == "A")
            b = next(run[key] for run in runs if run["pair"] == pair and run["version"] == "B")
            if a and b:
                ratios.append(round(b / a, 2))
        print(
            f"{key:28} A {statistics.median(values['A']) if values['A'] else None!s:>8}"
            f"  B {statistics.median(values['B']) if values['B'] else None!s:>8}"
            f"  B/A per pair {ratios}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
