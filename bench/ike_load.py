"""IKE set-up load generator: many IKE SAs (PSK + x25519, one Child SA each) against one
responder, from many source addresses and ports.

    python -m bench.ike_load [--responder aioipsec|charon] [--rates 25,50,100,200,400]
                             [--step-seconds 4] [--window 24] [--scale 10000]
    python -m bench.ike_load --base REV [--rounds 3] [--rates 100,200]   # A/B of our code

The generator is our own sans-I/O engine (``ikev2.Dispatcher``) as the initiator of every
IKE SA, driven by a plain ``selectors`` loop over non-blocking UDP sockets in a namespace of
its own: ``--sources`` addresses on its veth, ``--ports`` ephemeral source ports per address
plus port 4500 (charon with kernel-libipsec fakes a NAT, so IKE_AUTH moves to 4500; RFC 3948
non-ESP marker added and stripped here). New set-ups go to the source with the fewest SAs in
flight; at most ``--window`` are half-open at a time, below the responders' default COOKIE
threshold (charon's ``cookie_threshold`` = 30, ours the same), so what is measured is set-up
work, not the cookie round trip.

Each responder is measured once it is idle after its start and after ``warmup`` set-ups
that are not counted (the one-time costs of a first set-up are not the tail of a rate).
What it measures, for our daemon and for charon as the responder under the same generator:

* **open-loop rate steps**: set-ups started at a fixed rate for ``--step-seconds``; per
  step the completed rate, set-up time percentiles (first IKE_SA_INIT sent to the Child SA
  established) and the retransmissions (a datagram whose bytes were sent before; the
  generator retransmits after 1 s, then x1.8). The first step with a retransmission is
  "where retransmissions start";
* **closed-loop maximum**: ``--window`` set-ups always in flight, for ``--step-seconds``;
* **scale**: ``--scale`` concurrent IKE SAs established and kept, then the responder's
  resident memory (VmRSS of its process group) per tunnel, over its RSS before the first SA.

The generator needs CPU too (about 0.7 ms per set-up, see ``python -m bench.ike_setup``):
on a 2-core machine generator and responder share the cores, which caps both responders alike.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import gc
import json
import os
import selectors
import socket
import statistics
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aioipsec.gcpolicy import CollectorPolicy
from aioipsec.interop.charon import Charon, swanctl_section
from aioipsec.netns import Lab, Namespace
from bench.netbench import group_processes, process_group_cpu_seconds
from ikev2.config import AuthConfig, ChildConfig, IkeConfig
from ikev2.dispatcher import Dispatcher
from ikev2.events import (
    AuthenticationFailed,
    ChildSaEstablished,
    IkeSaDeleted,
    NegotiationFailed,
    PeerUnreachable,
)

RESPONDERS = ("aioipsec", "charon")
NAT_T_PORT = 4500
NON_ESP_MARKER = b"\x00\x00\x00\x00"
PSK = "aioipsec-ike-load-psk-0123456789abcdef"
RESPONDER_ADDRESS = "10.210.0.1"
GENERATOR_NET = "10.210.{}.{}"  # third/fourth octets from the source index
PREFIX = 16
GENERATOR_ID = "generator.example"
RESPONDER_ID = "responder.example"
# Every Child SA asks for the same selectors; they must not cover the generator's own
# addresses (10.210/16), or the responder routes its IKE replies into the tunnel.
GENERATOR_TS = "10.64.0.0/10"
RESPONDER_TS = "10.2.0.0/16"
RESPONDER_INNER = "10.2.0.1/32"
PROPOSAL = "aes256gcm16-prfsha256-x25519"
ESP_PROPOSAL = "aes256gcm16"
CONNECTION = "load"
PER_ADDRESS_IN_FLIGHT = 2
TIMER_CHECK_INTERVAL = 0.1


@dataclass
class LoadSettings:
    sources: int = 32
    ports_per_source: int = 4
    window: int = 16
    step_seconds: float = 4.0
    rates: tuple[float, ...] = (25, 50, 100, 200, 400)
    retransmit_timeout: float = 1.0
    drain_seconds: float = 15.0  # how long a step waits for its last set-ups
    # Set-ups made (and not counted) before the first step, once the responder is idle:
    # the first set-ups of a daemon pay one-time costs (our daemon answers its control
    # socket while it still imports its VICI part; first use of code paths).
    warmup: int = 8
    # Our responder from this source tree (an exported commit) instead of the checkout,
    # for A/B runs of two versions (as bench.ab does for the data plane).
    source_tree: str | None = None


@dataclass
class StepResult:
    offered_rate: float | None  # None: closed loop (window always full)
    started: int
    established: int
    failed: int
    retransmits: int
    seconds: float  # from the first start to the last completion
    setup_ms: dict[str, float] = field(default_factory=dict)  # p50/p90/p99/max
    # CPU seconds (utime + stime) of the responder's process group during the step: the
    # figure that moves least with the other load on a shared machine.
    responder_cpu_s: float | None = None

    @property
    def cpu_ms_per_setup(self) -> float | None:
        if self.responder_cpu_s is None or not self.established:
            return None
        return self.responder_cpu_s * 1e3 / self.established

    @property
    def rate(self) -> float:
        return self.established / self.seconds if self.seconds > 0 else 0.0


@dataclass
class ResponderResult:
    responder: str
    steps: list[StepResult] = field(default_factory=list)
    max_rate: list[StepResult] = field(default_factory=list)
    scale_sas: int = 0
    scale_failed: int = 0
    rss_before_kib: int = 0
    rss_after_kib: int = 0
    scale_seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def rss_per_tunnel_kib(self) -> float | None:
        if not self.scale_sas:
            return None
        return (self.rss_after_kib - self.rss_before_kib) / self.scale_sas

    @property
    def retransmit_onset(self) -> float | None:
        """The lowest offered rate with a retransmission (None: none in the sweep)."""
        for step in self.steps:
            if step.retransmits:
                return step.offered_rate
        return None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["rss_per_tunnel_kib"] = self.rss_per_tunnel_kib
        data["retransmit_onset"] = self.retransmit_onset
        return data


def percentiles(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def at(fraction: float) -> float:
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]

    return {"p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "max": ordered[-1]}


def wait_until_idle(pgid: int, timeout: float = 10.0, interval: float = 0.3) -> float:
    """Wait until process group PGID used at most one clock tick of CPU in INTERVAL (its
    start-up over), at most TIMEOUT; the seconds waited."""
    begin = time.monotonic()
    before = process_group_cpu_seconds(pgid)
    while time.monotonic() - begin < timeout:
        time.sleep(interval)
        now = process_group_cpu_seconds(pgid)
        if now - before <= 0.011:
            break
        before = now
    return time.monotonic() - begin


def process_group_rss_kib(pgid: int) -> int:
    total = 0
    for pid, _, _ in group_processes(pgid):
        try:
            with open(f"/proc/{pid}/status") as status_file:
                for line in status_file:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except (OSError, ValueError):
            continue
    return total


# --- the generator ----------------------------------------------------------------------------


class Generator:
    """Our engine as the initiator of many IKE SAs, over many sockets (runs in the
    generator's namespace: the caller enters it)."""

    def __init__(self, addresses: Sequence[str], responder: str, settings: LoadSettings):
        self.settings = settings
        self.responder = responder
        config = IkeConfig(
            name=CONNECTION,
            local_addrs=[addresses[0]],
            remote_addrs=[responder],
            proposals=[PROPOSAL],
            local=AuthConfig(auth="psk", id=GENERATOR_ID),
            remote=AuthConfig(auth="psk", id=RESPONDER_ID),
            children=[
                ChildConfig(
                    name=CONNECTION,
                    local_ts=[GENERATOR_TS],
                    remote_ts=[RESPONDER_TS],
                    esp_proposals=[ESP_PROPOSAL],
                )
            ],
            retransmit_timeout=settings.retransmit_timeout,
            send_initial_contact=False,
        )
        psk = PSK.encode()
        self.dispatcher = Dispatcher([config], lambda local, remote: psk)
        self.selector = selectors.DefaultSelector()
        self.sockets: dict[tuple[str, int], socket.socket] = {}
        self.sources: list[tuple[str, int]] = []  # (address, port) set-ups start from
        for address in addresses:
            for _ in range(settings.ports_per_source):
                self.sources.append(self._bind(address, 0))
            self._bind(address, NAT_T_PORT)
        self.ports_of: dict[str, deque[int]] = {}
        for address, port in self.sources:
            self.ports_of.setdefault(address, deque()).append(port)
        self.in_flight_by_address: dict[str, int] = dict.fromkeys(self.ports_of, 0)
        self.addresses: deque[str] = deque(self.ports_of)
        self.address_of: dict[int, str] = {}
        self.abandoned_spis: set[bytes] = set()
        self.started_at: dict[int, float] = {}
        self.completed: dict[int, float] = {}  # ike_sa_id -> set-up seconds
        self.failed: set[int] = set()
        self.sent_digests: set[int] = set()
        self.retransmits = 0
        self.buffer = bytearray(65535)
        self._next_timer_check = 0.0
        # The generator keeps every SA it set up: the collector's full passes over them
        # were pauses of 40-70 ms in its loop, counted in both responders' set-up times.
        # Frozen before each step (outside the timed part), survivors of a pass frozen too.
        self.collector = CollectorPolicy()
        self.collector.start(None)

    def _bind(self, address: str, port: int) -> tuple[str, int]:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.bind((address, port))
        sock.setblocking(False)
        local = sock.getsockname()[:2]
        self.sockets[local] = sock
        self.selector.register(sock, selectors.EVENT_READ, local)
        return local

    def close(self) -> None:
        for sock in self.sockets.values():
            self.selector.unregister(sock)
            sock.close()
        self.selector.close()
        # Its SAs become garbage: let the collector see them again (the next run's).
        self.collector.stop()
        gc.unfreeze()

    @property
    def in_flight(self) -> int:
        return len(self.started_at) - len(self.completed) - len(self.failed)

    def start_one(self, now: float) -> None:
        # The addresses in turn, skipping those with PER_ADDRESS_IN_FLIGHT set-ups open
        # (responders count half-open SAs per address for their COOKIE and block
        # thresholds: charon's cookie_threshold_ip is 3), and each address's ports in turn.
        for _ in range(len(self.addresses)):
            self.addresses.rotate(-1)
            address = self.addresses[0]
            if self.in_flight_by_address[address] < PER_ADDRESS_IN_FLIGHT:
                break
        ports = self.ports_of[address]
        ports.rotate(-1)
        source = (address, ports[0])
        ike_sa_id = self.dispatcher.initiate(
            CONNECTION, CONNECTION, now=time.time(), local_addr=source,
            remote_addr=(self.responder, 500),
        )  # fmt: skip
        self.in_flight_by_address[address] += 1
        self.address_of[ike_sa_id] = address
        self.started_at[ike_sa_id] = now
        self._flush()

    def _finish(self, ike_sa_id: int, ok: bool, now: float) -> None:
        if ike_sa_id in self.completed or ike_sa_id in self.failed:
            return
        if ike_sa_id not in self.started_at:
            return
        if ok:
            self.completed[ike_sa_id] = now - self.started_at[ike_sa_id]
        else:
            self.failed.add(ike_sa_id)
        address = self.address_of.pop(ike_sa_id, None)
        if address is not None:
            self.in_flight_by_address[address] -= 1

    def abandon_unfinished(self) -> None:
        """Count what is still in flight as failed and stop its retransmissions (so that
        the next step starts with an empty window and counts only its own)."""
        for ike_sa_id in list(self.address_of):
            with contextlib.suppress(KeyError):
                self.abandoned_spis.add(bytes(self.dispatcher.ike_sa(ike_sa_id).spi_i))
            self._finish(ike_sa_id, False, time.monotonic())

    def _flush(self) -> None:
        for datagram in self.dispatcher.datagrams_to_send(time.time()):
            data = datagram.data
            if self.abandoned_spis and data[:8] in self.abandoned_spis:
                continue
            digest = hash(data)
            if digest in self.sent_digests:
                self.retransmits += 1
            else:
                self.sent_digests.add(digest)
            local = datagram.local_addr
            remote = datagram.remote_addr
            if local[1] == NAT_T_PORT or remote[1] == NAT_T_PORT:
                data = NON_ESP_MARKER + data
            sock = self.sockets.get((local[0], local[1]))
            if sock is None:
                continue  # the engine chose an address we do not own: cannot happen here
            try:
                sock.sendto(data, (remote[0], remote[1]))
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.ENOBUFS):
                    raise

    def poll(self, timeout: float) -> None:
        """Receive what arrived (waiting up to TIMEOUT), run due timers, send, collect events."""
        wall = time.time()
        for key, _ in self.selector.select(max(0.0, timeout)):
            sock: socket.socket = key.fileobj  # type: ignore[assignment]  # only sockets registered
            local = key.data
            while True:
                try:
                    length, sender = sock.recvfrom_into(self.buffer)
                except BlockingIOError:
                    break
                data = bytes(self.buffer[:length])
                if local[1] == NAT_T_PORT or sender[1] == NAT_T_PORT:
                    if not data.startswith(NON_ESP_MARKER):
                        continue  # keepalive or ESP: not ours to handle
                    data = data[4:]
                self.dispatcher.receive_datagram(data, sender[:2], local, wall)
        # The engine's timers are retransmissions here (1 s and more): looking at them ten
        # times a second is enough, and cheaper than Dispatcher.get_timer() (a scan of
        # every SA) on every datagram once thousands of SAs are up.
        if time.monotonic() >= self._next_timer_check:
            self.dispatcher.handle_timer(time.time())
            self._next_timer_check = time.monotonic() + TIMER_CHECK_INTERVAL
        self._flush()
        now = time.monotonic()
        while (event := self.dispatcher.next_event()) is not None:
            if isinstance(event, ChildSaEstablished):
                self._finish(event.ike_sa_id, True, now)
            elif isinstance(
                event, NegotiationFailed | AuthenticationFailed | PeerUnreachable | IkeSaDeleted
            ):
                self._finish(event.ike_sa_id, False, now)

    def next_wait(self, until: float) -> float:
        wait = min(until, self._next_timer_check) - time.monotonic()
        return max(0.0, min(wait, TIMER_CHECK_INTERVAL))

    def run_step(self, rate: float | None, seconds: float, count: int | None = None) -> StepResult:
        """Start set-ups at RATE per second (None: keep the window full) for SECONDS (or
        until COUNT were started), then wait for the last ones."""
        settings = self.settings
        self.collector.reclaim()
        ids_before = set(self.started_at)
        retransmits_before = self.retransmits
        begin = time.monotonic()
        end = begin + seconds
        started = 0
        while True:
            now = time.monotonic()
            if now >= end or (count is not None and started >= count):
                break
            if rate is None:
                due = count - started if count is not None else settings.window
            else:
                due = int((now - begin) * rate) + 1 - started
            while due > 0 and self.in_flight < settings.window:
                self.start_one(time.monotonic())
                started += 1
                due -= 1
            next_start = begin + started / rate if rate else now + 0.001
            self.poll(max(0.0, min(next_start, end) - time.monotonic()) if rate else 0.001)
        drain_end = time.monotonic() + settings.drain_seconds
        while self.in_flight and time.monotonic() < drain_end:
            self.poll(self.next_wait(drain_end))
        self.abandon_unfinished()
        new_ids = [i for i in self.started_at if i not in ids_before]
        setup_times = [self.completed[i] * 1000 for i in new_ids if i in self.completed]
        last = max(
            (self.started_at[i] + self.completed[i] for i in new_ids if i in self.completed),
            default=begin,
        )
        return StepResult(
            offered_rate=rate,
            started=len(new_ids),
            established=len(setup_times),
            failed=sum(1 for i in new_ids if i not in self.completed),
            retransmits=self.retransmits - retransmits_before,
            seconds=last - begin,
            setup_ms=percentiles(setup_times),
        )


