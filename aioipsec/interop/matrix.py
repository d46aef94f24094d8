"""The interop matrix (issue 6): named scenarios, and a runner that prints a table.

    sudo aioipsec interop ours-to-charon           # one row (= python -m aioipsec.interop.matrix)
    sudo aioipsec interop --all -j 3 --markdown docs/interop.md
    sudo aioipsec interop -k nat                   # rows whose name contains "nat"
    aioipsec interop --list

tests/interop/test_matrix.py runs the same rows under pytest.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import datetime
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from aioipsec.interop import redirect, road_warrior
from aioipsec.interop.charon import child_sas
from aioipsec.interop.runner import run_scenario
from aioipsec.interop.scenario import Implementation, Scenario, ScenarioRun
from aioipsec.interop.scripted import ScriptedRow
from aioipsec.netns import Lab

# (IKE proposal, ESP proposal), each run in both roles against charon.
# (aes256gcm16-prfsha256-x25519 with aes256gcm16 is the default: ours-to-charon/charon-to-ours.)
ALGORITHMS = [
    ("aes128gcm16-prfsha384-ecp384", "aes128gcm16"),
    ("chacha20poly1305-prfsha512-x448", "chacha20poly1305"),
    ("aes256-sha256-modp3072", "aes256-sha256"),
    # SHA-1 integrity and MODP-2048: legacy, for interop only.
    ("aes128-sha1-modp2048", "aes128-sha512"),
    # The first Child SA is keyed from IKE_AUTH: its PFS group only matters in a rekey, so
    # this row rekeys the Child SA (with a new X25519 exchange).
    ("aes256gcm16-prfsha256-ecp256", "aes256gcm16-x25519"),
    ("aes128ccm16-prfsha256-x25519", "aes128ccm16"),
]


# (token, key type) of the certificate rows, each in both roles ("": a key file).
CERT_ROWS: tuple[
    tuple[Literal["", "softhsm", "tpm", "tpm-pkcs11"], Literal["ecdsa", "rsa", "ed25519"]], ...
] = (
    ("", "ecdsa"),
    ("", "rsa"),
    ("", "ed25519"),
    ("softhsm", "ecdsa"),
    ("softhsm", "rsa"),
    ("tpm", "ecdsa"),
    ("tpm-pkcs11", "ecdsa"),
)


# (initiator, source) of the revocation rows; the strongSwan peer's certificate is checked.
REVOCATION_ROWS: tuple[tuple[Implementation, Literal["crl", "ocsp"]], ...] = (
    ("charon", "crl"),
    ("aioipsec", "ocsp"),
)


def _other(initiator: Implementation) -> Implementation:
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
    # The baseline both ways, with 1 s of iperf3 TCP through the tunnel.
    Scenario(name="ours-to-charon", initiator="aioipsec", responder="charon", iperf_seconds=1),
    Scenario(name="charon-to-ours", initiator="charon", responder="aioipsec", iperf_seconds=1),
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
            initiator=initiator,
            responder=_other(initiator),
            # 20 % of what the initiator sends (IKE requests, ESP-in-UDP) is dropped; the SA must
            # come up and both SAs rekey (a rekey request lost is retransmitted after 1 s).
            loss_percent=20,
            loss_direction="to-responder",
            ping_count=10,
            establish_timeout=60.0,
            actions=("initiator:rekey-child", "initiator:rekey-ike"),
        )
        for initiator in ("aioipsec", "charon")
    ),
    # Rekeying (both sides start each kind) and a delete, in both roles. A Child SA rekey shows
    # ~5 s here: charon keeps the old inbound SA for delete_rekeyed_delay (5 s) before deleting.
    *(
        Scenario(
            name=f"{initiator}-rekeys-and-deletes",
            initiator=initiator,
            responder=_other(initiator),
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
    # Certificates; with a token (issue 16) our key never leaves it: ECDSA P-256 and RSA-3072
    # in SoftHSM2, ECDSA P-256 in a TPM (swtpm in our namespace) and in the TPM used as a
    # PKCS#11 module; the harness's CA certifies the token's public key.
    *(
        Scenario(
            name=f"{initiator}-{token or 'cert'}-{key_type}",
            initiator=initiator,
            responder=_other(initiator),
            auth="pubkey",
            key_type=key_type,
            token=token,
            # RSA-3072 certificate + signature: IKE_AUTH > 1280 octets, fragmented both ways.
            expect_ike_fragments=key_type == "rsa",
        )
        for token, key_type in CERT_ROWS
        for initiator in ("aioipsec", "charon")
    ),
    # Revocation (issue 19): the strongSwan peer's certificate names a CRL (pki --signcrl,
    # over HTTP) or an OCSP responder (openssl ocsp) in its namespace; our daemon checks it
    # with revocation = strict: a valid certificate establishes, a revoked one is refused
    # with AUTHENTICATION_FAILED. Each source in one role: CRL with charon initiating, OCSP
    # with charon responding.
    *(
        Scenario(
            name=f"{initiator}-{source}-{'revoked' if revoked else 'valid'}",
            initiator=initiator,
            responder=_other(initiator),
            auth="pubkey",
            revocation=source,
            revoked=revoked,
            expect_failure="AUTHENTICATION_FAILED" if revoked else None,
        )
        for initiator, source in REVOCATION_ROWS
        for revoked in (False, True)
    ),
    *(
        Scenario(
            name=f"{initiator}-{ike.split('-')[0]}-{esp.replace('-', '_')}",
            initiator=initiator,
            responder=_other(initiator),
            ike_proposals=(ike,),
            esp_proposals=(esp,),
            actions=("initiator:rekey-child",) if "x25519" in esp else (),
        )
        for ike, esp in ALGORITHMS
        for initiator in ("aioipsec", "charon")
    ),
    # Rekeying by lifetime (4 s) started by each side, in both roles.
    *(
        Scenario(
            name=f"{initiator}-{kind}-lifetime-by-{side}",
            initiator=initiator,
            responder=_other(initiator),
            actions=(f"{side}:expire-{kind}",),
        )
        for initiator in ("aioipsec", "charon")
        for side in ("initiator", "responder")
        for kind in ("child", "ike")
    ),
    # Reauthentication (reauth_time 4 s on the initiator: a new IKE SA with new Child SAs).
    *(
        Scenario(
            name=f"{initiator}-reauth",
            initiator=initiator,
            responder=_other(initiator),
            actions=("initiator:expire-reauth",),
        )
        for initiator in ("aioipsec", "charon")
    ),
    # Both SAs rekeyed while a ping runs every 0.1 s: no echo may be lost.
    *(
        Scenario(
            name=f"{initiator}-rekeys-under-ping",
            initiator=initiator,
            responder=_other(initiator),
            actions=("initiator:rekey-child", "responder:rekey-ike"),
            ping_during_actions=True,
        )
        for initiator in ("aioipsec", "charon")
    ),
    # DPD: the responder goes silent, the initiator (dpd_delay 1 s) must clear the IKE SA.
    *(
        Scenario(
            name=f"{initiator}-dpd-peer-gone",
            initiator=initiator,
            responder=_other(initiator),
            actions=("responder:vanish",),
        )
        for initiator in ("aioipsec", "charon")
    ),
    # Both sides initiate at once (IKE SA and Child SA collision), in both roles.
    *(
        Scenario(
            name=f"{initiator}-collision",
            initiator=initiator,
            responder=_other(initiator),
            collision=True,
        )
        for initiator in ("aioipsec", "charon")
    ),
    # Both sides offer nothing in common: the responder answers NO_PROPOSAL_CHOSEN and says
    # why in its log (ours: what was offered and what is configured).
    *(
        Scenario(
            name=f"{initiator}-proposal-mismatch",
            initiator=initiator,
            responder=_other(initiator),
            ike_proposals=("aes256gcm16-prfsha256-x25519",),
            responder_ike_proposals=("aes128-sha256-ecp384",),
            expect_failure="NO_PROPOSAL_CHOSEN",
        )
        for initiator in ("aioipsec", "charon")
    ),
    # Traffic selectors (subnet to subnet is every other row).
    *(
        Scenario(
            name=f"{initiator}-ts-host-to-host",
            initiator=initiator,
            responder=_other(initiator),
            initiator_subnet="10.1.0.1/32",
            responder_subnet="10.2.0.1/32",
        )
        for initiator in ("aioipsec", "charon")
    ),
    *(
        Scenario(
            name=f"{initiator}-ts-narrowed",
            initiator=initiator,
            responder=_other(initiator),
            initiator_remote_ts="10.2.0.0/16",  # the responder allows 10.2.0.0/24 only
        )
        for initiator in ("aioipsec", "charon")
    ),
    *(
        Scenario(
            name=f"{initiator}-ts-unacceptable",
            initiator=initiator,
            responder=_other(initiator),
            initiator_remote_ts="10.9.0.0/24",  # nothing the responder protects
            expect_failure="TS_UNACCEPTABLE",
        )
        for initiator in ("aioipsec", "charon")
    ),
]


# Scripted rows (aioipsec/interop/scripted.py): remote access (road warriors, pools, EAP,
# EAP-only; tests/interop/test_road_warrior.py) and redirection (RFC 5685;
# tests/interop/test_redirect.py), which need more than two peers or their own checks.
SCRIPTED: list[ScriptedRow] = [*road_warrior.ROWS, *redirect.MATRIX_ROWS]

Row = Scenario | ScriptedRow


def run_row(
    scenario: Row, keep: bool = False, key_debug: bool = False, lab_tag: str = "mx"
) -> tuple[ScenarioRun | None, str, Path]:
    """Run one row in its own Lab; returns (run or None, error text, work directory).

    The work directory (both logs, wire.pcap, our daemon's Wireshark key tables in
    ``*/keys/``) is removed when the row passes, unless KEEP; a failing row keeps it."""
    workdir = Path(tempfile.mkdtemp(prefix=f"aioipsec-mx-{scenario.connection_name}-", dir="/tmp"))
    run: ScenarioRun | None = None
    try:
        with Lab(lab_tag) as lab:
            if isinstance(scenario, ScriptedRow):
                run = scenario.execute(lab, workdir)
            else:
                run = run_scenario(lab, scenario, workdir, key_debug=key_debug)
            return run, "", workdir
    except Exception as exc:
        return None, f"{type(exc).__name__}: {exc}", workdir
    finally:
        if not keep and run is not None and not run.problems:
            shutil.rmtree(workdir, ignore_errors=True)


RowResult = tuple[Row, "ScenarioRun | None", str, Path, float]


def run_rows(
    rows: list[Row], *, jobs: int = 1, keep: bool = False, key_debug: bool = False
) -> Iterator[RowResult]:
    """Run ROWS, JOBS at a time (each in its own namespaces), yielding results in row order:
    (scenario, run or None, error text, work directory, wall seconds)."""

    def one(index: int, scenario: Row) -> RowResult:
        started = time.monotonic()
        run, error, workdir = run_row(scenario, keep, key_debug, lab_tag=f"mx{index}")
        return scenario, run, error, workdir, time.monotonic() - started

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = [pool.submit(one, index, scenario) for index, scenario in enumerate(rows)]
        for future in futures:
            yield future.result()


def strongswan_version() -> str:
    """The installed strongSwan (Debian package version of charon)."""
    result = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Version}", "strongswan-charon"],
        capture_output=True, text=True, check=False, timeout=10,
    )  # fmt: skip
    return result.stdout.strip() or "unknown"


def negotiated(run: ScenarioRun | None) -> str:
    """The algorithms the initiator's list-sas shows: IKE; ESP."""
    if run is None:
        return ""
    ike = run.initiator_sas.get(run.scenario.connection_name, {})
    if not ike:
        return ""

    def algorithms(sa: dict[str, Any], keys: tuple[str, ...]) -> str:
        parts: list[str] = []
        for key in keys:
            value = sa.get(key)
            if value and key == "encr-keysize":
                parts[-1] += f"_{value}"
            elif value:
                parts.append(str(value))
        return "/".join(parts)

    text = algorithms(ike, ("encr-alg", "encr-keysize", "integ-alg", "prf-alg", "dh-group"))
    children = child_sas(ike)
    if children:
        esp = algorithms(children[0], ("encr-alg", "encr-keysize", "integ-alg", "dh-group"))
        text += f"; ESP {esp}"
    return text


