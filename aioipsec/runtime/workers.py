"""Data-plane worker processes (issue 17, route "every core"): the direction split, and
SA-steered workers.

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

**SA-steered workers** (``worker_steering = sa``, ``workers = N``): :class:`SteeredWorkers`
starts N :class:`SaWorker` handles, each a :class:`SteeredWorker` process that owns the
Child SAs whose inbound SPI carries its index, both directions; the daemon keeps IKE and
the control socket and decrypts nothing of ours. How the kernel steers each packet to its
owner (SPI bits, the port-4500 reuseport program, raw-socket filters, the multi-queue TUN
and the handoff sockets) is in :mod:`aioipsec.runtime.steering`. Every worker gets every
SA (its SPD decides which SA a packet is for) but only the owner reserves sequence
numbers and seals, as above. A restarted worker's inbound SAs start with the replay
window at the highest sequence number its predecessor last reported (every number in the
window taken): a packet the dead worker accepted after its last report (reports come
10 ms after traffic) could be accepted once more; it was authenticated, and only its
duplicate reaches the TUN (RFC 4303 sec. 3.4.3 makes anti-replay a receiver's service).

**Nothing leaves in clear while no worker runs**: the routes lead only into the TUN device
and the fail-closed nftables rules stay (``aioipsec.runtime.failclosed``); packets the
kernel queues in the TUN meanwhile (up to its queue length) are sent by the next worker or
dropped by the kernel.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
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
from .steering import (
    Handoff,
    SpiSteering,
    WorkerSockets,
    close_worker_sockets,
    open_worker_sockets,
    owner_of,
)

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
MAX_WORKERS = 64
# As aioipsec.runtime.datapath: a rekeyed SA's inbound side decrypts this long after its
# deletion (an SA-steered worker decrypts, so it keeps the grace itself).
REKEYED_INBOUND_GRACE = 5.0


def worker_count(configured: int, steering: str = "direction") -> int:
    """The number of data-plane processes: ``AIOIPSEC_WORKERS`` if set, else the config.
    1 is today's single process; with ``worker_steering = direction`` 2 is the direction
    split (one encrypt worker), with ``sa`` N >= 2 starts N SA-steered workers."""
    text = os.environ.get(WORKERS_ENV, "").strip()
    value = configured
    if text:
        try:
            value = int(text)
        except ValueError:
            raise ValueError(f"{WORKERS_ENV}={text!r} is not a number: give 1 to 64") from None
    if not 1 <= value <= MAX_WORKERS:
        raise ValueError(f"workers = {value}: give 1 (one process) to {MAX_WORKERS}")
    if steering == "direction" and value > 2:
        raise ValueError(
            f"workers = {value} with worker_steering = direction: the direction split has "
            "one encrypt worker (workers = 2); set worker_steering = sa for more"
        )
    return value


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

    role = "encrypt worker"

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
        # Authenticated ESP from a peer's new address (an SA-steered worker decrypts).
        self.on_peer_moved: Callable[[int, tuple[str, int]], None] | None = None
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
                f"cannot start the {self.role}: nothing is sent through its tunnels "
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
        argv, fds = self._command(theirs.fileno())
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
        log.info(f"{self.role} started", pid=self.process.pid, restarts=self.restarts)

    def _command(self, control_fd: int) -> tuple[list[str], list[int]]:
        """The worker's argv and the descriptors it inherits."""
        fds = [self.tun_fd, *self.udp_fds, *self.raw_fds, *self.no_df_fds, control_fd]
        argv = [
            sys.executable, "-m", "aioipsec.runtime.workers",
            "--tun", str(self.tun_fd), "--control", str(control_fd),
            "--udp", ",".join(map(str, self.udp_fds)), "--raw", ",".join(map(str, self.raw_fds)),
            "--no-df", ",".join(map(str, self.no_df_fds)),
            *(["--vnet-hdr"] if self.vnet_hdr else []), "--parent", str(os.getpid()),
            *self._log_args,
        ]  # fmt: skip
        return argv, list(dict.fromkeys(fds))

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
        # The worker starts reading (TUN, sockets) only now: a packet read before its SAs
        # were back would be dropped for no SA.
        self.send(("replayed",))

    def close(self) -> None:
        self._closing = True
        self._drop_socket()
        process = self.process
        if process is not None and process.poll() is None:
            process.kill()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                log.warning(f"{self.role} did not exit", pid=process.pid)

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
            f"{self.role} died: restarting it, its SAs re-installed past their "
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
        self.send(
            ("install", spec, nat_local, seq, entry.peer.address, entry.mtu,
             self._inbound_state(entry, replayed))
        )  # fmt: skip

    def _inbound_state(self, entry: ChildEntry, replayed: bool) -> tuple[int, int, int] | None:
        """What a restarted worker's inbound SA starts from (the daemon decrypts here)."""
        return None

    def remove(self, child_sa_id: int, spi_out: int, *, keep_inbound: bool = False) -> None:
        self.reserved.pop(spi_out, None)
        self.skipped.pop(spi_out, None)
        self.send(("remove", child_sa_id, keep_inbound))

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
            per_sa, counters = message[1], message[2]
            by_spi_out = self.table.by_spi_out
            for spi, (seq, nbytes, expired_drops) in per_sa.items():
                entry = by_spi_out.get(spi)
                if entry is not None:
                    sa = entry.sa_out
                    sa.seq, sa.bytes_out, sa.expired_drops = seq, nbytes, expired_drops
            if len(message) > 3:  # an SA-steered worker decrypts its SAs too
                by_spi_in = self.table.by_spi_in
                for spi, figures in message[3].items():
                    entry = by_spi_in.get(spi)
                    if entry is not None:
                        sa, highest = entry.sa_in, figures[-1]
                        (sa.packets_in, sa.bytes_in, sa.icv_failures, sa.replays,
                         sa.malformed, sa.policy_drops, sa.dummy) = figures[:-1]  # fmt: skip
                        if sa.replay is not None:
                            sa.replay.highest = highest
            self.counters = counters
            self.sync_peers()
        elif kind == "acquire":
            self._on_acquire(message[1], message[2])
        elif kind == "too_big":
            if self.on_too_big is not None:
                self.on_too_big(message[1])
        elif kind == "peer_moved":
            if self.on_peer_moved is not None:
                self.on_peer_moved(message[1], message[2])
        elif kind == "limit":
            self._on_limit(message[1], message[2], message[3])

    def total(self, name: str) -> int:
        return self._base.get(name, 0) + self.counters.get(name, 0)

    def packets_out(self, sa: EspSa) -> int:
        """Packets sent on SA (its sequence number less the numbers restarts skipped)."""
        return sa.seq - self.skipped.get(sa.spi, 0)


