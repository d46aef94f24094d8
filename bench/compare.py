"""``make bench``: strongSwan and aioipsec side by side on this machine, in one run.

    python -m bench.compare [--rounds 3] [--tcp-seconds 5] [--ike] [--latency] [--profile]
                            [--out docs/performance.md] [--chart docs/images/performance.png]
    python -m bench.compare --from-json bench/results/latest.json   # re-render only

Each round measures every stack once, in the same order (strongswan, aioipsec, mixed, plain:
the stacks alternate A B C D A B C D ...), so that drifts of a shared machine hit all of them
alike; the report gives the median and the spread (min-max) over the rounds and the ratio of
aioipsec to strongSwan *per round*. See :mod:`bench.netbench` for what one stack measures and
:mod:`bench.ike_load` for the control-plane part (``--ike``). ``--profile`` samples our
daemon with py-spy during a TCP run and puts the hottest functions into the report.

The raw figures go to ``bench/results/latest.json`` (the report can be re-rendered from it).
Needs root, iperf3, strongSwan (see docs/daemon.md, "strongSwan's charon beside aioipsec")
and, for the chart, matplotlib (the ``bench`` extra).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.netbench import STACKS, Settings, StackRun, measure_stack

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "docs" / "performance.md"
DEFAULT_CHART = REPO / "docs" / "images" / "performance.png"
DEFAULT_JSON = REPO / "bench" / "results" / "latest.json"
TCP_TESTS = ((1, False), (1, True), (4, False), (4, True))
TARGET_TCP_RATIO = 3.0
TARGET_WIREGUARD_RATIO = 1.5  # issue 17: TCP against wireguard-go
TARGET_CPU_PER_GB = 3.0  # issue 17: CPU seconds per GB per daemon


# --- statistics -------------------------------------------------------------------------------


def spread(values: Sequence[float | None]) -> tuple[float, float, float] | None:
    """(median, min, max) of the values that exist, None when there are none."""
    present = [v for v in values if v is not None]
    if not present:
        return None
    return statistics.median(present), min(present), max(present)


def fmt_spread(values: Sequence[float | None], digits: int = 0, unit: str = "") -> str:
    result = spread(values)
    if result is None:
        return "n/a"
    median, low, high = result
    if len([v for v in values if v is not None]) == 1:
        return f"{median:,.{digits}f}{unit}"
    return f"{median:,.{digits}f}{unit} ({low:,.{digits}f}-{high:,.{digits}f})"


def by_stack(runs: Sequence[StackRun]) -> dict[str, list[StackRun]]:
    grouped: dict[str, list[StackRun]] = {}
    for run in runs:
        grouped.setdefault(run.stack, []).append(run)
    return grouped


def round_ratios(
    runs: Sequence[StackRun], numerator: str, denominator: str, metric: Callable[[StackRun], Any]
) -> list[float | None]:
    """metric(numerator) / metric(denominator) in each round where both were measured."""
    rounds: dict[int, dict[str, StackRun]] = {}
    for run in runs:
        rounds.setdefault(run.round, {})[run.stack] = run
    ratios: list[float | None] = []
    for number in sorted(rounds):
        pair = rounds[number]
        if numerator in pair and denominator in pair:
            top, bottom = metric(pair[numerator]), metric(pair[denominator])
            ratios.append(top / bottom if top is not None and bottom else None)
    return ratios


def tcp_metric(streams: int, reverse: bool) -> Callable[[StackRun], float | None]:
    return lambda run: run.tcp_mbit(streams, reverse)


def cpu_per_gb(run: StackRun, side: str) -> float | None:
    """CPU seconds per GB of the side's daemon, over all TCP runs of the round."""
    cpu = 0.0
    moved = 0
    for result in run.tcp:
        value = result.cpu_initiator_s if side == "initiator" else result.cpu_responder_s
        if value is None:
            return None
        cpu += value
        moved += result.bytes
    return cpu / (moved / 1e9) if moved else None


def udp_best(run: StackRun, size: int) -> float | None:
    for result in run.udp:
        if result.packet_size == size:
            return result.best_pps
    return None


# --- machine ----------------------------------------------------------------------------------