# --- responders -------------------------------------------------------------------------------


def responder_swanctl_conf() -> str:
    connection = {
        "version": 2,
        "local_addrs": RESPONDER_ADDRESS,
        "remote_addrs": "%any",
        "proposals": PROPOSAL,
        "local": {"auth": "psk", "id": RESPONDER_ID},
        "remote": {"auth": "psk", "id": GENERATOR_ID},
        "children": {
            CONNECTION: {
                "local_ts": RESPONDER_TS,
                "remote_ts": GENERATOR_TS,
                "esp_proposals": ESP_PROPOSAL,
                "mode": "tunnel",
            }
        },
    }
    secrets = {"ike-load": {"id-1": RESPONDER_ID, "id-2": GENERATOR_ID, "secret": f'"{PSK}"'}}
    return (
        "# written by bench.ike_load\n"
        + swanctl_section("connections", {CONNECTION: connection})
        + "\n"
        + swanctl_section("secrets", secrets)
        + "\n"
    )


def start_responder(
    lab: Lab, namespace: Namespace, kind: str, workdir: Path, source_tree: str | None = None
) -> int:
    """Start the responder; returns its process group id (for RSS)."""
    if kind == "charon":
        # charon's own defaults, logging kept as low as ours (warnings only).
        charon = Charon(lab, namespace, workdir, ike_log_level=0)
        charon.start()
        charon.load(responder_swanctl_conf())
        assert charon.process is not None
        return charon.process.pid
    from bench.netbench import QuietAioipsecPeer

    peer = QuietAioipsecPeer(lab, namespace, workdir, "warning", source_tree)
    peer.load(responder_swanctl_conf())
    assert peer.process is not None
    return peer.process.pid


