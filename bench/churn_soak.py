"""Churn soak: IKE SAs created and deleted in waves against one aioipsec daemon (issue 20,
target 3), with ESP traffic on a sample of them.

    sudo .venv/bin/python -m bench.churn_soak [--total 10000] [--wave 500] [--minutes 10]
                                              [--sample 5] [--json FILE]

The generator of :mod:`bench.ike_load` (our sans-I/O engine as the initiator of every IKE
SA, over real UDP sockets from 32 addresses in a namespace of its own) opens WAVE IKE SAs
with one Child SA each, sends ESP packets (ICMP echo requests to the daemon's inner
address, encrypted with the Child SA's negotiated keys) on SAMPLE of them, then deletes
every IKE SA of the wave with an INFORMATIONAL Delete and waits until the daemon lists
none. Waves go on until TOTAL SAs were created and MINUTES have passed.

After every wave, with no SA left, it reads from the daemon: its resident memory (VmRSS),
its open file descriptors (/proc/PID/fd), its asyncio tasks and threads (``stats``, when
the daemon reports them), its log lines (total and at warning level or above) and the ESP
packets it decrypted. The figures: idle RSS per wave against its plateau (the median idle
RSS of the second half of the waves), the spread of descriptors, tasks and threads, log
lines per SA. ``tests/hardening/test_churn.py`` runs a few hundred SAs of the same code.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import struct
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aioipsec.netns import Lab, Namespace
from bench.ike_load import (
    GENERATOR_NET,
    PREFIX,
    RESPONDER_ADDRESS,
    RESPONDER_INNER,
    Generator,
    LoadSettings,
    responder_swanctl_conf,
)
from esp import EspSa
from ikev2.events import ChildSaEstablished, Event

INNER_SOURCE = "10.64.0.1"  # inside the generator's traffic selector (10.64.0.0/10)
INNER_DESTINATION = RESPONDER_INNER.split("/")[0]


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def icmp_echo(source: str, destination: str, ident: int, seq: int) -> bytes:
    """An IPv4 ICMP echo request (the inner packet of the sample's ESP traffic)."""
    icmp = struct.pack("!BBHHH", 8, 0, 0, ident & 0xFFFF, seq & 0xFFFF) + b"churn-soak" * 4
    icmp = icmp[:2] + struct.pack("!H", _checksum(icmp)) + icmp[4:]
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), 0, 0x4000, 64, 1, 0,
        socket.inet_aton(source), socket.inet_aton(destination),
    )  # fmt: skip
    header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
    return header + icmp


