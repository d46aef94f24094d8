"""The interop matrix (issue 6): named scenarios, and a runner that prints a table.

    sudo .venv/bin/python -m aioipsec.interop.matrix            # every row
    sudo .venv/bin/python -m aioipsec.interop.matrix -k nat     # rows whose name contains "nat"
    sudo .venv/bin/python -m aioipsec.interop.matrix --list

tests/interop/test_matrix.py runs the same rows under pytest.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import tempfile
import time
from pathlib import Path

from aioipsec.interop.harness import Scenario, ScenarioRun, run_scenario
from aioipsec.netns import Lab

# (IKE proposal, ESP proposal), each run in both roles against charon.
ALGORITHMS = [
    ("aes128gcm16-prfsha384-ecp384", "aes128gcm16"),
    ("chacha20poly1305-prfsha512-x448", "chacha20poly1305"),
    ("aes256-sha256-modp3072", "aes256-sha256"),
    ("aes128-sha256-modp2048", "aes128-sha1"),
    # The first Child SA is keyed from IKE_AUTH: its PFS group only matters in a rekey.
    ("aes256gcm16-prfsha256-ecp256", "aes256gcm16-x25519"),
    ("aes128ccm16-prfsha256-x25519", "aes128ccm16"),
]


def _other(initiator: str) -> str:
    return "charon" if initiator == "aioipsec" else "aioipsec"


MATRIX: list[Scenario] = [
    Scenario(name="charon-to-charon", initiator="charon", responder="charon"),
    # Our daemon with itself: without a NAT no encapsulation (raw ESP, IP protocol 50) and IKE
    # stays on port 500; behind a NAT, ESP in UDP, keepalives, rekeys and a delete.
    Scenario(name="ours-to-ours", initiator="aioipsec", responder="aioipsec"),
    Scenario(
        name="ours-to-ours-behind-nat",
        initiator="aioipsec",
        responder="aioipsec",
        nat=True,
        keep_alive=1,
        actions=("initiator:rekey-child", "responder:rekey-ike", "initiator:terminate"),
    ),
    Scenario(name="ours-to-charon", initiator="aioipsec", responder="charon"),
    Scenario(name="charon-to-ours", initiator="charon", responder="aioipsec"),
    # Behind a NAT, with 1 s NAT-T keepalives counted on the NAT's outside while idle.
    Scenario(
        name="ours-behind-nat", initiator="aioipsec", responder="charon", nat=True, keep_alive=1
    ),
    Scenario(
        name="charon-behind-nat", initiator="charon", responder="aioipsec", nat=True, keep_alive=1
    ),
    # The NAT forgets the mapping during a pause and picks a new port: we must follow (ESP).
    # (charon with kernel-libipsec as the responder does not follow ESP alone: not a row.)
    Scenario(
        name="charon-behind-rebinding-nat",
        initiator="charon",
        responder="aioipsec",
        nat=True,
        nat_rebind=True,
    ),
    *(
        Scenario(
            name=f"{initiator}-lossy",
            initiator=initiator,  # type: ignore[arg-type]
            responder=_other(initiator),  # type: ignore[arg-type]
            loss_percent=10,
            ping_count=10,
            establish_timeout=60.0,
        )
        for initiator in ("aioipsec", "charon")
    ),
    # Rekeying (both sides start each kind) and a delete, in both roles. A Child SA rekey shows
    # ~5 s here: charon keeps the old inbound SA for delete_rekeyed_delay (5 s) before deleting.
    *(
        Scenario(
            name=f"{initiator}-rekeys-and-deletes",
            initiator=initiator,  # type: ignore[arg-type]
            responder=_other(initiator),  # type: ignore[arg-type]
            actions=(
                "initiator:rekey-child",
                "responder:rekey-child",
                "initiator:rekey-ike",
                "responder:rekey-ike",
                "responder:terminate",
            ),
        )
        for initiator in ("aioipsec", "charon")
    ),
    Scenario.ipv6(name="ours-to-charon-v6", initiator="aioipsec", responder="charon"),
    Scenario.ipv6(name="charon-to-ours-v6", initiator="charon", responder="aioipsec"),
    *(
        Scenario(
            name=f"{initiator}-cert-{key_type}",
            initiator=initiator,  # type: ignore[arg-type]
            responder=_other(initiator),  # type: ignore[arg-type]
            auth="pubkey",
            key_type=key_type,  # type: ignore[arg-type]
            # RSA-3072 certificate + signature: IKE_AUTH > 1280 octets, fragmented both ways.
            expect_ike_fragments=key_type == "rsa",
        )
        for key_type in ("ecdsa", "rsa")
        for initiator in ("aioipsec", "charon")
    ),
    *(
        Scenario(
            name=f"{initiator}-{ike.split('-')[0]}-{esp.replace('-', '_')}",
            initiator=initiator,  # type: ignore[arg-type]
            responder=_other(initiator),  # type: ignore[arg-type]
            ike_proposals=(ike,),
            esp_proposals=(esp,),
        )
        for ike, esp in ALGORITHMS
        for initiator in ("aioipsec", "charon")
    ),
]


def run_row(
    scenario: Scenario, keep: bool = False, key_debug: bool = False
) -> tuple[ScenarioRun | None, str, Path]:
    """Run one row in its own Lab; returns (run or None, error text, work directory)."""
    workdir = Path(tempfile.mkdtemp(prefix="aioipsec-mx-", dir="/tmp"))
    try:
        with Lab("mx") as lab:
            return run_scenario(lab, scenario, workdir, key_debug=key_debug), "", workdir
    except Exception as exc:
        return None, f"{type(exc).__name__}: {exc}", workdir
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aioipsec.interop.matrix")
    parser.add_argument("-k", dest="pattern", default="", help="rows whose name contains this")
    parser.add_argument("--list", action="store_true", help="list the rows and exit")
    parser.add_argument("--keep", action="store_true", help="keep /tmp/aioipsec-mx-* (logs)")
    parser.add_argument(
        "--iperf",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="also measure iperf3 TCP through each tunnel for SECONDS",
    )
    parser.add_argument(
        "--key-debug",
        action="store_true",
        help="charon logs derived keys (ike/enc 4): for a key mismatch; implies --keep",
    )
    args = parser.parse_args(argv)
    rows = [s for s in MATRIX if args.pattern in s.name]
    if args.iperf > 0:
        rows = [dataclasses.replace(s, iperf_seconds=args.iperf) for s in rows]
    if args.list:
        for scenario in rows:
            print(scenario.name)
        return 0
    failures = 0
    print(f"{'scenario':<44} {'result':<6} {'establish':>10} {'ping':>6} {'rtt avg':>9}")
    sys.stdout.flush()
    for scenario in rows:
        started = time.monotonic()
        keep = args.keep or args.key_debug
        run, error, workdir = run_row(scenario, keep=keep, key_debug=args.key_debug)
        problems = [error] if run is None else run.problems
        ok = not problems
        failures += not ok
        establish = (
            f"{run.establish_seconds * 1000:.0f} ms" if run and run.establish_seconds else ""
        )
        ping = f"{run.ping.received}/{run.ping.transmitted}" if run and run.ping else ""
        rtt = f"{run.ping.rtt_avg_ms} ms" if run and run.ping and run.ping.rtt_avg_ms else ""
        print(f"{scenario.name:<44} {'ok' if ok else 'FAIL':<6} {establish:>10} {ping:>6} {rtt:>9}")
        for problem in problems:
            print(f"    {problem.splitlines()[0][:200]}")
        for note in run.notes if run else []:
            print(f"    note: {note}")
        if run and run.keepalives_seen is not None:
            print(f"    NAT-T keepalives from behind the NAT while idle: {run.keepalives_seen}")
        if run and run.iperf_mbps is not None:
            print(f"    iperf3: {run.iperf_mbps:.0f} Mbit/s, {run.iperf_retransmits} retransmits")
        for action, seconds in (run.action_seconds if run else {}).items():
            print(f"    {action}: {seconds * 1000:.0f} ms")
        if keep:
            print(f"    logs: {workdir} ({time.monotonic() - started:.1f} s)")
        sys.stdout.flush()
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