def _summary(run: ScenarioRun | None, error: str) -> str:
    if run is None:
        return error.splitlines()[0][:200]
    parts = []
    if run.scenario.expect_failure:
        parts.append(f"fails with {run.scenario.expect_failure} as expected")
    if run.ping:
        parts.append(f"ping {run.ping.received}/{run.ping.transmitted}")
    if run.iperf_mbps is not None:
        parts.append(f"iperf3 {run.iperf_mbps:.0f} Mbit/s")
    if run.keepalives_seen is not None:
        parts.append(f"{run.keepalives_seen} NAT-T keepalives")
    parts += [f"{action} {seconds * 1000:.0f} ms" for action, seconds in run.action_seconds.items()]
    parts += run.details
    parts += [problem.splitlines()[0][:200] for problem in run.problems]
    return "; ".join(parts)


def _is_against_strongswan(scenario: Row) -> bool:
    """One side aioipsec, the other charon: the rows the title promises."""
    return {scenario.initiator, scenario.responder} == {"aioipsec", "charon"}


def _reference_kind(scenario: Row) -> str:
    if scenario.initiator == scenario.responder == "charon":
        return "baseline: charon against charon (checks the lab, not aioipsec)"
    return "aioipsec against aioipsec"


def markdown(results: list[RowResult], version: str, total_seconds: float) -> str:
    """docs/interop.md: the matrix as a table, from a real run.

    Rows that are not aioipsec against strongSwan (the charon-to-charon baseline, ours against
    ours) go to a table of their own below, labelled, so the first table means what its title
    says.
    """

    def ok(run: ScenarioRun | None) -> bool:
        return run is not None and not run.problems

    interop = [row for row in results if _is_against_strongswan(row[0])]
    reference = [row for row in results if not _is_against_strongswan(row[0])]
    lines = [
        "# Interop matrix: aioipsec against strongSwan",
        "",
        "Generated by `sudo aioipsec interop --all --markdown docs/interop.md` (the rows are",
        "`aioipsec/interop/matrix.py`; how the harness works: docs/interop-harness.md). Do not",
        "edit by hand.",
        "",
        f"- strongSwan: {version} (Debian, charon with kernel-libipsec, in a network namespace)",
        f"- Run: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC on "
        f"{platform.node() or 'this machine'} ({os.cpu_count()} CPUs), "
        f"{total_seconds:.0f} s wall for {len(results)} rows",
        f"- Result: {sum(ok(row[1]) for row in interop)}/{len(interop)} rows of aioipsec "
        f"against strongSwan passed; {sum(ok(row[1]) for row in reference)}/{len(reference)} "
        "reference rows (not against strongSwan, see the end) passed",
        "",
        "Establish: from `initiate` until both peers' list-sas show the SA (polled every 50 ms);",
        "for the remote-access and redirect rows (scripted: `aioipsec/interop/road_warrior.py`,",
        "`redirect.py`) until the client's `initiate` returned.",
        "Negotiated: the initiator's list-sas (strongSwan's names; our daemon speaks the same).",
        "",
    ]

    def table(rows: list[RowResult], kind: bool) -> None:
        lines.append(
            "| scenario | "
            + ("kind | " if kind else "")
            + "initiator | responder | result | negotiated | establish | details |"
        )
        lines.append("|---|---|---|---|---|---|---|" + ("---|" if kind else ""))
        for scenario, run, error, _, _ in rows:
            establish = (
                f"{run.establish_seconds * 1000:.0f} ms"
                if run and run.establish_seconds and not scenario.expect_failure
                else ""
            )
            cells = [
                f"`{scenario.name}`",
                *([_reference_kind(scenario)] if kind else []),
                scenario.initiator,
                scenario.responder,
                "pass" if ok(run) else "**FAIL**",
                negotiated(run),
                establish,
                _summary(run, error).replace("|", "\\|"),
            ]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")

    table(interop, kind=False)
    if reference:
        lines += [
            "## Reference rows: not aioipsec against strongSwan",
            "",
            "The same harness and checks, run for comparison: the charon-to-charon baseline",
            "shows what the lab itself gives, and aioipsec against aioipsec shows our daemon",
            "with itself.",
            "",
        ]
        table(reference, kind=True)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="aioipsec interop",
        description="Run interop scenarios against strongSwan's charon in network namespaces "
        "(needs root, strongSwan 5.9 with kernel-libipsec, tcpdump, tshark, iperf3).",
    )
    parser.add_argument("scenario", nargs="*", help="row names to run (see --list)")
    parser.add_argument("--all", action="store_true", help="run every row")
    parser.add_argument("-k", dest="pattern", default="", help="rows whose name contains this")
    parser.add_argument("--list", action="store_true", help="list the rows and exit")
    parser.add_argument("--keep", action="store_true", help="keep /tmp/aioipsec-mx-* (logs)")
    parser.add_argument("-j", "--jobs", type=int, default=1, help="rows run at once")
    parser.add_argument(
        "--markdown", type=Path, metavar="FILE", help="write the table (docs/interop.md)"
    )
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
    every: list[Row] = [*MATRIX, *SCRIPTED]
    known = {s.name: s for s in every}
    unknown = [name for name in args.scenario if name not in known]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; see --list")
    if args.scenario:
        rows: list[Row] = [known[name] for name in args.scenario]
    else:
        rows = [s for s in known.values() if args.pattern in s.name]
    if args.list:
        for scenario in rows:
            print(scenario.name)
        return 0
    if not (args.scenario or args.all or args.pattern):
        parser.error("name a scenario, or --all, -k PATTERN or --list")
    if args.iperf > 0:
        rows = [
            dataclasses.replace(s, iperf_seconds=args.iperf) if isinstance(s, Scenario) else s
            for s in rows
        ]
    if os.geteuid() != 0:
        parser.error("needs root (network namespaces)")
    failures = 0
    results: list[RowResult] = []
    keep = args.keep or args.key_debug
    begun = time.monotonic()
    print(f"{'scenario':<44} {'result':<6} {'establish':>10} {'ping':>6} {'rtt avg':>9}")
    sys.stdout.flush()
    for result in run_rows(rows, jobs=args.jobs, keep=keep, key_debug=args.key_debug):
        results.append(result)
        scenario, run, error, workdir, seconds = result
        problems = [error] if run is None else run.problems
        ok = not problems
        failures += not ok
        establish = (
            f"{run.establish_seconds * 1000:.0f} ms" if run and run.establish_seconds else ""
        )
        ping = f"{run.ping.received}/{run.ping.transmitted}" if run and run.ping else ""
        rtt = f"{run.ping.rtt_avg_ms} ms" if run and run.ping and run.ping.rtt_avg_ms else ""
        print(f"{scenario.name:<44} {'ok' if ok else 'FAIL':<6} {establish:>10} {ping:>6} {rtt:>9}")
        if negotiated(run):
            print(f"    negotiated: {negotiated(run)}")
        for problem in problems:
            print(f"    {problem.splitlines()[0][:200]}")
        for detail in run.details if run else []:  # what a scripted row checked
            print(f"    {detail}")
        for note in run.notes if run else []:
            print(f"    note: {note[:300]}")
        if run and run.keepalives_seen is not None:
            print(f"    NAT-T keepalives from behind the NAT while idle: {run.keepalives_seen}")
        if run and run.iperf_mbps is not None:
            print(f"    iperf3: {run.iperf_mbps:.0f} Mbit/s, {run.iperf_retransmits} retransmits")
        for action, action_seconds in (run.action_seconds if run else {}).items():
            print(f"    {action}: {action_seconds * 1000:.0f} ms")
        if keep or not ok:
            print(f"    logs, wire.pcap, keys: {workdir} ({seconds:.1f} s)")
        sys.stdout.flush()
    total = time.monotonic() - begun
    print(f"{len(results) - failures}/{len(results)} rows passed in {total:.0f} s")
    if args.markdown:
        args.markdown.write_text(markdown(results, strongswan_version(), total))
        print(f"wrote {args.markdown}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