def machine_description() -> dict[str, str]:
    def first_line(argv: list[str]) -> str:
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
        except OSError:
            return "n/a"
        text = (out.stdout or out.stderr).strip().splitlines()
        return text[0] if text else "n/a"

    model = "n/a"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": f"{os.cpu_count()} x {model}",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "strongswan": first_line(["/usr/lib/ipsec/charon", "--version"]),
        "iperf3": first_line(["iperf3", "--version"]),
    }


# --- profile ----------------------------------------------------------------------------------


def profile_daemon(settings: Settings, workdir: Path, seconds: float) -> dict[str, Any]:
    """py-spy samples of both aioipsec daemons (initiator = sender, responder = receiver)
    during a 1-stream TCP run i->r, and the CPU share each daemon used meanwhile.

    Returns {"mbit_per_s": x, "sides": {side: {"self": [(function, share)], "total": [...],
    "samples": n, "cpu_share": fraction of one core}}} or {"error": text}."""
    from aioipsec.netns import Lab
    from bench.netbench import Tunnel

    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(py_spy).exists():
        return {"error": "py-spy is not installed (pip install py-spy)"}
    workdir.mkdir(parents=True, exist_ok=True)
    sides = ("initiator", "responder")
    with Lab("bprof") as lab:
        tunnel = Tunnel(lab, "aioipsec", workdir, settings)
        tunnel.up()
        with tunnel.iperf_server():
            recorders = {
                side: subprocess.Popen(
                    [
                        py_spy,
                        "record",
                        "--nonblocking",
                        "-r",
                        "250",
                        "-d",
                        f"{seconds:g}",
                        "-f",
                        "raw",
                        "-o",
                        str(workdir / f"profile-{side}.txt"),
                        "-p",
                        str(tunnel.pgids[side]),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                for side in sides
            }
            time.sleep(0.5)
            tunnel.settings = Settings(**{**settings.__dict__, "tcp_seconds": seconds})
            tcp = tunnel.tcp(1, False)
            errors = {
                side: recorder.communicate(timeout=seconds + 30)[1]
                for side, recorder in recorders.items()
            }
    result: dict[str, Any] = {"mbit_per_s": tcp.mbit_per_s, "sides": {}}
    cpu = {"initiator": tcp.cpu_initiator_s, "responder": tcp.cpu_responder_s}
    for side in sides:
        raw = workdir / f"profile-{side}.txt"
        if not raw.exists():
            return {"error": f"py-spy wrote nothing for the {side}: {errors[side][-300:]}"}
        summary = summarise_collapsed(raw.read_text())
        summary["cpu_share"] = (cpu[side] or 0.0) / max(1, round(seconds))
        result["sides"][side] = summary
    return result


def summarise_collapsed(text: str, top: int = 15) -> dict[str, Any]:
    """Self and inclusive shares per function from collapsed stacks ("a;b;c COUNT" lines)."""
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [_short_frame(frame) for frame in stack.split(";")]
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count
    if not total:
        return {"self": [], "total": [], "samples": 0}

    def ranked(table: dict[str, int]) -> list[tuple[str, float]]:
        ordered = sorted(table.items(), key=lambda item: -item[1])[:top]
        return [(name, count / total) for name, count in ordered]

    # The event loop and the program's entry frames are on every stack: not informative.
    specific = {name: count for name, count in inclusive.items() if not _generic_frame(name)}
    return {"self": ranked(own), "total": ranked(specific), "samples": total}


def _generic_frame(name: str) -> bool:
    return "(asyncio/" in name or "(<frozen" in name or name.startswith(("<module> (", "main ("))


def _short_frame(frame: str) -> str:
    """'encrypt_into (esp/sa.py:123)' -> 'encrypt_into (esp/sa.py)'; paths made relative."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path = where.rsplit(":", 1)[0]
    for prefix in (str(REPO) + "/", "/usr/lib/python3.11/"):
        path = path.removeprefix(prefix)
    if "site-packages/" in path:
        path = path.split("site-packages/", 1)[1]
    return f"{name} ({path})" if path else name


# --- report -----------------------------------------------------------------------------------


def render_report(data: dict[str, Any], chart_name: str | None) -> str:
    runs = [StackRun.from_json(item) for item in data["runs"]]
    grouped = by_stack(runs)
    stacks = [s for s in STACKS if s in grouped]
    settings = data["settings"]
    lines: list[str] = []
    add = lines.append
    add("# Performance: aioipsec next to strongSwan on one machine")
    add("")
    add(
        f"Generated by `{data['command']}` on {data['date']} "
        f"({data['rounds']} rounds, {data['elapsed_minutes']:.0f} min). Do not edit by hand: "
        "run it again."
    )
    add("")
    machine = data["machine"]
    add(
        f"Machine: {machine['cpus']}, Linux {machine['kernel']}, Python {machine['python']}, "
        f"{machine['strongswan']}, {machine['iperf3']}."
    )
    add("")
    add(
        "Set-up: two network namespaces joined by a veth pair; IKE aes256gcm16-prfsha256-x25519 "
        "with PSK, ESP aes256gcm16 in UDP on port 4500 on every stack (kernel-libipsec always "
        "encapsulates; our daemon is configured with `encap = yes`), inner MTU 1400 on both "
        "TUN devices (and on the plain route). Stacks, initiator <-> responder:"
    )
    add("")
    add("- **strongswan**: charon + kernel-libipsec on both ends (the baseline);")
    add("- **aioipsec**: our daemon on both ends (`[daemon] workers = 1`, the default);")
    if "aioipsec-w2" in grouped:
        add(
            "- **aioipsec-w2**: the same with `[daemon] workers = 2` on both ends (the outbound "
            "direction in an encrypt worker process: aioipsec.runtime.workers);"
        )
    add("- **mixed**: our daemon (initiator) <-> charon + kernel-libipsec (responder);")
    if "wireguard-go" in grouped:
        add(
            "- **wireguard-go**: Debian's userspace WireGuard on both ends (no IKE; "
            "ChaCha20-Poly1305; what a user who wants a userspace VPN would pick instead);"
        )
    add("- **plain**: no IPsec, the inner subnets routed over the veth (the ceiling).")
    add("")
    add(
        "Each round runs every stack once in this order, so the stacks alternate "
        "(A B C D A B C D ...); figures are the **median (min-max)** over the rounds. "
        f"iperf3 TCP runs last {settings['tcp_seconds']:g} s; `i->r` is initiator to "
        "responder, `r->i` the reverse (`iperf3 -R`). "
        + (
            "UDP: `bench.udpgen` (a UDP GSO sender, up to 64 datagrams per `sendmsg`, and "
            "a UDP GRO receiver) at doubling rates from "
            f"{settings.get('udp_start_pps', 20000):,} packets/s "
            f"({settings['udp_step_seconds']:g} s steps) until the loss passes "
            f"{settings['loss_limit_percent']:g} %, then bisection to 5 %; the figure is the "
            "highest received rate of a step within the limit. "
            if settings.get("udp_growth", 0) >= 2
            else "UDP: iperf3 at rising packet rates "
            f"(x{settings['udp_growth']:g} per {settings['udp_step_seconds']:g} s step) until "
            f"the loss passes {settings['loss_limit_percent']:g} %; the figure is the highest "
            "received rate of a step within the limit. "
        )
        + "CPU: utime + stime of each daemon's process group from `/proc/PID/stat` (all "
        "threads and processes), over all TCP runs, per GB received."
    )
    add("")
    if chart_name:
        add(f"![Throughput, packet rate, RTT and CPU per GB](images/{chart_name})")
        add("")

    add("## TCP throughput (Mbit/s)")
    add("")
    add("| stack | 1 stream i->r | 1 stream r->i | 4 streams i->r | 4 streams r->i |")
    add("| --- | --- | --- | --- | --- |")
    for stack in stacks:
        cells = [fmt_spread([r.tcp_mbit(n, rev) for r in grouped[stack]]) for n, rev in TCP_TESTS]
        add(f"| {stack} | " + " | ".join(cells) + " |")
    add("")
    add("Ratios to strongSwan <-> strongSwan, per round (the same round's baseline):")
    add("")
    add("| ratio | 1 stream i->r | 1 stream r->i | 4 streams i->r | 4 streams r->i |")
    add("| --- | --- | --- | --- | --- |")
    for stack in stacks:
        if stack == "strongswan":
            continue
        cells = []
        for n, rev in TCP_TESTS:
            ratios = round_ratios(runs, stack, "strongswan", tcp_metric(n, rev))
            per_round = ", ".join("n/a" if r is None else f"{r:.2f}" for r in ratios)
            cells.append(f"{fmt_spread(ratios, 2, 'x')} [{per_round}]")
        add(f"| {stack} / strongswan | " + " | ".join(cells) + " |")
    for numerator, denominator, label in (
        ("aioipsec", "wireguard-go", "aioipsec / wireguard-go"),
        ("aioipsec-w2", "aioipsec", "workers = 2 / workers = 1 (aioipsec-w2 / aioipsec)"),
    ):
        if numerator not in grouped or denominator not in grouped:
            continue
        cells = []
        for n, rev in TCP_TESTS:
            ratios = round_ratios(runs, numerator, denominator, tcp_metric(n, rev))
            per_round = ", ".join("n/a" if r is None else f"{r:.2f}" for r in ratios)
            cells.append(f"{fmt_spread(ratios, 2, 'x')} [{per_round}]")
        add(f"| {label} | " + " | ".join(cells) + " |")
    add("")
    busy = [t.machine_busy for r in runs if r.stack == "aioipsec" for t in r.tcp
            if t.streams == 1 and not t.reverse and t.machine_busy is not None]  # fmt: skip
    if busy:
        add(
            f"During the aioipsec 1-stream i->r runs the machine's cores were "
            f"{statistics.median(busy):.0%} busy (median; /proc/stat): the room a "
            "data-plane worker process could use."
        )
        add("")

    add("## UDP packet rate at <= {:g} % loss (packets/s, initiator -> responder)".format(
        settings["loss_limit_percent"]
    ))  # fmt: skip
    add("")
    sizes = settings["udp_packet_sizes"]
    add("| stack | " + " | ".join(f"{s}-octet packets" for s in sizes) + " |")
    add("| --- | " + " | ".join("---" for _ in sizes) + " |")
    limited = False
    for stack in stacks:
        cells = []
        for size in sizes:
            cell = fmt_spread([udp_best(r, size) for r in grouped[stack]])
            if any(u.generator_limited for r in grouped[stack] for u in r.udp
                   if u.packet_size == size):  # fmt: skip
                cell += " (s)"
                limited = True
            cells.append(cell)
        add(f"| {stack} | " + " | ".join(cells) + " |")
    add("")
    if limited:
        add("(s): in some round the sender could not offer more: the generator's limit there.")
        add("")

    add("## Latency and CPU")
    add("")
    add(
        "| stack | ping RTT idle (ms) | ping RTT under load (ms) | pings lost under load | "
        "CPU s/GB initiator | CPU s/GB responder | tunnel set-up (ms) |"
    )
    add("| --- | --- | --- | --- | --- | --- | --- |")
    for stack in stacks:
        group = grouped[stack]
        establish = [
            r.establish_seconds * 1000 if r.establish_seconds is not None else None for r in group
        ]
        add(
            f"| {stack} | {fmt_spread([r.ping_idle_ms for r in group], 3)} "
            f"| {fmt_spread([r.ping_load_ms for r in group], 2)} "
            f"| {sum(r.ping_load_lost for r in group)} "
            f"| {fmt_spread([cpu_per_gb(r, 'initiator') for r in group], 1)} "
            f"| {fmt_spread([cpu_per_gb(r, 'responder') for r in group], 1)} "
            f"| {fmt_spread(establish, 0)} |"
        )
    add("")
    add(
        "Ping under load: one ping every 0.1 s beside the 1-stream TCP run (i->r). "
        "Tunnel set-up: from the initiate command to both sides listing the Child SA as "
        "INSTALLED (polling every 50 ms, so a resolution of about 50 ms)."
    )
    add("")
    lines.extend(render_cpu_per_process(grouped, stacks))

    problems = [(r.stack, r.round, p) for r in runs for p in r.problems]
    if problems:
        add("Problems seen during the run:")
        add("")
        for stack, number, problem in problems:
            add(f"- {stack}, round {number}: {problem.splitlines()[0][:200]}")
        add("")

    if data.get("latency"):
        from bench.latency import render_section

        lines.extend(render_section(data["latency"]))

    if data.get("ike"):
        from bench.ike_load import render_ike_section

        lines.extend(render_ike_section(data["ike"]))

    if data.get("profile"):
        lines.extend(render_profile(data["profile"]))

    lines.extend(render_targets(data, runs))
    if data.get("notes"):
        add("## Notes")
        add("")
        lines.extend(data["notes"])
        add("")
    return "\n".join(lines).rstrip() + "\n"


def cpu_per_gb_by_role(run: StackRun, side: str) -> dict[str, float]:
    """CPU seconds per GB of each process (by role) of the side's daemon, over all TCP runs
    of the round (runs of older files without the split count as one "daemon")."""
    cpu: dict[str, float] = {}
    moved = 0
    for result in run.tcp:
        roles = result.cpu_processes.get(side)
        if roles is None:
            whole = result.cpu_initiator_s if side == "initiator" else result.cpu_responder_s
            roles = {"daemon": whole} if whole is not None else {}
        for role, seconds in roles.items():
            cpu[role] = cpu.get(role, 0.0) + seconds
        moved += result.bytes
    return {role: seconds / (moved / 1e9) for role, seconds in cpu.items()} if moved else {}


def render_cpu_per_process(grouped: dict[str, list[StackRun]], stacks: list[str]) -> list[str]:
    """Issue 17: CPU per GB per process (with workers = 2 the daemon and its encrypt worker
    are separate processes; the target of 3 s per GB is per daemon, all its processes)."""
    lines = ["### CPU per GB per process", ""]
    lines.append(
        "CPU seconds per GB received over all TCP runs of a round, for each process of each "
        "side (median (min-max) over the rounds). `daemon`: our daemon's main process; "
        "`worker`: its encrypt worker (`[daemon] workers = 2`); charon and wireguard-go are "
        "one process each (all threads)."
    )
    lines.append("")
    lines.append("| stack | side | process | CPU s/GB |")
    lines.append("| --- | --- | --- | --- |")
    for stack in stacks:
        if stack == "plain":
            continue
        for side in ("initiator", "responder"):
            per_round = [cpu_per_gb_by_role(r, side) for r in grouped[stack]]
            roles = sorted({role for figures in per_round for role in figures})
            for role in roles:
                values = [figures.get(role) for figures in per_round]
                lines.append(f"| {stack} | {side} | {role} | {fmt_spread(values, 2)} |")
    lines.append("")
    return lines


def render_profile(profile: dict[str, Any]) -> list[str]:
    lines = ["## Where our data plane spends its time (py-spy)", ""]
    if "error" in profile:
        return [*lines, f"No profile: {profile['error']}", ""]
    lines.append(
        f"py-spy at 250 samples/s on both daemons during a 1-stream TCP run i->r at "
        f"{profile['mbit_per_s']:.0f} Mbit/s. `self`: samples in the function itself; "
        "`total`: samples with the function anywhere on the stack. Samples are wall-clock "
        "(py-spy's default): time the event loop waits in epoll is in `select`."
    )
    lines.append("")
    sides = profile.get("sides") or {"initiator": profile}  # older files: the sender only
    for side, summary in sides.items():
        role = "sender" if side == "initiator" else "receiver"
        share = summary.get("cpu_share")
        used = f"; the daemon used {share:.0%} of one core during the run" if share else ""
        lines.append(f"**{side} ({role})**: {summary['samples']} samples{used}.")
        lines.append("")
        lines.append("| self | function | | total | function |")
        lines.append("| --- | --- | --- | --- | --- |")
        for (own_name, own_share), (all_name, all_share) in zip(
            summary["self"], summary["total"], strict=False
        ):
            lines.append(f"| {own_share:.1%} | `{own_name}` | | {all_share:.1%} | `{all_name}` |")
        lines.append("")
    return lines


def _rtt_target(grouped: dict[str, list[StackRun]], other: str, whose: str) -> list[str]:
    if "aioipsec" not in grouped or other not in grouped:
        return []
    ours = spread([r.ping_idle_ms for r in grouped["aioipsec"]])
    theirs = spread([r.ping_idle_ms for r in grouped[other]])
    if not (ours and theirs):
        return []
    return [
        f"- Ping RTT no higher than {whose}: "
        f"{'met' if ours[0] <= theirs[0] else '**not met**'} "
        f"(idle median {ours[0]:.3f} ms vs {theirs[0]:.3f} ms)."
    ]


def render_targets(data: dict[str, Any], runs: list[StackRun]) -> list[str]:
    lines = ["## Targets", ""]
    ours = round_ratios(runs, "aioipsec", "strongswan", tcp_metric(1, False))
    ours4 = round_ratios(runs, "aioipsec", "strongswan", tcp_metric(4, False))
    median = spread(ours)
    verdict = "n/a"
    if median is not None:
        verdict = "met" if median[0] >= TARGET_TCP_RATIO else "**not met**"
    lines.append(
        f"- aioipsec <-> aioipsec TCP throughput >= {TARGET_TCP_RATIO:g}x strongSwan <-> "
        f"strongSwan: {verdict}; 1 stream i->r {fmt_spread(ours, 2, 'x')}, "
        f"4 streams i->r {fmt_spread(ours4, 2, 'x')}."
    )
    mixed = [
        r
        for n, rev in TCP_TESTS
        for r in round_ratios(runs, "mixed", "strongswan", tcp_metric(n, rev))
        if r is not None
    ]
    if mixed:
        worst = min(mixed)
        lines.append(
            f"- aioipsec <-> strongSwan no slower than strongSwan <-> strongSwan: "
            f"{'met' if statistics.median(mixed) >= 1.0 else '**not met**'} (median ratio over "
            f"all TCP tests and rounds {statistics.median(mixed):.2f}x, lowest {worst:.2f}x)."
        )
    grouped = by_stack(runs)
    lines.extend(_rtt_target(grouped, "strongswan", "strongSwan's"))
    if "aioipsec" in grouped and "wireguard-go" in grouped:
        versus = round_ratios(runs, "aioipsec", "wireguard-go", tcp_metric(1, False))
        middle = spread(versus)
        if middle is not None:
            lines.append(
                f"- TCP throughput >= {TARGET_WIREGUARD_RATIO:g}x wireguard-go's: "
                f"{'met' if middle[0] >= TARGET_WIREGUARD_RATIO else '**not met**'}; "
                f"1 stream i->r {fmt_spread(versus, 2, 'x')}."
            )
    lines.extend(_rtt_target(grouped, "wireguard-go", "wireguard-go's"))
    if "aioipsec" in grouped:
        cpu = [
            cpu_per_gb(r, side) for r in grouped["aioipsec"] for side in ("initiator", "responder")
        ]
        middle = spread(cpu)
        if middle is not None:
            lines.append(
                f"- CPU per GB <= {TARGET_CPU_PER_GB:g} s per daemon: "
                f"{'met' if middle[0] <= TARGET_CPU_PER_GB else '**not met**'} "
                f"({fmt_spread(cpu, 1)} s, both daemons, every round)."
            )
    if data.get("latency"):
        from bench.latency import target_lines as latency_targets

        lines.extend(latency_targets(data["latency"]))
    if data.get("ike"):
        from bench.ike_load import target_lines

        lines.extend(target_lines(data["ike"]))
    lines.append("")
    return lines


# --- chart ------------------------------------------------------------------------------------


def render_chart(data: dict[str, Any], path: Path) -> bool:
    """Four panels: TCP Mbit/s, UDP packets/s, ping RTT, CPU s/GB. False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    runs = [StackRun.from_json(item) for item in data["runs"]]
    grouped = by_stack(runs)
    stacks = [s for s in STACKS if s in grouped]
    colours = {"strongswan": "#1f77b4", "aioipsec": "#d62728", "aioipsec-w2": "#ff9896",
               "mixed": "#9467bd",
               "wireguard-go": "#2ca02c",
               "plain": "#7f7f7f"}  # fmt: skip
    figure, axes = plt.subplots(2, 2, figsize=(12, 8.5))

    def bars(axis: Any, groups: list[str], values: Callable[[str, int], list[float | None]],
             title: str, ylabel: str, log: bool = False, only: Sequence[str] | None = None,
             ) -> None:  # fmt: skip
        shown = [s for s in stacks if only is None or s in only]
        width = 0.8 / max(1, len(shown))
        for index, stack in enumerate(shown):
            medians, low_err, high_err = [], [], []
            for group_index in range(len(groups)):
                result = spread(values(stack, group_index))
                if result is None:
                    medians.append(0.0)
                    low_err.append(0.0)
                    high_err.append(0.0)
                else:
                    medians.append(result[0])
                    low_err.append(result[0] - result[1])
                    high_err.append(result[2] - result[0])
            positions = [g + (index - (len(shown) - 1) / 2) * width for g in range(len(groups))]
            axis.bar(positions, medians, width, yerr=[low_err, high_err], capsize=3,
                     label=stack, color=colours.get(stack))  # fmt: skip
            for x, value in zip(positions, medians, strict=True):
                if value:
                    label = f"{value:,.0f}" if value >= 10 else f"{value:.2f}"
                    axis.annotate(label, (x, value), ha="center", va="bottom", fontsize=7,
                                  xytext=(0, 2), textcoords="offset points")  # fmt: skip
        axis.set_xticks(range(len(groups)))
        axis.set_xticklabels(groups)
        axis.set_title(title)
        axis.set_ylabel(ylabel)
        if log:
            axis.set_yscale("log")
        axis.grid(axis="y", alpha=0.3)

    tcp_groups = [f"{n} stream{'s' if n > 1 else ''} {'r->i' if rev else 'i->r'}"
                  for n, rev in TCP_TESTS]  # fmt: skip
    # Linear scale for the tunnels; the plain veth (~40x higher) goes into the title.
    plain = spread([r.tcp_mbit(1, False) for r in grouped.get("plain", [])])
    ceiling = f"; plain veth 1 stream: {plain[0]:,.0f} Mbit/s" if plain else ""
    bars(axes[0][0], tcp_groups,
         lambda s, g: [r.tcp_mbit(*TCP_TESTS[g]) for r in grouped[s]],
         f"iperf3 TCP (median, min-max bars{ceiling})", "Mbit/s",
         only=[s for s in stacks if s != "plain"])  # fmt: skip
    axes[0][0].legend(fontsize=8)
    sizes = data["settings"]["udp_packet_sizes"]
    bars(axes[0][1], [f"{s}-octet packets" for s in sizes],
         lambda s, g: [udp_best(r, sizes[g]) for r in grouped[s]],
         f"UDP rate at <= {data['settings']['loss_limit_percent']:g} % loss",
         "packets/s")  # fmt: skip
    axes[0][1].legend(fontsize=8)
    bars(axes[1][0], ["idle", "under TCP load"],
         lambda s, g: [r.ping_idle_ms if g == 0 else r.ping_load_ms for r in grouped[s]],
         "ping RTT through the tunnel", "ms")  # fmt: skip
    bars(axes[1][1], ["initiator", "responder"],
         lambda s, g: [cpu_per_gb(r, "initiator" if g == 0 else "responder")
                       for r in grouped[s]],
         "daemon CPU per GB received (TCP runs)", "CPU seconds / GB",
         only=[s for s in stacks if s != "plain"])  # fmt: skip
    figure.suptitle(f"aioipsec vs strongSwan kernel-libipsec, {data['date']} "
                    f"({data['rounds']} rounds)")  # fmt: skip
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return True


# --- main -------------------------------------------------------------------------------------


def run_rounds(
    stacks: Sequence[str],
    rounds: int,
    settings: Settings,
    workdir: Path,
    log: Callable[[str], None] = print,
) -> list[StackRun]:
    runs = []
    for number in range(1, rounds + 1):
        for stack in stacks:
            started = time.monotonic()
            run = measure_stack(stack, number, workdir / f"r{number}-{stack}", settings)
            runs.append(run)
            tcp = run.tcp_mbit(1, False)
            log(
                f"round {number} {stack:10s} {time.monotonic() - started:5.1f} s  "
                f"tcp1 i->r {tcp if tcp is None else round(tcp)} Mbit/s  "
                f"problems {len(run.problems)}"
            )
            for problem in run.problems:
                log(f"    {problem.splitlines()[0][:200]}")
    return runs


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__.split(
        "\n\n")[0])  # fmt: skip
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--stacks", default=",".join(STACKS))
    parser.add_argument("--tcp-seconds", type=float, default=Settings.tcp_seconds)
    parser.add_argument("--udp-step-seconds", type=float, default=3.0)
    parser.add_argument("--udp-max-steps", type=int, default=Settings.udp_max_steps)
    parser.add_argument("--ping-count", type=int, default=Settings.ping_count)
    parser.add_argument("--ike", action="store_true", help="also run bench.ike_load")
    parser.add_argument("--ike-scale", type=int, default=10000,
                        help="concurrent IKE SAs for the memory test (0: skip)")  # fmt: skip
    parser.add_argument("--profile", action="store_true", help="py-spy our daemon")
    parser.add_argument("--latency", action="store_true",
                        help="also run bench.latency (commands, initiate, idle ping)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--chart", type=Path, default=DEFAULT_CHART)
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    parser.add_argument("--from-json", type=Path, help="only render the report from this file")
    parser.add_argument(
        "--notes", type=Path, help="markdown appended to the report as its closing notes"
    )
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args(argv)

    if args.from_json:
        data = json.loads(args.from_json.read_text())
        if args.profile:  # add (or replace) the profile of an earlier run
            settings = Settings(**{
                k: tuple(v) if isinstance(v, list) else v for k, v in data["settings"].items()
            })  # fmt: skip
            workdir = args.workdir or Path(tempfile.mkdtemp(prefix="aioipsec-bench-"))
            data["profile"] = profile_daemon(settings, workdir / "profile", seconds=10.0)
            args.from_json.write_text(json.dumps(data, indent=1) + "\n")
    else:
        if os.geteuid() != 0:
            print("bench.compare needs root (network namespaces)", file=sys.stderr)
            return 2
        stacks = [s.strip() for s in args.stacks.split(",") if s.strip()]
        settings = Settings(
            tcp_seconds=args.tcp_seconds,
            udp_step_seconds=args.udp_step_seconds,
            udp_max_steps=args.udp_max_steps,
            ping_count=args.ping_count,
        )
        workdir = args.workdir or Path(tempfile.mkdtemp(prefix="aioipsec-bench-"))
        started = time.monotonic()
        runs = run_rounds(stacks, args.rounds, settings, workdir)
        data = {
            "command": "python -m bench.compare " + " ".join(argv or sys.argv[1:]),
            "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "rounds": args.rounds,
            "machine": machine_description(),
            "settings": settings.__dict__
            | {
                "tcp_streams": list(settings.tcp_streams),
                "udp_packet_sizes": list(settings.udp_packet_sizes),
            },
            "runs": [run.to_json() for run in runs],
        }
        if args.ike:
            from bench.ike_load import run_ike_comparison

            data["ike"] = run_ike_comparison(workdir / "ike", rounds=args.rounds,
                                             scale=args.ike_scale, log=print)  # fmt: skip
        if args.latency:
            from bench.latency import run_rounds as latency_rounds

            data["latency"] = latency_rounds(args.rounds, workdir / "latency", log=print)
        if args.profile:
            data["profile"] = profile_daemon(settings, workdir / "profile", seconds=10.0)
        data["elapsed_minutes"] = (time.monotonic() - started) / 60
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(data, indent=1) + "\n")
    if args.notes:
        data["notes"] = args.notes.read_text().rstrip("\n").splitlines()
    chart_ok = render_chart(data, args.chart)
    report = render_report(data, args.chart.name if chart_ok else None)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    print(f"wrote {args.out}" + (f" and {args.chart}" if chart_ok else " (no chart: matplotlib?)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