def measure_responder(
    kind: str,
    workdir: Path,
    settings: LoadSettings,
    *,
    sweep: bool = True,
    max_rounds: int = 1,
    scale: int = 0,
    log: Callable[[str], None] = print,
    capture: Path | None = None,
) -> ResponderResult:
    """One responder in fresh namespaces: rate steps, closed-loop maximum, then scale."""
    result = ResponderResult(kind)
    workdir.mkdir(parents=True, exist_ok=True)
    with Lab(f"ike{kind[:2]}") as lab:
        generator_ns = lab.namespace("g")
        responder_ns = lab.namespace("r")
        first_address = GENERATOR_NET.format(1, 1)
        generator_if, _ = lab.veth(
            generator_ns, f"{first_address}/{PREFIX}", responder_ns, f"{RESPONDER_ADDRESS}/{PREFIX}"
        )
        addresses = [
            GENERATOR_NET.format(1 + i // 250, 1 + i % 250) for i in range(settings.sources)
        ]
        for address in addresses[1:]:
            generator_ns.add_address(generator_if, f"{address}/{PREFIX}")
        # An address inside the local selectors: charon installs its route with it as source.
        responder_ns.add_address("lo", RESPONDER_INNER)
        # Resolve every generator address before the first IKE_SA_INIT (no ARP wait in the
        # first set-ups' times).
        responder_ns.sh(
            " ".join(f"ping -c1 -W1 {a} >/dev/null &" for a in addresses) + " wait",
            check=False,
        )
        try:
            pgid = start_responder(lab, responder_ns, kind, workdir / kind, settings.source_tree)
        except Exception as exc:
            result.problems.append(f"responder did not start: {exc}")
            return result
        rss_start = process_group_rss_kib(pgid)
        if capture is not None:  # for debugging: what the generator's side of the link sees
            lab.capture(generator_ns, generator_if, capture, "udp")
        with generator_ns.entered():
            generator = Generator(addresses, RESPONDER_ADDRESS, settings)
        try:
            # Both responders alike: started, warmed up with a few set-ups, idle again.
            wait_until_idle(pgid)
            if settings.warmup:
                generator.run_step(None, 10.0, count=settings.warmup)
                wait_until_idle(pgid)

            def measured(rate: float | None) -> StepResult:
                before = process_group_cpu_seconds(pgid)
                step = generator.run_step(rate, settings.step_seconds)
                step.responder_cpu_s = process_group_cpu_seconds(pgid) - before
                return step

            if sweep:
                for rate in settings.rates:
                    step = measured(rate)
                    result.steps.append(step)
                    log(f"  {kind} {rate:g}/s: {_step_text(step)}")
                    if step.failed > step.started / 2:
                        break  # far past saturation: the next rates say nothing new
            for _ in range(max_rounds):
                step = measured(None)
                result.max_rate.append(step)
                log(f"  {kind} closed loop (window {settings.window}): {_step_text(step)}")
            if scale:
                # Fresh start for the memory figure: the SAs so far count towards the total.
                have = len(generator.completed)
                result.rss_before_kib = rss_start
                begin = time.monotonic()
                step = generator.run_step(None, 3600.0, count=max(0, scale - have))
                result.scale_seconds = time.monotonic() - begin
                result.scale_sas = len(generator.completed)
                result.scale_failed = len(generator.failed)
                time.sleep(1.0)  # let the responder finish installing the last Child SAs
                result.rss_after_kib = process_group_rss_kib(pgid)
                log(
                    f"  {kind} scale: {result.scale_sas} SAs ({result.scale_failed} failed), "
                    f"RSS {rss_start} -> {result.rss_after_kib} KiB, "
                    f"{result.rss_per_tunnel_kib or 0:.1f} KiB per tunnel; {_step_text(step)}"
                )
        except Exception as exc:
            result.problems.append(f"{type(exc).__name__}: {exc}")
        finally:
            generator.close()
    return result


def _step_text(step: StepResult) -> str:
    timing = " ".join(f"{k} {v:.0f} ms" for k, v in step.setup_ms.items())
    cpu = step.cpu_ms_per_setup
    return (
        f"{step.established}/{step.started} established in {step.seconds:.1f} s = "
        f"{step.rate:.0f}/s, {step.failed} failed, {step.retransmits} retransmits; {timing}"
        + (f"; responder CPU {cpu:.2f} ms per set-up" if cpu is not None else "")
    )


def _cpu_per_setup(data: dict[str, Any], kind: str) -> list[float]:
    """Responder CPU ms per set-up of every closed-loop step and rate step."""
    values = []
    for result in data["results"].get(kind, []):
        for step in [*result["steps"], *result["max_rate"]]:
            cpu, done = step.get("responder_cpu_s"), step["established"]
            if cpu is not None and done:
                values.append(cpu * 1e3 / done)
    return values


def run_ike_comparison(
    workdir: Path,
    *,
    rounds: int = 3,
    scale: int = 10000,
    settings: LoadSettings | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Both responders under the same generator: the rate sweep and the closed-loop maximum
    alternate (ours, charon, ours, charon, ...) ROUNDS times; the scale test runs once each."""
    settings = settings or LoadSettings()
    results: dict[str, list[dict[str, Any]]] = {kind: [] for kind in RESPONDERS}
    for number in range(1, rounds + 1):
        for kind in RESPONDERS:
            log(f"ike round {number}: {kind}")
            result = measure_responder(
                kind, workdir / f"r{number}", settings, sweep=(number == 1), max_rounds=1,
                scale=scale if number == rounds else 0, log=log,
            )  # fmt: skip
            results[kind].append(result.to_json())
    return {"settings": asdict(settings), "scale": scale, "results": results}


# --- report -----------------------------------------------------------------------------------


def _max_rates(data: dict[str, Any], kind: str) -> list[float]:
    rates = []
    for result in data["results"].get(kind, []):
        for step in result["max_rate"]:
            if step["seconds"] > 0:
                rates.append(step["established"] / step["seconds"])
    return rates


def _scale_entry(data: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for result in data["results"].get(kind, []):
        if result.get("scale_sas"):
            return result
    return None


def render_ike_section(data: dict[str, Any]) -> list[str]:
    settings = data["settings"]
    lines = ["## Control plane: IKE SA set-ups per second", ""]
    lines.append(
        f"`bench.ike_load`: our engine initiates IKE SAs (PSK, x25519, one Child SA each) "
        f"from {settings['sources']} addresses x {settings['ports_per_source']} source "
        f"ports (+ port 4500) against one responder in another namespace; at most "
        f"{settings['window']} set-ups in flight; the generator retransmits after "
        f"{settings['retransmit_timeout']:g} s. Set-up time: first IKE_SA_INIT sent to the "
        "Child SA established, at the generator. Generator and responder share the 2 cores. "
        f"Measured once the responder is idle after its start and {settings.get('warmup', 0)} "
        "set-ups not counted."
    )
    lines.append("")
    lines.append(
        "| responder | closed-loop set-ups/s, median (min-max) | set-up p50 / p99 (ms) | "
        "responder CPU per set-up (ms), median (min-max) |"
    )
    lines.append("| --- | --- | --- | --- |")
    for kind in RESPONDERS:
        rates = _max_rates(data, kind)
        timing = ""
        for result in data["results"].get(kind, []):
            for step in result["max_rate"]:
                timing = (
                    f"{step['setup_ms'].get('p50', 0):.0f} / {step['setup_ms'].get('p99', 0):.0f}"
                )
        if rates:
            cell = f"{statistics.median(rates):.0f} ({min(rates):.0f}-{max(rates):.0f})"
        else:
            cell = "n/a"
        cpu = _cpu_per_setup(data, kind)
        cpu_cell = f"{statistics.median(cpu):.2f} ({min(cpu):.2f}-{max(cpu):.2f})" if cpu else "n/a"
        lines.append(f"| {kind} | {cell} | {timing} | {cpu_cell} |")
    lines.append("")
    lines.append("Open-loop rate steps (first round):")
    lines.append("")
    lines.append(
        "| responder | offered/s | established/s | failed | retransmits | "
        "p50 / p90 / p99 / max set-up (ms) |"
    )
    lines.append("| --- | --- | --- | --- | --- | --- |")
    for kind in RESPONDERS:
        results = data["results"].get(kind, [])
        if not results:
            continue
        for step in results[0]["steps"]:
            ms = step["setup_ms"]
            rate = step["established"] / step["seconds"] if step["seconds"] else 0
            lines.append(
                f"| {kind} | {step['offered_rate']:g} | {rate:.0f} | {step['failed']} | "
                f"{step['retransmits']} | "
                + " / ".join(f"{ms.get(k, 0):.0f}" for k in ("p50", "p90", "p99", "max"))
                + " |"
            )
    lines.append("")
    for kind in RESPONDERS:
        results = data["results"].get(kind, [])
        if results:
            onset = results[0].get("retransmit_onset")
            lines.append(
                f"- {kind}: retransmissions start at "
                + (f"{onset:g} set-ups/s offered." if onset else "none of the offered rates.")
            )
    lines.append("")
    lines.append(f"### Scale: {data['scale']:,} concurrent IKE SAs")
    lines.append("")
    lines.append(
        "| responder | IKE SAs up | failed | time to set up (s) | RSS before / after (MiB) | "
        "RSS per tunnel (KiB) |"
    )
    lines.append("| --- | --- | --- | --- | --- | --- |")
    for kind in RESPONDERS:
        entry = _scale_entry(data, kind)
        if entry is None:
            lines.append(f"| {kind} | n/a | | | | |")
            continue
        lines.append(
            f"| {kind} | {entry['scale_sas']:,} | {entry['scale_failed']} | "
            f"{entry['scale_seconds']:.0f} | {entry['rss_before_kib'] / 1024:.0f} / "
            f"{entry['rss_after_kib'] / 1024:.0f} | {entry['rss_per_tunnel_kib']:.1f} |"
        )
    lines.append("")
    problems = [
        (kind, p)
        for kind in RESPONDERS
        for r in data["results"].get(kind, [])
        for p in r["problems"]
    ]
    for kind, problem in problems:
        lines.append(f"- problem ({kind}): {problem.splitlines()[0][:200]}")
    if problems:
        lines.append("")
    return lines


def _p99_at_common_rates(data: dict[str, Any]) -> list[tuple[float, float, float]]:
    """(offered rate, our p99, charon's p99) for every open-loop rate both responders
    completed (first round)."""

    def steps(kind: str) -> dict[float, dict[str, Any]]:
        results = data["results"].get(kind, [])
        return {s["offered_rate"]: s for s in results[0]["steps"]} if results else {}

    ours, theirs = steps("aioipsec"), steps("charon")
    rows = []
    for rate in sorted(set(ours) & set(theirs)):
        a, b = ours[rate]["setup_ms"].get("p99"), theirs[rate]["setup_ms"].get("p99")
        if a is not None and b is not None:
            rows.append((rate, a, b))
    return rows


def target_lines(data: dict[str, Any]) -> list[str]:
    """Issue 17: set-ups/s >= 1x charon's with p99 no higher at the same offered rate;
    memory per tunnel no more than charon's."""
    lines = []
    ours, theirs = _max_rates(data, "aioipsec"), _max_rates(data, "charon")
    if ours and theirs:
        ratio = statistics.median(ours) / statistics.median(theirs)
        lines.append(
            f"- IKE set-ups per second as responder >= 1x charon's: "
            f"{'met' if ratio >= 1.0 else '**not met**'} ({ratio:.2f}x: closed loop "
            f"{statistics.median(ours):.0f} against {statistics.median(theirs):.0f}/s)."
        )
    rows = _p99_at_common_rates(data)
    if rows:
        worse = [f"{rate:g}/s ({a:.0f} vs {b:.0f} ms)" for rate, a, b in rows if a > b]
        lines.append(
            "- p99 set-up time no higher than charon's at the same offered rate: "
            + ("met" if not worse else "**not met** at " + ", ".join(worse))
            + " (rates "
            + ", ".join(f"{rate:g}" for rate, _, _ in rows)
            + "/s)."
        )
    our_scale, their_scale = _scale_entry(data, "aioipsec"), _scale_entry(data, "charon")
    if our_scale and their_scale and their_scale["rss_per_tunnel_kib"]:
        ratio = our_scale["rss_per_tunnel_kib"] / their_scale["rss_per_tunnel_kib"]
        lines.append(
            f"- Memory per tunnel <= charon's at {data['scale']:,} SAs: "
            f"{'met' if ratio <= 1.0 else '**not met**'} ({our_scale['rss_per_tunnel_kib']:.1f} "
            f"vs {their_scale['rss_per_tunnel_kib']:.1f} KiB, {ratio:.2f}x)."
        )
    return lines


def compare_versions(base: str, settings: LoadSettings, rounds: int, workdir: Path) -> int:
    """``--base REV``: our responder from REV (A) and from the checkout (B), and charon, in
    the order A B charon, then charon B A, ...; one JSON line per run (rate steps and the
    closed loop: established/s, p50/p90/p99 set-up ms, responder CPU ms per set-up; the load
    average at the end of the run)."""
    from dataclasses import replace

    from bench.ab import base_and_work_trees

    trees = base_and_work_trees(base, workdir / "trees")
    order: list[tuple[str, str, str | None]] = [
        ("A", "aioipsec", trees[base]), ("B", "aioipsec", trees["work"]), ("charon", "charon", None)
    ]  # fmt: skip
    for number in range(rounds):
        for label, kind, tree in order if number % 2 == 0 else order[::-1]:
            result = measure_responder(
                kind, workdir / f"r{number}{label}", replace(settings, source_tree=tree),
                log=lambda _line: None,
            )  # fmt: skip

            def row(step: StepResult) -> dict[str, Any]:
                return {"offered": step.offered_rate, "per_s": round(step.rate),
                        "p50_ms": round(step.setup_ms.get("p50", 0)),
                        "p90_ms": round(step.setup_ms.get("p90", 0)),
                        "p99_ms": round(step.setup_ms.get("p99", 0)),
                        "retransmits": step.retransmits,
                        "cpu_ms": round(step.cpu_ms_per_setup or 0, 2)}  # fmt: skip

            print(json.dumps({
                "version": label, "round": number, "problems": result.problems,
                "loadavg": [round(x, 2) for x in os.getloadavg()],
                "steps": [row(s) for s in result.steps],
                "closed_loop": [row(s) for s in result.max_rate],
            }), flush=True)  # fmt: skip
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ike_load")
    parser.add_argument("--responder", choices=(*RESPONDERS, "both"), default="both")
    parser.add_argument("--rates", default="25,50,100,200,400")
    parser.add_argument("--step-seconds", type=float, default=4.0)
    parser.add_argument("--window", type=int, default=16)
    parser.add_argument("--sources", type=int, default=32)
    parser.add_argument("--ports", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--scale", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument(
        "--base",
        help="A/B: our responder at this commit against the checkout, with charon, "
        "alternating for --rounds (the sweep and the closed loop; no scale test)",
    )
    args = parser.parse_args(argv)
    settings = LoadSettings(
        sources=args.sources,
        ports_per_source=args.ports,
        window=args.window,
        step_seconds=args.step_seconds,
        rates=tuple(float(r) for r in args.rates.split(",") if r),
    )
    workdir = Path(tempfile.mkdtemp(prefix="aioipsec-ike-load-"))
    if args.base:
        return compare_versions(args.base, settings, args.rounds, workdir)
    if args.responder == "both":
        data = run_ike_comparison(workdir, rounds=args.rounds, scale=args.scale, settings=settings)
    else:
        result = measure_responder(
            args.responder, workdir, settings, max_rounds=args.rounds, scale=args.scale
        )
        data = {"settings": asdict(settings), "scale": args.scale,
                "results": {args.responder: [result.to_json()]}}  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(data, indent=1) + "\n")
    print("\n".join(render_ike_section(data)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