class ChurnGenerator(Generator):
    """The load generator, keeping each Child SA's keys and noticing deletions."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.children: dict[int, ChildSaEstablished] = {}
        self.deleted: set[int] = set()
        next_event = self.dispatcher.next_event

        def spy() -> Event | None:
            event = next_event()
            if isinstance(event, ChildSaEstablished):
                self.children[event.ike_sa_id] = event
            return event

        self.dispatcher.next_event = spy  # type: ignore[method-assign]  # spy on the events

    def _finish(self, ike_sa_id: int, ok: bool, now: float) -> None:
        if not ok and ike_sa_id in self.completed:
            self.deleted.add(ike_sa_id)  # an established SA's end: our Delete was answered
        super()._finish(ike_sa_id, ok, now)


@dataclass
class Wave:
    n: int
    created: int
    failed: int
    deleted: int
    create_s: float
    delete_s: float
    rss_peak_kib: int
    rss_idle_kib: int
    fds: int
    tasks: int | None
    threads: int
    log_lines: int
    log_warnings: int
    esp_sent: int
    esp_decrypted: int
    daemon_ike_sas_after: int


@dataclass
class Soak:
    waves: list[Wave] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        waves = self.waves
        if not waves:
            return {}
        second_half = waves[len(waves) // 2 :]
        plateau = statistics.median(w.rss_idle_kib for w in second_half)
        last = waves[-1].rss_idle_kib
        created = sum(w.created for w in waves)
        log_lines = waves[-1].log_lines
        return {
            "waves": len(waves),
            "sas_created": created,
            "sas_failed": sum(w.failed for w in waves),
            "sas_deleted": sum(w.deleted for w in waves),
            "minutes": round(self.seconds / 60, 1),
            "rss_idle_first_kib": waves[0].rss_idle_kib,
            "rss_idle_plateau_kib": plateau,
            "rss_idle_last_kib": last,
            "rss_last_vs_plateau_pct": round(100 * (last - plateau) / plateau, 2),
            "rss_peak_max_kib": max(w.rss_peak_kib for w in waves),
            "fds": sorted({w.fds for w in waves}),
            "tasks": sorted({w.tasks for w in waves if w.tasks is not None}),
            "threads": sorted({w.threads for w in waves}),
            "log_lines": log_lines,
            "log_lines_per_sa": round(log_lines / created, 2) if created else None,
            "log_warnings": waves[-1].log_warnings,
            "esp_sent": sum(w.esp_sent for w in waves),
            "esp_decrypted": sum(w.esp_decrypted for w in waves),
            "daemon_ike_sas_after_each_wave": sorted({w.daemon_ike_sas_after for w in waves}),
        }


def _proc(pid: int) -> tuple[int, int, int]:
    rss = threads = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
        elif line.startswith("Threads:"):
            threads = int(line.split()[1])
    return rss, len(os.listdir(f"/proc/{pid}/fd")), threads


def _log_counts(path: Path) -> tuple[int, int]:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return 0, 0
    # The global log budget's own notice ("log lines suppressed ...", every 10 s at most)
    # is the budget doing its work, not a problem: counted apart by the caller.
    noisy = sum(
        1
        for line in lines
        if any(f"[{w}" in line for w in ("warn", "error", "crit")) and "log budget" not in line
    )
    return len(lines), noisy


def _esp_decrypted(stats: dict[str, Any]) -> int:
    esp = stats.get("esp") or {}
    for key in ("packets-in", "packets_in"):
        if key in esp:
            return int(esp[key])
    return 0


class Churn:
    def __init__(self, lab: Lab, workdir: Path, wave: int, sample: int, log_level: str) -> None:
        from bench.netbench import QuietAioipsecPeer

        self.generator_ns: Namespace = lab.namespace("g")
        self.responder_ns = lab.namespace("r")
        first = GENERATOR_NET.format(1, 1)
        generator_if, _ = lab.veth(
            self.generator_ns, f"{first}/{PREFIX}", self.responder_ns,
            f"{RESPONDER_ADDRESS}/{PREFIX}",
        )  # fmt: skip
        self.settings = LoadSettings(window=16, retransmit_timeout=1.0, drain_seconds=30.0)
        addresses = [GENERATOR_NET.format(1 + i // 250, 1 + i % 250) for i in range(32)]
        for address in addresses[1:]:
            self.generator_ns.add_address(generator_if, f"{address}/{PREFIX}")
        self.responder_ns.add_address("lo", RESPONDER_INNER)
        self.responder_ns.sh(
            " ".join(f"ping -c1 -W1 {a} >/dev/null &" for a in addresses) + " wait", check=False
        )
        self.daemon = QuietAioipsecPeer(lab, self.responder_ns, workdir / "daemon", log_level)
        self.daemon.load(responder_swanctl_conf())
        self.pid = int(self.daemon.call("stats")["pid"])
        with self.generator_ns.entered():
            self.generator = ChurnGenerator(addresses, RESPONDER_ADDRESS, self.settings)
            self.esp_socket = socket.socket(socket.AF_INET, socket.SOCK_RAW, 50)
        self.wave_size = wave
        self.sample = sample

    def close(self) -> None:
        self.generator.close()
        self.esp_socket.close()
        self.daemon.stop()

    def _daemon_ike_sas(self) -> int:
        return int(self.daemon.call("stats")["ike-sas"])

    def _send_sample(self, ids: list[int], packets: int = 20) -> int:
        sent = 0
        for ike_sa_id in ids[: self.sample]:
            child = self.generator.children.get(ike_sa_id)
            if child is None or child.encr is None:
                continue
            sa = EspSa(child.spi_out, "out", child.encr, child.encr_key_out, child.integ or 0,
                       child.integ_key_out)  # fmt: skip
            for seq in range(packets):
                inner = icmp_echo(INNER_SOURCE, INNER_DESTINATION, ike_sa_id, seq)
                self.esp_socket.sendto(sa.encrypt(inner, 4), (RESPONDER_ADDRESS, 0))
                sent += 1
        return sent

    def wave(self, n: int) -> Wave:
        generator = self.generator
        before = set(generator.completed)
        failed_before = len(generator.failed)
        begin = time.monotonic()
        generator.run_step(None, 3600.0, count=self.wave_size)
        create_s = time.monotonic() - begin
        ids = [i for i in generator.completed if i not in before]
        stats = self.daemon.call("stats")
        decrypted_before = _esp_decrypted(stats)
        esp_sent = self._send_sample(ids)
        time.sleep(0.5)
        rss_peak, _, _ = _proc(self.pid)
        decrypted = _esp_decrypted(self.daemon.call("stats")) - decrypted_before
        begin = time.monotonic()
        now = time.time()
        for ike_sa_id in ids:
            generator.dispatcher.terminate_ike(ike_sa_id, now)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not all(i in generator.deleted for i in ids):
            generator.poll(0.05)
        while time.monotonic() < deadline and self._daemon_ike_sas():
            generator.poll(0.2)
        delete_s = time.monotonic() - begin
        time.sleep(1.0)  # the daemon's once-a-second sweeps (counters, expiry) run once more
        stats = self.daemon.call("stats")
        # The daemon closes our control connection after answering: let it, before counting.
        time.sleep(0.3)
        rss, fds, threads = _proc(self.pid)
        lines, warnings = _log_counts(self.daemon.log_path)
        return Wave(
            n=n, created=len(ids), failed=len(generator.failed) - failed_before,
            deleted=sum(1 for i in ids if i in generator.deleted),
            create_s=round(create_s, 1), delete_s=round(delete_s, 1), rss_peak_kib=rss_peak,
            rss_idle_kib=rss, fds=fds, tasks=stats.get("tasks"), threads=threads,
            log_lines=lines, log_warnings=warnings, esp_sent=esp_sent, esp_decrypted=decrypted,
            daemon_ike_sas_after=int(stats["ike-sas"]),
        )  # fmt: skip


def run_soak(
    lab: Lab, workdir: Path, *, total: int, wave: int, minutes: float, sample: int = 5,
    log_level: str = "info", progress: Any = None,
) -> Soak:  # fmt: skip
    churn = Churn(lab, workdir, wave, sample, log_level)
    soak = Soak()
    begin = time.monotonic()
    try:
        n = 0
        while sum(w.created for w in soak.waves) < total or time.monotonic() - begin < minutes * 60:
            n += 1
            soak.waves.append(churn.wave(n))
            if progress:
                progress(soak.waves[-1])
        soak.seconds = time.monotonic() - begin
    finally:
        churn.close()
    return soak


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.churn_soak", description=__doc__)
    parser.add_argument("--total", type=int, default=10000, help="at least this many IKE SAs")
    parser.add_argument("--wave", type=int, default=500, help="IKE SAs per wave")
    parser.add_argument("--minutes", type=float, default=10.0, help="and at least this long")
    parser.add_argument("--sample", type=int, default=5, help="SAs per wave carrying ESP")
    parser.add_argument("--log-level", default="info", help="the daemon's (default info)")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="churn-") as tmp, Lab("churn") as lab:
        soak = run_soak(
            lab, Path(tmp), total=args.total, wave=args.wave, minutes=args.minutes,
            sample=args.sample, log_level=args.log_level,
            progress=lambda w: print(json.dumps(w.__dict__), flush=True),
        )  # fmt: skip
    summary = soak.summary()
    print(json.dumps(summary, indent=1))
    if args.json:
        Path(args.json).write_text(
            json.dumps({"summary": summary, "waves": [w.__dict__ for w in soak.waves]}, indent=1)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
