"""Coverage-guided fuzzing with atheris (libFuzzer), one process per target.

    .venv/bin/python -m fuzz.run                       # every target, 60 s each
    .venv/bin/python -m fuzz.run --seconds 600 sk_payload fragments
    .venv/bin/python -m fuzz.run --list

Each target starts from its seed corpus (``fuzz/corpus/<target>/``, read only) and grows a
working corpus in ``--work`` (default ``/tmp/aioipsec-fuzz/<target>``). A crash (any
exception other than the component's typed error, an assertion of the target, a timeout of
``--timeout`` seconds on one input, or more than ``--rss-mb`` of memory) is written to
``fuzz/crashes/<target>-<kind>-<hash>``: move it to ``fuzz/regressions/<target>/`` with a
name saying what it found once fixed, and ``tests/hardening/test_fuzz_targets.py`` replays
it on every ``make test``. A summary (executions, crashes) goes to stdout and to
``fuzz/last-run.json``.

Needs the ``atheris`` package (``pip install atheris``; the project's ``fuzz`` extra).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
REPO = ROOT.parent
TARGET_NAMES = [
    "ike_message",
    "ike_payload",
    "cp_attributes",
    "eap_methods",
    "eap_tls",
    "sk_payload",
    "engine_sk",
    "redirect_notify",
    "fragments",
    "esp_decap",
    "udp4500",
    "swanctl_conf",
    "toml_config",
    "updown_environment",
    "vici_stream",
]


def _child(target: str, libfuzzer_args: list[str]) -> None:
    """Runs inside the per-target process: instrument our packages, then fuzz."""
    import atheris

    with atheris.instrument_imports(include=["ikev2", "esp", "nat_t", "aioipsec", "fuzz"]):
        from fuzz.targets import TARGETS

    function = TARGETS[target]
    # Log lines of the engine (logging/structlog) would flood the terminal and slow it down.
    import logging

    logging.disable(logging.CRITICAL)
    atheris.Setup([sys.argv[0], *libfuzzer_args], lambda data: function(bytes(data)))
    atheris.Fuzz()


def run_target(target: str, args: argparse.Namespace) -> dict[str, Any]:
    work = Path(args.work) / target
    work.mkdir(parents=True, exist_ok=True)
    seeds = ROOT / "corpus" / target
    crashes = ROOT / "crashes"
    crashes.mkdir(exist_ok=True)
    libfuzzer_args = [
        f"-max_total_time={args.seconds}",
        f"-timeout={args.timeout}",
        f"-rss_limit_mb={args.rss_mb}",
        f"-max_len={args.max_len}",
        f"-artifact_prefix={crashes}/{target}-",
        "-print_final_stats=1",
        str(work),
        *([str(seeds)] if seeds.is_dir() else []),
    ]
    argv = [sys.executable, "-m", "fuzz.run", "--child", target, "--", *libfuzzer_args]
    started = time.monotonic()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=args.seconds + 300
    )
    output = result.stdout + result.stderr
    executions = _stat(output, "stat::number_of_executed_units")
    if executions is None:
        runs = re.findall(r"#(\d+)\s", output)
        executions = int(runs[-1]) if runs else 0
    found = sorted(
        str(path.relative_to(REPO))
        for path in crashes.glob(f"{target}-*")
        if path.stat().st_mtime >= time.time() - (time.monotonic() - started) - 1
    )
    summary: dict[str, Any] = {
        "target": target,
        "seconds": round(time.monotonic() - started, 1),
        "executions": executions,
        "exit": result.returncode,
        "crashes": found,
        "corpus": len(list(work.iterdir())),
    }
    if result.returncode != 0:
        tail = "\n".join(output.splitlines()[-40:])
        print(f"--- {target}: libFuzzer exited {result.returncode}\n{tail}", file=sys.stderr)
    return summary


def _stat(output: str, name: str) -> int | None:
    match = re.search(rf"{re.escape(name)}:\s*(\d+)", output)
    return int(match.group(1)) if match else None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child"]:
        target = argv[1]
        rest = argv[3:] if argv[2:3] == ["--"] else argv[2:]
        _child(target, rest)
        return 0
    parser = argparse.ArgumentParser(prog="python -m fuzz.run", description=__doc__.split("\n")[0])
    parser.add_argument("targets", nargs="*", help="default: all")
    parser.add_argument("--seconds", type=int, default=60, help="per target (default 60)")
    parser.add_argument("--timeout", type=int, default=10, help="seconds per input")
    parser.add_argument("--rss-mb", type=int, default=2048, help="memory limit per process")
    parser.add_argument("--max-len", type=int, default=4096, help="longest input")
    parser.add_argument("--work", default="/tmp/aioipsec-fuzz", help="working corpora")
    parser.add_argument("--list", action="store_true")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(TARGET_NAMES))
        return 0
    unknown = [t for t in args.targets if t not in TARGET_NAMES]
    if unknown:
        parser.error(f"unknown target(s): {', '.join(unknown)} (see --list)")
    try:
        import atheris  # noqa: F401
    except ImportError:
        print("atheris is not installed: pip install atheris (the 'fuzz' extra)", file=sys.stderr)
        return 2
    summaries = []
    for target in args.targets or TARGET_NAMES:
        summary = run_target(target, args)
        summaries.append(summary)
        print(
            f"{target:14} {summary['executions']:>10} executions in {summary['seconds']:>6} s, "
            f"corpus {summary['corpus']:>5}, crashes: {len(summary['crashes'])}"
            + "".join(f"\n    {path}" for path in summary["crashes"]),
            flush=True,
        )
    (ROOT / "last-run.json").write_text(json.dumps(summaries, indent=2) + "\n")
    return 1 if any(s["crashes"] or s["exit"] not in (0,) for s in summaries) else 0


if __name__ == "__main__":
    raise SystemExit(main())