class SaWorker(EncryptWorker):
    """The daemon's handle on one SA-steered worker (``worker_steering = sa``): it reads
    its TUN queue, its port-4500 socket, its raw ESP sockets and its handoff socket, and
    encrypts and decrypts the Child SAs whose inbound SPI carries its index."""

    def __init__(self, group: SteeredWorkers, index: int, table: ChildTable, **kwargs: Any):
        super().__init__(table, **kwargs)
        self.group = group
        self.index = index
        self.role = f"SA-steered worker {index}"

    def _command(self, control_fd: int) -> tuple[list[str], list[int]]:
        argv, fds = super()._command(control_fd)
        group = self.group
        sockets = group.sockets[self.index]
        rx_udp = [sock.fileno() for sock in sockets.udp]
        rx_raw = [sock.fileno() for sock in sockets.raw]
        handoff_rx = group.handoff.rx[self.index].fileno()
        handoff_tx = [sock.fileno() for sock in group.handoff.tx]
        argv += [
            "--index", str(self.index), "--workers", str(group.count),
            "--rx-udp", ",".join(map(str, rx_udp)), "--rx-raw", ",".join(map(str, rx_raw)),
            "--handoff-rx", str(handoff_rx), "--handoff-tx", ",".join(map(str, handoff_tx)),
        ]  # fmt: skip
        return argv, list(dict.fromkeys([*fds, *rx_udp, *rx_raw, handoff_rx, *handoff_tx]))

    def _owns(self, entry: ChildEntry) -> bool:
        return owner_of(entry.sa_in.spi, self.group.count) == self.index

    # install: a worker that does not own an SA never reserves its sequence numbers (it
    # hands its packets to the owner), so its ``reserved`` has none: the SA is sent to it
    # as it is in the daemon's table.

    def _inbound_state(self, entry: ChildEntry, replayed: bool) -> tuple[int, int, int] | None:
        if not replayed or not self._owns(entry):
            return None
        sa = entry.sa_in
        return (sa.packets_in, sa.bytes_in, 0 if sa.replay is None else sa.replay.highest)

    def _handle(self, message: tuple[Any, ...]) -> None:
        super()._handle(message)
        if message[0] == "ready" and all(w.ready.is_set() for w in self.group.handles):
            self.group.ready.set()


