"""Data-plane worker processes (issue 17, route "every core"): the direction split.

AEAD calls hold the GIL, so one Python process encrypts and decrypts on one core. With
``[daemon] workers = 2`` (or ``AIOIPSEC_WORKERS=2`` in the daemon's environment, which
wins) the outbound direction runs in a process of its own::

    daemon (IKE, control, Child SA table, inbound)    encrypt worker
      UDP 4500 / raw ESP -> decrypt -> TUN              TUN -> SPD -> encrypt -> UDP / raw ESP
      install / remove / rebind / traps / peer / MTU ==> its own ChildTable (outbound SAs)
      _on_acquire, _on_limit, counters, listings     <== acquire, limit, counters, reserve

The worker is ``python -m aioipsec.runtime.workers``, started by :class:`EncryptWorker`
with the TUN descriptor, the outer sockets (UDP 4500, raw ESP) and one end of a
socketpair through ``pass_fds``: it needs no privilege and opens nothing itself. Both
processes run the same per-packet code (:class:`aioipsec.runtime.forwarding.Forwarder`,
``esp.processing``); the worker just never receives ESP and the daemon never reads the
TUN.

**Sequence numbers belong to the worker.** An AES-GCM nonce is the SA's salt and the
sequence number (RFC 4106 sec. 3): sending two packets with one sequence number under one
key would reuse a nonce. The worker therefore *reserves* sequence numbers in blocks of
:data:`SEQUENCE_BLOCK` before it uses them: :class:`SequenceGuard` caps the SA's
``seq_check`` (the one compare ``encrypt_into`` does per packet) at the reservation, and
the slow path it then takes writes ``("reserve", spi, limit)`` to the socketpair with a
blocking send *before* the packet is sealed. A message written to a Unix stream socket
stays readable after its writer died, so the daemon, reading the socketpair to its end,
always knows a limit above every sequence number the dead worker may have used. The next
worker's SAs start there (RFC 4303 sec. 3.3.3 allows the gap; the peer's replay window
just moves on). Nothing depends on timing.

**Nothing leaves in clear while no worker runs**: the routes lead only into the TUN device
and the fail-closed nftables rules stay (``aioipsec.runtime.failclosed``); packets the
kernel queues in the TUN meanwhile (up to its queue length) are sent by the next worker or
dropped by the kernel.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pickle
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from types import SimpleNamespace
from typing import Any

import structlog

from esp.sa import EspSa

from .children import ChildEntry, ChildSpec, ChildTable
from .engine import now as wall_clock
from .forwarding import Forwarder
from .sockets import DrainingSocket, PassedRawEsp, RawEspSocket

log = structlog.get_logger("aioipsec.workers")

# Environment variable that overrides ``[daemon] workers`` (the bench lab sets it).
WORKERS_ENV = "AIOIPSEC_WORKERS"
# Sequence numbers reserved at a time (one message to the daemon per block and SA).
SEQUENCE_BLOCK = 1 << 16
REPORT_INTERVAL = 0.5  # seconds between the worker's counter reports
# After TUN traffic, a report this soon (so that listings right after a ping are right),
# when the worker has at most REPORT_SOON_MAX_SAS SAs (each report compares all of them).
REPORT_SOON = 0.01
REPORT_SOON_MAX_SAS = 256
# A worker that dies is restarted at once, unless it ran less than RESTART_MIN_INTERVAL:
# then after a wait that doubles with each such death, up to RESTART_MAX_WAIT (a worker
# that cannot start must not flood the log).
RESTART_MIN_INTERVAL = 1.0
RESTART_MAX_WAIT = 30.0
OUTBOUND_SWITCH_MAX = 2.0  # as aioipsec.runtime.datapath (a rekey responder's fallback)
_LENGTH = struct.Struct("!I")


def worker_count(configured: int) -> int:
    """The number of data-plane processes: ``AIOIPSEC_WORKERS`` if set, else the config.
    1 is today's single process; 2 the direction split (one encrypt worker). More is
    refused: SA-steered workers are not built (bench/notes.md says what they need)."""
    text = os.environ.get(WORKERS_ENV, "").strip()
    if text:
        try:
            value = int(text)
        except ValueError:
            raise ValueError(f"{WORKERS_ENV}={text!r} is not a number: give 1 or 2") from None
        if value not in (1, 2):
            raise ValueError(
                f"{WORKERS_ENV}={text!r}: give 1 (one process) or 2 (an encrypt worker); "
                "more workers (SA-steered) are not built"
            )
        return value
    return configured


# --------------------------------------------------------------------------- framing


def frame(message: tuple[Any, ...]) -> bytes:
    """One message on the socketpair: a length, then a pickle. Both ends are this program
    (parent and the child it started), never a peer: pickle is safe here."""
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(data)) + data


class FrameReader:
    """Cuts a byte stream into messages."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[Any, ...]]:
        self._buffer += data
        messages = []
        while len(self._buffer) >= 4:
            (length,) = _LENGTH.unpack_from(self._buffer)
            if len(self._buffer) < 4 + length:
                break
            messages.append(pickle.loads(bytes(self._buffer[4 : 4 + length])))
            del self._buffer[: 4 + length]
        return messages