class SteeredWorkers:
    """``worker_steering = sa``: N :class:`SaWorker` s, with the interface of
    :class:`EncryptWorker` that :class:`aioipsec.runtime.datapath.DataPath` uses. The
    daemon opens every descriptor the workers use (:mod:`aioipsec.runtime.steering`) and
    keeps them all its life, so that a restarted worker gets the same socket indexes, TUN
    queue and handoff socket. Every worker knows every Child SA (its SPD decides which SA
    a packet it read from its TUN queue is for), but only the owner sends or decrypts."""

    def __init__(
        self,
        table: ChildTable,
        *,
        tun: Any,
        workers: int,
        on_acquire: Callable[[str, str], None],
        on_limit: Callable[[int, str, bool], None],
        log_level: str = "info",
        log_format: str = "console",
    ) -> None:
        self.table = table
        self.tun = tun
        self.count = workers
        self.steering = SpiSteering(workers)
        self.ready = asyncio.Event()
        self.on_too_big: Callable[[str], None] | None = None
        self.on_peer_moved: Callable[[int, tuple[str, int]], None] | None = None
        self.sockets: list[WorkerSockets] = []
        self.handoff = Handoff()
        vnet = bool(getattr(tun, "vnet_hdr", False))
        self.handles = [
            SaWorker(self, index, table, tun_fd=-1, vnet_hdr=vnet, on_acquire=on_acquire,
                     on_limit=on_limit, log_level=log_level, log_format=log_format)
            for index in range(workers)
        ]  # fmt: skip

    def open(self, udp: list[DrainingSocket], raw: list[RawEspSocket]) -> None:
        """Before the daemon drops CAP_NET_RAW: the TUN queues, the workers' sockets in
        the port-4500 groups (after the daemon's socket and its twin), their filtered raw
        ESP sockets and the handoff sockets."""
        tun_fds = [self.tun.fileno(), *(self.tun.open_queue() for _ in range(self.count - 1))]
        self.sockets = open_worker_sockets(
            self.count, tun_fds, [(s.sock, s.no_df is not s) for s in udp], [s.sock for s in raw]
        )
        self.handoff = Handoff.open(self.count)
        for handle, sockets in zip(self.handles, self.sockets, strict=True):
            handle.tun_fd = sockets.tun_fd

    def start(
        self,
        loop: asyncio.AbstractEventLoop,
        udp_fds: list[int],
        raw_fds: list[int],
        no_df_fds: list[int] | None = None,
    ) -> None:
        for handle in self.handles:
            handle.on_too_big = self.on_too_big
            handle.on_peer_moved = self.on_peer_moved
            handle.start(loop, udp_fds, raw_fds, no_df_fds)

    def close(self) -> None:
        for handle in self.handles:
            handle.close()
        close_worker_sockets(self.sockets)
        self.handoff.close()

    def owner(self, entry: ChildEntry) -> SaWorker:
        return self.handles[owner_of(entry.sa_in.spi, self.count)]

    # What DataPath calls on EncryptWorker, for each worker.
    def install(self, entry: ChildEntry) -> None:
        for handle in self.handles:
            handle.install(entry)

    def remove(self, child_sa_id: int, spi_out: int, *, keep_inbound: bool = False) -> None:
        for handle in self.handles:
            handle.remove(child_sa_id, spi_out, keep_inbound=keep_inbound)

    def send(self, message: tuple[Any, ...]) -> None:
        for handle in self.handles:
            handle.send(message)

    def add_trap(self, trap: TrapSpec) -> None:
        for handle in self.handles:
            handle.add_trap(trap)

    def clear_traps(self) -> None:
        for handle in self.handles:
            handle.clear_traps()

    def send_mtus(self) -> None:
        for handle in self.handles:
            handle.send_mtus()

    def sync_peers(self) -> None:
        for handle in self.handles:
            handle.sync_peers()

    def total(self, name: str) -> int:
        return sum(handle.total(name) for handle in self.handles)

    def packets_out(self, sa: EspSa) -> int:
        return sa.seq - self.skipped.get(sa.spi, 0)

    @property
    def skipped(self) -> dict[int, int]:
        merged: dict[int, int] = {}
        for handle in self.handles:
            for spi, count in handle.skipped.items():
                merged[spi] = merged.get(spi, 0) + count
        return merged

    @property
    def restarts(self) -> int:
        return sum(handle.restarts for handle in self.handles)

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        return self.handles[0].process

    def listing(self) -> list[dict[str, Any]]:
        """Per worker: its process, restarts, the Child SAs it owns and its counters."""
        owned = collections.Counter(
            owner_of(entry.sa_in.spi, self.count) for entry in self.table.children.values()
        )
        return [
            {
                "index": handle.index,
                "pid": handle.process.pid if handle.process is not None else 0,
                "restarts": handle.restarts,
                "child_sas": owned.get(handle.index, 0),
                **{name: handle.total(name) for name in WORKER_COUNTERS},
            }
            for handle in self.handles
        ]


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
        self.forwarder = self._forwarder(tun)
        self.forwarder.start_offloads()  # a worker starts with its capabilities dropped
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

    def _forwarder(self, tun: _PassedTun) -> Forwarder:
        return Forwarder(tun, self.table, wall_clock)

    def _installed(self) -> None:
        """After an install message (the SA-steered worker releases what it held)."""

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
        self.loop.call_later(REPORT_INTERVAL, self._periodic_report)
        self.loop.run_until_complete(self._stopped.wait())

    def _start_reading(self) -> None:
        """The daemon has sent the whole table ("replayed"): read the TUN from now on."""
        self.loop.add_reader(self.tun_fd, self._tun_readable)
        self.send(("ready",))  # the daemon waits for this before it says it started

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

    def _readable(self, flags: int = 0) -> bool:
        """Apply what the daemon sent; False when nothing was there."""
        try:
            data = self.control.recv(1 << 20, flags)
        except (BlockingIOError, InterruptedError):
            return False
        if not data:
            self._stopped.set()  # the daemon is gone (or closed us): stop
            return False
        for message in self.reader.feed(data):
            self.apply(message)
        return True

    def catch_up(self) -> None:
        """Apply every message the daemon has sent so far, now (the socket is blocking for
        our sends: MSG_DONTWAIT for this read)."""
        while self._readable(socket.MSG_DONTWAIT):
            pass

    def apply(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        table = self.table
        if kind == "install":
            _, spec, nat_local, seq, peer, mtu, inbound = message
            self._install(spec, nat_local, seq, peer, mtu, inbound)
            self._installed()
        elif kind == "remove":
            _, child_sa_id, keep_inbound = message
            entry = table.remove(child_sa_id, keep_inbound=keep_inbound)
            if entry is not None:
                self.reported.pop(entry.sa_out.spi, None)
                if keep_inbound:
                    self.loop.call_later(REKEYED_INBOUND_GRACE, table.drop_inbound, entry)
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
        elif kind == "replayed":
            self._start_reading()
        elif kind == "stop":
            self._stopped.set()

    def _install(
        self,
        spec: ChildSpec,
        nat_local: bool,
        seq: int,
        peer: tuple[str, int],
        mtu: int,
        inbound: tuple[int, int, int] | None = None,
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
        if inbound is not None:
            restore_inbound(entry.sa_in, *inbound)
        if not entry.outbound_active:
            self.loop.call_later(OUTBOUND_SWITCH_MAX, table.activate_outbound, entry)
        self.forwarder.send_held(entry, table.spd.release_held(entry.reqid, now))

    def _reserve(self, spi: int, limit: int) -> None:
        self.send(("reserve", spi, limit))

    def _owns(self, entry: ChildEntry) -> bool:
        return True  # the encrypt worker sends on every SA

    def _report(self) -> None:
        per_sa = {}
        reported = self.reported
        for entry in self.table.children.values():
            if not self._owns(entry):
                continue
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
        totals.update(self._more_totals())
        per_sa_in = self._inbound_report()
        if per_sa or per_sa_in or totals != self._totals:  # an idle worker sleeps
            self._totals = totals
            if per_sa_in is None:
                self.send(("counters", per_sa, totals))
            else:
                self.send(("counters", per_sa, totals, per_sa_in))

    def _more_totals(self) -> dict[str, int]:
        return {}

    def _inbound_report(self) -> dict[int, tuple[int, ...]] | None:
        return None  # the daemon decrypts


def restore_inbound(sa: EspSa, packets_in: int, bytes_in: int, highest: int) -> None:
    """A restarted SA-steered worker's inbound SA: the counters the daemon last heard of,
    and a replay window at the highest sequence number reported with every number in it
    taken (RFC 4303 sec. 3.4.3: what the dead worker accepted is not accepted again,
    except what it accepted after its last report, see the module doc)."""
    sa.packets_in, sa.bytes_in = packets_in, bytes_in
    replay = sa.replay
    if highest and replay is not None:
        # Every number of the window up to HIGHEST recorded as received (its public API:
        # at most one window, 1024 calls, per SA and restart).
        for seq in range(max(1, highest - replay.size + 1), highest + 1):
            replay.update(seq)
    sa._recompute_checks()


# What an SA-steered worker counts (besides the encrypt worker's counters).
WORKER_COUNTERS = (
    "esp_in",  # ESP datagrams its own sockets received
    "foreign_in",  # packets decrypted on SAs it does not own (the steering failed)
    "handed_off",  # packets read from its TUN queue for another worker's SA
    "handoff_in",  # packets other workers handed to it
    "handoff_dropped",  # handoffs the owner's socket would not take (full)
    "unknown_spi",
)
# A handoff: the Child SA id the sender's SPD chose, and how many times it was handed on.
_HANDOFF = struct.Struct("!IB")
_SPI = struct.Struct("!I")
# ESP for an SPI of ours not installed yet (see SteeredWorker._known_first): held this long,
# at most this many packets.
HELD_IN_SECONDS = 0.5
HELD_IN_MAX = 256


class SteeredForwarder(Forwarder):
    """The forwarder of an SA-steered worker: a packet for an SA another worker owns is
    handed to that worker (prefixed with the Child SA id), never encrypted here."""

    def __init__(
        self, tun: Any, table: ChildTable, index: int, workers: int, handoff: list[socket.socket],
        on_peer_moved: Callable[[int, tuple[str, int]], None],
    ) -> None:  # fmt: skip
        super().__init__(tun, table, wall_clock, on_peer_moved=on_peer_moved)
        self.index = index
        self.workers = workers
        self.handoff = handoff
        self.handed_off = 0
        self.handoff_dropped = 0

    def send_protected(self, child: ChildEntry, packet: memoryview) -> None:
        owner = owner_of(child.sa_in.spi, self.workers)
        if owner == self.index:
            super().send_protected(child, packet)
            return
        self.hand_off(owner, child.child_sa_id, packet, 0)

    def hand_off(self, owner: int, child_sa_id: int, packet: memoryview, hops: int) -> None:
        try:
            self.handoff[owner].sendmsg([_HANDOFF.pack(child_sa_id, hops), packet])
            self.handed_off += 1
        except OSError:  # full (the owner is slow or restarting): dropped, as a queue would
            self.handoff_dropped += 1


class SteeredWorker(Worker):
    """An SA-steered worker: the encrypt worker's outbound path on its TUN queue (with
    handoffs), plus the inbound path on its own sockets."""

    def __init__(
        self,
        control: socket.socket,
        tun: _PassedTun,
        udp: list[int],
        raw: list[int],
        no_df: list[int],
        *,
        index: int,
        workers: int,
        rx_udp: list[int],
        rx_raw: list[int],
        handoff_rx: int,
        handoff_tx: list[int],
    ) -> None:
        self.index = index
        self.workers = workers
        self.handoff_tx = [socket.socket(fileno=fd) for fd in handoff_tx]
        super().__init__(control, tun, udp, raw, no_df)
        forwarder = self.forwarder
        flush = forwarder.flush_tun if tun.vnet_hdr else None

        def drained() -> None:
            if flush is not None:
                flush()
            self._traffic()

        self._flush = flush
        self._held_in: list[tuple[float, int, bytes, tuple[str, int], Any]] = []
        self._held_timer: asyncio.TimerHandle | None = None
        self.rx: list[DrainingSocket] = []
        for fd in rx_udp:
            sock = DrainingSocket(socket.socket(fileno=fd), self._not_esp, f"udp-w{index}")
            sock.esp_handler = self._known_first(forwarder.esp_received_udp)
            self.rx.append(sock)
        for fd in rx_raw:
            raw_sock = PassedRawEsp(socket.socket(fileno=fd))
            # read, not only sent on
            raw_sock._handler = self._known_first(forwarder.esp_received_raw)
            self.rx.append(raw_sock)
        for sock in self.rx:
            sock.drained = drained
        self.handoff_rx = socket.socket(fileno=handoff_rx)
        self.handoff_rx.setblocking(False)
        self._handoff_buffer = bytearray(65536 + 512)
        self.reported_in: dict[int, tuple[int, ...]] = {}
        self.handoff_in = 0
        self.handoff_unknown = 0
        self.not_esp = 0

    def _known_first(
        self, handler: Callable[[memoryview, tuple[str, int]], None]
    ) -> Callable[[memoryview, tuple[str, int]], None]:
        """HANDLER, after the daemon's pending messages when the packet's SPI is unknown.
        The daemon installs a Child SA in its table and tells the engine, which answers
        the peer at once; the peer's first packets on the new SA can be here before the
        install message has been read (the daemon decrypted itself before, without this
        race; tests/hardening/test_rekey_storm lost 13 datagrams in rekeys). One set
        lookup per packet (~0.1 us) against a drop per rekey."""
        known = self.table.by_spi_in
        unpack = _SPI.unpack_from

        def esp(packet: memoryview, remote: tuple[str, int]) -> None:
            if (
                len(packet) >= 8
                and unpack(packet)[0] not in known
                and self._hold(packet, remote, handler)
            ):
                return
            handler(packet, remote)

        return esp

    def _hold(
        self,
        packet: memoryview,
        remote: tuple[str, int],
        handler: Callable[[memoryview, tuple[str, int]], None],
    ) -> bool:
        """An SPI we do not know: apply what the daemon sent; still unknown but ours, hold
        the packet a while. The daemon's engine sends its CREATE_CHILD_SA response before
        the daemon installs the SA (aioipsec.runtime.engine: datagrams, then events), so
        the peer's first packets on it can be here before the daemon has even written the
        install. Held packets go through when an install comes, or at the end of
        HELD_IN_SECONDS (then counted as unknown SPI); bounded (a forged SPI costs a copy)."""
        self.catch_up()
        spi = _SPI.unpack_from(packet)[0]
        if spi in self.table.by_spi_in or owner_of(spi, self.workers) != self.index:
            return False
        if len(self._held_in) >= HELD_IN_MAX:
            return False
        self._held_in.append((time.monotonic(), spi, bytes(packet), remote, handler))
        if self._held_timer is None:
            self._held_timer = self.loop.call_later(HELD_IN_SECONDS, self._release_held, True)
        return True

    def _release_held(self, expired: bool = False) -> None:
        """Held packets whose SA is there now (or, EXPIRED, older than HELD_IN_SECONDS)."""
        if expired:
            self._held_timer = None
        if not self._held_in:
            return
        known = self.table.by_spi_in
        deadline = time.monotonic() - HELD_IN_SECONDS
        keep = []
        for item in self._held_in:
            at, spi, data, remote, handler = item
            if spi in known or at <= deadline:
                handler(memoryview(data), remote)
            else:
                keep.append(item)
        self._held_in = keep
        if self._flush is not None:
            self._flush()
        if keep and self._held_timer is None:
            self._held_timer = self.loop.call_later(HELD_IN_SECONDS, self._release_held, True)

    def _installed(self) -> None:
        self._release_held()

    def _forwarder(self, tun: _PassedTun) -> Forwarder:
        return SteeredForwarder(
            tun, self.table, self.index, self.workers, self.handoff_tx,
            lambda ike_sa_id, address: self.send(("peer_moved", ike_sa_id, address)),
        )  # fmt: skip

    def _start_reading(self) -> None:
        for sock in self.rx:
            sock.start(self.loop)
        self.loop.add_reader(self.handoff_rx.fileno(), self._handoff_readable)
        super()._start_reading()

    def _not_esp(self, data: memoryview, remote: tuple[str, int]) -> None:
        self.not_esp += 1  # the group's program sends IKE and keepalives to the daemon

    def _traffic(self) -> None:
        if self._soon is None and len(self.table.children) <= REPORT_SOON_MAX_SAS:
            self._soon = self.loop.call_later(REPORT_SOON, self._report_soon)

    def _handoff_readable(self) -> None:
        """Packets another worker read from its TUN queue for our SAs: sent on the Child SA
        it named (its SPD's decision), if we still have it."""
        buffer = self._handoff_buffer
        view = memoryview(buffer)
        children = self.table.children
        forwarder = self.forwarder
        assert isinstance(forwarder, SteeredForwarder)
        for _ in range(256):
            try:
                length = self.handoff_rx.recv_into(buffer)
            except (BlockingIOError, InterruptedError):
                break
            self.handoff_in += 1
            child_sa_id, hops = _HANDOFF.unpack_from(buffer)
            packet = view[_HANDOFF.size : length]
            entry = children.get(child_sa_id)
            if entry is None:
                # The worker that read it applied the install first: ours is in our control
                # socket (the daemon writes each change to every worker at once).
                self.catch_up()
                entry = children.get(child_sa_id)
            if entry is not None and self._owns(entry):
                forwarder.send_protected(entry, packet)
                continue
            # The SA went away here before the sender saw it go (a rekey's old SA): our
            # SPD's choice, at most once more to another worker.
            decided = self.table.spd.decide(packet, wall_clock(), self.table.forwarding)
            if type(decided) is ChildEntry and self._owns(decided):
                forwarder.send_protected(decided, packet)
            elif type(decided) is ChildEntry and hops == 0:
                owner = owner_of(decided.sa_in.spi, self.workers)
                forwarder.hand_off(owner, decided.child_sa_id, packet, 1)
            else:
                self.handoff_unknown += 1
        forwarder.batch.flush()
        if self.table.events:
            self.table.handle_events()
        self._traffic()

    def _owns(self, entry: ChildEntry) -> bool:
        return owner_of(entry.sa_in.spi, self.workers) == self.index

    def _more_totals(self) -> dict[str, int]:
        forwarder = self.forwarder
        assert isinstance(forwarder, SteeredForwarder)
        foreign = sum(
            entry.sa_in.packets_in
            for entry in self.table.children.values()
            if not self._owns(entry)
        )
        return {
            "esp_in": sum(sock.datagrams_in for sock in self.rx),
            "foreign_in": foreign,
            "handed_off": forwarder.handed_off,
            "handoff_in": self.handoff_in,
            "handoff_dropped": forwarder.handoff_dropped + self.handoff_unknown,
            "unknown_spi": self.table.sad.unknown_spi,
            "nat_mapping_changes": forwarder.counters.nat_mapping_changes,
        }

    def _inbound_report(self) -> dict[int, tuple[int, ...]]:
        per_sa: dict[int, tuple[int, ...]] = {}
        reported = self.reported_in
        for entry in self.table.children.values():
            if not self._owns(entry):
                continue
            sa = entry.sa_in
            figures = (
                sa.packets_in, sa.bytes_in, sa.icv_failures, sa.replays, sa.malformed,
                sa.policy_drops, sa.dummy, 0 if sa.replay is None else sa.replay.highest,
            )  # fmt: skip
            if reported.get(sa.spi) != figures:
                reported[sa.spi] = figures
                per_sa[sa.spi] = figures
        return per_sa


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


def _fds(text: str) -> list[int]:
    return [int(fd) for fd in text.split(",") if fd]


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
    steered = parser.add_argument_group("SA-steered worker (worker_steering = sa)")
    steered.add_argument("--index", type=int, help="this worker's index (in its SPIs)")
    steered.add_argument("--workers", type=int, default=0)
    steered.add_argument("--rx-udp", default="", help="its port-4500 sockets")
    steered.add_argument("--rx-raw", default="", help="its filtered raw ESP sockets")
    steered.add_argument("--handoff-rx", type=int, default=-1)
    steered.add_argument("--handoff-tx", default="", help="every worker's handoff socket")
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
    udp, raw = _fds(args.udp), _fds(args.raw)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    no_df = _fds(args.no_df)
    tun = _PassedTun(args.tun, args.vnet_hdr)
    if args.index is None:
        worker = Worker(control, tun, udp, raw, no_df)
        log.info("encrypt worker running", pid=os.getpid())
    else:
        worker = SteeredWorker(
            control, tun, udp, raw, no_df, index=args.index, workers=args.workers,
            rx_udp=_fds(args.rx_udp), rx_raw=_fds(args.rx_raw), handoff_rx=args.handoff_rx,
            handoff_tx=_fds(args.handoff_tx),
        )  # fmt: skip
        log.info("SA-steered worker running", index=args.index, pid=os.getpid())
    worker.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