@dataclass(frozen=True)
class TrapSpec:
    """What ``ChildTable.add_trap`` reads of a connection and child config (the engine's
    config objects stay in the daemon)."""

    name: str
    local_addrs: tuple[str, ...]
    remote_addrs: tuple[str, ...]
    child: str
    local_ts: tuple[str, ...]
    remote_ts: tuple[str, ...]
    mode: str

    @classmethod
    def of(cls, config: Any, child: Any) -> TrapSpec:
        return cls(
            config.name, tuple(config.local_addrs), tuple(config.remote_addrs), child.name,
            tuple(child.local_ts), tuple(child.remote_ts), child.mode,
        )  # fmt: skip

    def config_and_child(self) -> tuple[Any, Any]:
        config = SimpleNamespace(
            name=self.name, local_addrs=list(self.local_addrs), remote_addrs=list(self.remote_addrs)
        )
        child = SimpleNamespace(
            name=self.child, local_ts=list(self.local_ts), remote_ts=list(self.remote_ts),
            mode=self.mode,
        )  # fmt: skip
        return config, child


# --------------------------------------------------------------------------- daemon side


class EncryptWorker:
    """The daemon's handle on its encrypt worker: starts it, sends it the Child SA
    changes, applies what it reports, and restarts it when it dies (its SAs re-installed
    past every reserved sequence number)."""

    def __init__(
        self,
        table: ChildTable,
        *,
        tun_fd: int,
        vnet_hdr: bool,
        on_acquire: Callable[[str, str], None],
        on_limit: Callable[[int, str, bool], None],
        log_level: str = "info",
        log_format: str = "console",
    ) -> None:
        self.table = table
        self.tun_fd = tun_fd
        self.vnet_hdr = vnet_hdr
        self._on_acquire = on_acquire
        self._on_limit = on_limit
        self._log_args = ["--log-level", log_level, "--log-format", log_format]
        # A send of the worker failed with EMSGSIZE towards this host (the path MTU).
        self.on_too_big: Callable[[str], None] | None = None
        self.ready = asyncio.Event()  # set when the current worker reads the TUN
        self.udp_fds: list[int] = []
        self.raw_fds: list[int] = []
        self.process: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reader = FrameReader()
        self._pending = bytearray()  # what the worker's socket would not take yet
        self._closing = False
        self._last_start = 0.0
        self._restart_wait = RESTART_MIN_INTERVAL
        self.restarts = 0
        # spi_out -> the worker's sequence-number reservation (every number it may have
        # used is below it) and the numbers skipped by restarts (not packets sent).
        self.reserved: dict[int, int] = {}
        self.skipped: dict[int, int] = {}
        self.traps: dict[tuple[str, str], TrapSpec] = {}
        self._peers_sent: dict[int, tuple[str, int]] = {}
        # The worker's own counters (outbound drops, held packets...), those of dead
        # workers added up in ``_base``.
        self.counters: dict[str, int] = {}
        self._base: dict[str, int] = {}

    # ------------------------------------------------------------------ life

    def start(
        self,
        loop: asyncio.AbstractEventLoop,
        udp_fds: list[int],
        raw_fds: list[int],
        no_df_fds: list[int] | None = None,
    ) -> None:
        """NO_DF_FDS: each UDP then raw socket's send-only twin without DF (copy_df), or
        the socket itself where it has none."""
        self._loop = loop
        self.udp_fds, self.raw_fds = udp_fds, raw_fds
        self.no_df_fds = no_df_fds or [*udp_fds, *raw_fds]
        self._spawn()

    def _spawn(self) -> None:
        assert self._loop is not None
        try:
            self._start_process()
        except OSError as exc:
            log.error(
                "cannot start the encrypt worker: nothing is sent through the tunnels "
                "until it runs (trying again); check the daemon's limits (processes, "
                "open files) or set [daemon] workers = 1",
                error=str(exc),
                retry_in=self._restart_wait,
            )
            self._loop.call_later(self._restart_wait, self._respawn)
            self._restart_wait = min(self._restart_wait * 2, RESTART_MAX_WAIT)

    def _start_process(self) -> None:
        assert self._loop is not None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        fds = [self.tun_fd, *self.udp_fds, *self.raw_fds, *self.no_df_fds, theirs.fileno()]
        argv = [
            sys.executable, "-m", "aioipsec.runtime.workers",
            "--tun", str(self.tun_fd), "--control", str(theirs.fileno()),
            "--udp", ",".join(map(str, self.udp_fds)), "--raw", ",".join(map(str, self.raw_fds)),
            "--no-df", ",".join(map(str, self.no_df_fds)),
            *(["--vnet-hdr"] if self.vnet_hdr else []), "--parent", str(os.getpid()),
            *self._log_args,
        ]  # fmt: skip
        try:
            self.process = subprocess.Popen(argv, pass_fds=fds, stdin=subprocess.DEVNULL)
        except OSError:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.setblocking(False)
        self._sock = ours
        self._reader = FrameReader()
        self._pending = bytearray()
        self._last_start = time.monotonic()
        self._peers_sent = {}
        self.ready.clear()
        self._loop.add_reader(ours.fileno(), self._readable)
        self._replay()
        log.info("encrypt worker started", pid=self.process.pid, restarts=self.restarts)

    def _replay(self) -> None:
        """Everything the worker must know, from the daemon's table: traps, then the Child
        SAs (those whose outbound SA carries the reqid's traffic last, so that they win),
        each starting past its reserved sequence numbers."""
        for trap in self.traps.values():
            self.send(("trap", trap))
        table = self.table
        current = {id(entry) for entry in table.forwarding.values()}
        entries = sorted(table.children.values(), key=lambda e: id(e) in current)
        for entry in entries:
            self.install(entry, replayed=True)
        self.send_mtus()

    def close(self) -> None:
        self._closing = True
        self._drop_socket()
        process = self.process
        if process is not None and process.poll() is None:
            process.kill()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                log.warning("encrypt worker did not exit", pid=process.pid)

    def _drop_socket(self) -> None:
        if self._sock is not None:
            if self._loop is not None:
                try:
                    self._loop.remove_reader(self._sock.fileno())
                    self._loop.remove_writer(self._sock.fileno())
                except (ValueError, OSError):
                    pass
            self._sock.close()
            self._sock = None

    def _died(self) -> None:
        """EOF on the socketpair: the worker is gone (every message it wrote was read).
        Kill what may remain of it, then start a new one with the SAs re-installed."""
        self._drop_socket()
        process = self.process
        code = None
        if process is not None:
            if process.poll() is None:
                process.kill()
            try:
                code = process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                code = None
        for key, value in self.counters.items():
            self._base[key] = self._base.get(key, 0) + value
        self.counters = {}
        if self._closing or self._loop is None:
            return
        self.restarts += 1
        log.warning(
            "encrypt worker died: restarting it, its SAs re-installed past their "
            "reserved sequence numbers",
            pid=None if process is None else process.pid,
            exit_code=code,
            restarts=self.restarts,
        )
        if time.monotonic() - self._last_start >= RESTART_MIN_INTERVAL:
            self._restart_wait = RESTART_MIN_INTERVAL
            self._spawn()
        else:
            self._loop.call_later(self._restart_wait, self._respawn)
            self._restart_wait = min(self._restart_wait * 2, RESTART_MAX_WAIT)

    def _respawn(self) -> None:
        if not self._closing and self._sock is None:
            self._spawn()

    # ------------------------------------------------------------------ to the worker

    def send(self, message: tuple[Any, ...]) -> None:
        """Queue MESSAGE (never blocks the daemon: what the socket does not take now is
        written when it can)."""
        if self._sock is None:
            return  # a new worker gets the whole state (_replay)
        self._pending += frame(message)
        self._write()

    def _write(self) -> None:
        sock = self._sock
        if sock is None or self._loop is None:
            return
        try:
            sent = sock.send(self._pending)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            return  # the worker died: the reader sees EOF
        del self._pending[:sent]
        if self._pending:
            self._loop.add_writer(sock.fileno(), self._write)
        else:
            self._loop.remove_writer(sock.fileno())

    def install(self, entry: ChildEntry, *, replayed: bool = False) -> None:
        spi = entry.sa_out.spi
        reserved = self.reserved.get(spi, 0)
        seq = max(entry.sa_out.seq, reserved - 1)  # the last number possibly used
        if replayed and seq > entry.sa_out.seq:
            self.skipped[spi] = self.skipped.get(spi, 0) + seq - entry.sa_out.seq
            entry.sa_out.seq = seq
        spec = entry.spec
        if replayed:
            # The worker's table is new: no rekey to defer, no predecessor to name (the
            # order of _replay makes the reqid's current SA win).
            spec = replace(spec, defer_outbound=False, rekey_of=None)
        nat_local = self.table.nat_local.get(spec.ike_sa_id, False)
        self.send(("install", spec, nat_local, seq, entry.peer.address, entry.mtu))

    def remove(self, child_sa_id: int, spi_out: int) -> None:
        self.reserved.pop(spi_out, None)
        self.skipped.pop(spi_out, None)
        self.send(("remove", child_sa_id))

    def add_trap(self, trap: TrapSpec) -> None:
        self.traps[(trap.name, trap.child)] = trap
        self.send(("trap", trap))

    def clear_traps(self) -> None:
        self.traps.clear()
        self.send(("clear_traps",))

    def send_mtus(self) -> None:
        self.send(("mtus", {cid: entry.mtu for cid, entry in self.table.children.items()}))

    def sync_peers(self) -> None:
        """A peer's new address (NAT mapping change, RFC 3948 sec. 3.5; the engine's
        IkeSaAddressChanged) reaches the worker here: compared once per report."""
        seen: dict[int, tuple[str, int]] = {}
        for entry in self.table.children.values():
            seen.setdefault(entry.ike_sa_id, entry.peer.address)
        for ike_sa_id, address in seen.items():
            if self._peers_sent.get(ike_sa_id) != address:
                self._peers_sent[ike_sa_id] = address
                self.send(("peer", ike_sa_id, address))
        for ike_sa_id in [i for i in self._peers_sent if i not in seen]:
            del self._peers_sent[ike_sa_id]

    # ------------------------------------------------------------------ from the worker

    def _readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        try:
            data = sock.recv(1 << 16)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._died()
            return
        for message in self._reader.feed(data):
            self._handle(message)

    def _handle(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "ready":
            self.ready.set()
        elif kind == "reserve":
            _, spi, limit = message
            self.reserved[spi] = max(self.reserved.get(spi, 0), limit)
        elif kind == "counters":
            _, per_sa, counters = message
            by_spi_out = self.table.by_spi_out
            for spi, (seq, nbytes, expired_drops) in per_sa.items():
                entry = by_spi_out.get(spi)
                if entry is not None:
                    sa = entry.sa_out
                    sa.seq, sa.bytes_out, sa.expired_drops = seq, nbytes, expired_drops
            self.counters = counters
            self.sync_peers()
        elif kind == "acquire":
            self._on_acquire(message[1], message[2])
        elif kind == "too_big":
            if self.on_too_big is not None:
                self.on_too_big(message[1])
        elif kind == "limit":
            self._on_limit(message[1], message[2], message[3])

    def total(self, name: str) -> int:
        return self._base.get(name, 0) + self.counters.get(name, 0)

    def packets_out(self, sa: EspSa) -> int:
        """Packets sent on SA (its sequence number less the numbers restarts skipped)."""
        return sa.seq - self.skipped.get(sa.spi, 0)


# --------------------------------------------------------------------------- worker side


class SequenceGuard:
    """Keeps an outbound SA from using a sequence number the daemon has not been told
    about (see the module doc). ``encrypt_into`` takes its slow path (``outbound_limit``)
    when ``seq`` reaches ``seq_check``; we keep ``seq_check`` at most at the reservation,
    and reserve the next block there, before the packet is sealed."""

    def __init__(self, sa: EspSa, reserve: Callable[[int, int], None]) -> None:
        self.sa = sa
        self.reserved = sa.seq + 1  # nothing reserved beyond the start
        self._reserve = reserve
        self._recompute = sa._recompute_checks
        self._limit = sa.outbound_limit
        # Instance attributes shadow the methods: every path that sets seq_check (limits,
        # lifetimes, expiry) goes through these.
        setattr(sa, "_recompute_checks", self.recompute)  # noqa: B010
        setattr(sa, "outbound_limit", self.outbound_limit)  # noqa: B010
        self.recompute()

    def recompute(self) -> None:
        self._recompute()
        if self.sa.seq_check > self.reserved:
            self.sa.seq_check = self.reserved

    def outbound_limit(self, seq: int) -> None:
        if seq >= self.reserved:
            self.reserved = seq + SEQUENCE_BLOCK
            self._reserve(self.sa.spi, self.reserved)  # blocking: written before use
        self._limit(seq)  # the SA's own limits (may raise EspDrop: expired)
        if self.sa.seq_check > self.reserved:
            self.sa.seq_check = self.reserved


class _NoRoutes:
    """The worker's ChildTable installs no routes: the daemon owns them."""

    def add_child(self, *args: Any) -> list[str]:
        return []

    def remove_child(self, *args: Any) -> None:
        return None


@dataclass
class _PassedTun:
    fd: int
    vnet_hdr: bool

    def fileno(self) -> int:
        return self.fd


class Worker:
    """The encrypt worker's state: its ChildTable, its Forwarder, the socketpair."""

    def __init__(
        self,
        control: socket.socket,
        tun: _PassedTun,
        udp: list[int],
        raw: list[int],
        no_df: list[int] | None = None,
    ):
        self.control = control
        self.loop = asyncio.get_event_loop()
        routes: Any = _NoRoutes()  # ChildTable's RouteManager: the two calls it makes
        self.table = ChildTable(
            routes,
            on_acquire=lambda connection, child: self.send(("acquire", connection, child)),
            on_limit=lambda spi, cause, hard: self.send(("limit", spi, cause, hard)),
        )
        self.forwarder = Forwarder(tun, self.table, wall_clock)
        udp_sockets = [DrainingSocket(socket.socket(fileno=fd), _never, f"udp-{fd}") for fd in udp]
        raw_sockets: list[RawEspSocket] = [PassedRawEsp(socket.socket(fileno=fd)) for fd in raw]
        # The daemon's send-only twins without DF (copy_df), in the same order.
        for sock, twin_fd in zip((*udp_sockets, *raw_sockets), no_df or [], strict=False):
            if twin_fd != sock.sock.fileno():
                twin = socket.socket(fileno=twin_fd)
                sock.no_df = (
                    PassedRawEsp(twin)
                    if isinstance(sock, RawEspSocket)
                    else DrainingSocket(twin, _never, f"udp-{twin_fd}")
                )
        self.forwarder.set_sockets(udp_sockets, raw_sockets)
        for sock in (*udp_sockets, *raw_sockets):
            # EMSGSIZE on our send: the kernel learnt a smaller path MTU; the daemon's
            # PathMtu reads it and sends us the new tunnel MTUs (aioipsec.runtime.pmtu).
            sock.on_too_big = sock.no_df.on_too_big = lambda host: self.send(("too_big", host))
        self._soon: asyncio.TimerHandle | None = None
        self.reader = FrameReader()
        self.reported: dict[int, tuple[int, int, int]] = {}
        self._totals: dict[str, int] = {}
        self.tun_fd = tun.fd
        self._stopped = asyncio.Event()

    def send(self, message: tuple[Any, ...]) -> None:
        # Blocking: a reservation must be in the daemon's socket buffer before the
        # sequence numbers are used (the daemon reads continuously, so this waits little).
        try:
            self.control.sendall(frame(message))
        except OSError:
            # The daemon is gone: nothing may be sent without it knowing the sequence
            # numbers (and its SAs are stale): stop here, at once.
            os._exit(1)

    def run(self) -> None:
        self.loop.add_reader(self.control.fileno(), self._readable)
        self.loop.add_reader(self.tun_fd, self._tun_readable)
        self.loop.call_later(REPORT_INTERVAL, self._periodic_report)
        self.send(("ready",))  # the daemon waits for this before it says it started
        self.loop.run_until_complete(self._stopped.wait())

    def _tun_readable(self) -> None:
        self.forwarder.tun_readable()
        if self._soon is None and len(self.table.children) <= REPORT_SOON_MAX_SAS:
            self._soon = self.loop.call_later(REPORT_SOON, self._report_soon)

    def _report_soon(self) -> None:
        self._soon = None
        self._report()

    def _periodic_report(self) -> None:
        self._report()
        self.loop.call_later(REPORT_INTERVAL, self._periodic_report)

    def _readable(self) -> None:
        try:
            data = self.control.recv(1 << 20)
        except (BlockingIOError, InterruptedError):
            return
        if not data:
            self._stopped.set()  # the daemon is gone (or closed us): stop
            return
        for message in self.reader.feed(data):
            self.apply(message)

    def apply(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        table = self.table
        if kind == "install":
            _, spec, nat_local, seq, peer, mtu = message
            self._install(spec, nat_local, seq, peer, mtu)
        elif kind == "remove":
            entry = table.remove(message[1])
            if entry is not None:
                self.reported.pop(entry.sa_out.spi, None)
        elif kind == "rebind":
            table.rebind_ike_sa(message[1], message[2])
        elif kind == "trap":
            table.add_trap(*message[1].config_and_child())
        elif kind == "clear_traps":
            table.clear_traps()
        elif kind == "peer":
            _, ike_sa_id, address = message
            for entry in table.children_of(ike_sa_id).values():
                entry.peer.address = address  # one tracker per IKE SA
        elif kind == "mtus":
            for child_sa_id, mtu in message[1].items():
                entry = table.children.get(child_sa_id)
                if entry is not None:
                    entry.mtu = mtu
        elif kind == "stop":
            self._stopped.set()

    def _install(
        self, spec: ChildSpec, nat_local: bool, seq: int, peer: tuple[str, int], mtu: int
    ) -> None:
        table = self.table
        if spec.rekey_of is not None and spec.rekey_of not in table.children:
            spec = replace(spec, rekey_of=None, defer_outbound=False)
        table.nat_local[spec.ike_sa_id] = nat_local
        now = wall_clock()
        entry, _ = table.install(spec, now)
        entry.peer.address = peer
        entry.mtu = mtu
        sa = entry.sa_out
        sa.seq = seq
        SequenceGuard(sa, self._reserve)
        if not entry.outbound_active:
            self.loop.call_later(OUTBOUND_SWITCH_MAX, table.activate_outbound, entry)
        self.forwarder.send_held(entry, table.spd.release_held(entry.reqid, now))

    def _reserve(self, spi: int, limit: int) -> None:
        self.send(("reserve", spi, limit))

    def _report(self) -> None:
        per_sa = {}
        reported = self.reported
        for entry in self.table.children.values():
            sa = entry.sa_out
            figures = (sa.seq, sa.bytes_out, sa.expired_drops)
            if reported.get(sa.spi) != figures:
                reported[sa.spi] = figures
                per_sa[sa.spi] = figures
        counters = self.forwarder.counters
        spd = self.table.spd
        totals = {
            "esp_drops": counters.esp_drops,
            "bypass_dropped": counters.bypass_dropped,
            "too_big_sent": counters.too_big_sent,
            "fragmented": counters.fragmented,
            "send_failures": counters.send_failures,
            "no_policy": spd.no_policy,
            "held": spd.held,
            "held_dropped": spd.held_dropped,
        }
        if per_sa or totals != self._totals:  # an idle worker does not wake its daemon
            self._totals = totals
            self.send(("counters", per_sa, totals))


def _never(data: memoryview, remote: tuple[str, int]) -> None:
    """The worker never reads its sockets (the daemon does)."""


def _die_with_parent(parent: int) -> None:
    """SIGKILL us when the daemon dies (Linux ``PR_SET_PDEATHSIG``), besides the end of
    the socketpair: a worker must never outlive its daemon (it holds the TUN device)."""
    import ctypes

    pr_set_pdeathsig = 1
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # the end of the socketpair still stops us
    if os.getppid() != parent:
        os._exit(1)  # the daemon died before prctl: too late for the signal


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m aioipsec.runtime.workers",
        description="aioipsec's encrypt worker (started by the daemon with workers = 2; "
        "not meant to be run by hand: it needs the daemon's descriptors).",
    )
    parser.add_argument("--tun", type=int, required=True)
    parser.add_argument("--control", type=int, required=True)
    parser.add_argument("--udp", default="")
    parser.add_argument("--raw", default="")
    parser.add_argument("--no-df", default="", help="the twins without DF (copy_df)")
    parser.add_argument("--vnet-hdr", action="store_true")
    parser.add_argument("--parent", type=int, required=True, help="the daemon's process id")
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--log-format", default="console")
    args = parser.parse_args(argv)
    from aioipsec.log import configure_logging

    configure_logging(args.log_level, args.log_format)
    _die_with_parent(args.parent)
    # The daemon's SIGTERM/SIGINT handling is not ours: it stops us through the socketpair
    # (or its end closing). A Ctrl-C on the terminal must not kill us before it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    control = socket.socket(fileno=args.control)
    control.setblocking(True)
    os.set_blocking(args.tun, False)
    udp = [int(fd) for fd in args.udp.split(",") if fd]
    raw = [int(fd) for fd in args.raw.split(",") if fd]
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    no_df = [int(fd) for fd in args.no_df.split(",") if fd]
    worker = Worker(control, _PassedTun(args.tun, args.vnet_hdr), udp, raw, no_df)
    log.info("encrypt worker running", pid=os.getpid())
    worker.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
