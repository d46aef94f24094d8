"""SA-steered data-plane workers (issue 17, route "every core"): the kernel's part.

With ``[daemon] worker_steering = "sa"`` and ``workers = N`` (N >= 2) the daemon keeps IKE
and the control socket, and N worker processes (``aioipsec.runtime.workers``) each own a
subset of the Child SAs, both directions. What steers a packet to its owner:

* **Inbound SPIs carry the owner.** The engine allocates our inbound SPIs; the daemon gives
  it :meth:`SpiSteering.hook` (``ikev2.sa.EngineContext.esp_spi_hook``), which writes the
  owning worker's index into the SPI's top octet (:data:`WORKER_SHIFT`), round robin.
  The peer puts that SPI into every ESP packet it sends us (RFC 4303 sec. 2.1).
* **UDP 4500**: each worker has a socket of its own bound to the port in the daemon's
  ``SO_REUSEPORT`` group, and a classic BPF program (``SO_ATTACH_REUSEPORT_CBPF``,
  :func:`reuseport_program`) returns the socket index for each datagram: the non-ESP
  marker (IKE) and anything shorter than 4 octets (a keepalive, RFC 3948 sec. 2.3) go to
  index 0, the daemon's socket; ESP goes to the socket of the worker in its SPI. The group's
  order is fixed by the daemon: its socket (0), its send-only twin without DF (1, when
  there is one), then the workers' sockets in index order. **A restarted worker gets its
  index back without re-binding or re-attaching anything**: the daemon opens every socket
  and keeps its own descriptor of each for its whole life (the worker gets a copy through
  ``pass_fds``), so no socket ever leaves the group while the daemon runs and the kernel
  never moves one to another slot (it does when a member closes: the last one takes the
  hole). Datagrams that arrive while the worker is dead wait in its socket's buffer.
* **Raw ESP (protocol 50)** is not steered by reuseport: every raw socket gets a copy of
  every packet. Each worker has a raw socket of its own (opened by the daemon, which has
  ``CAP_NET_RAW`` until it drops it) with a socket filter (``SO_ATTACH_FILTER``,
  :func:`raw_filter`) that accepts only the SPIs of its index; the daemon's raw socket
  accepts only SPIs no worker owns (counted as unknown).
* **Outbound**: the TUN device is multi-queue (``IFF_MULTI_QUEUE``), one queue per worker.
  The kernel picks a queue by flow hash, not by SA, so a worker that reads a packet whose
  Child SA another worker owns hands it to the owner over that worker's handoff socket
  (an ``AF_UNIX`` datagram socketpair per worker, opened by the daemon like the rest,
  :class:`Handoff`), counted (``handed_off``). Only the owner encrypts: sequence numbers
  stay with one process per SA (the reservations of ``workers.SequenceGuard``), so no
  AES-GCM nonce is used twice. One flow always hashes to one queue, so its packets keep
  their order through the handoff.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field

from .sockets import (
    IPPROTO_ESP,
    SO_ATTACH_FILTER,
    SO_ATTACH_REUSEPORT_CBPF,
    SO_REUSEPORT,
    SOCKET_BUFFER_BYTES,
    BpfInstruction,
    _mark,
    attach_cbpf,
)

# The owning worker's index is the SPI's top octet: up to 255 workers; the other 24 bits
# stay random (16.7 M SPIs per worker).
WORKER_SHIFT = 24
MAX_WORKERS = 255
STEERING_ENV = "AIOIPSEC_WORKER_STEERING"  # overrides [daemon] worker_steering
HANDOFF_BUFFER_BYTES = 4 * 1024 * 1024

# Classic BPF opcodes, <linux/filter.h> / <linux/bpf_common.h>.
_LD_W_ABS = 0x20  # A = 32-bit word at packet offset k (network order)
_LD_W_IND = 0x40  # A = 32-bit word at packet offset X + k
_LDX_B_MSH = 0xB1  # X = 4 * (packet[k] & 0x0F): the IPv4 header length
_ALU_RSH_K = 0x74
_ALU_ADD_K = 0x04
_JEQ_K = 0x15
_JGE_K = 0x35
_RET_A = 0x16
_RET_K = 0x06
_ACCEPT = 0xFFFFFFFF  # a socket filter's "keep the whole packet"

Instruction = BpfInstruction


def owner_of(spi: int, workers: int) -> int:
    """The worker that owns the inbound SA SPI (SPIs we did not allocate in this mode map
    somewhere too, never out of range)."""
    return (spi >> WORKER_SHIFT) % workers


class SpiSteering:
    """The engine's SPI hook: each new inbound SPI gets the next worker's index."""

    def __init__(self, workers: int) -> None:
        if not 1 <= workers <= MAX_WORKERS:
            raise ValueError(f"{workers} workers: give 1 to {MAX_WORKERS}")
        self.workers = workers
        self._next = 0

    def hook(self, spi: bytes) -> bytes:
        index = self._next
        self._next = (index + 1) % self.workers
        return bytes((index,)) + spi[1:]


def reuseport_program(base: int, workers: int) -> list[Instruction]:
    """The UDP 4500 group's program: socket index for a datagram, whose UDP payload starts
    at offset 0. Zero (the non-ESP marker: IKE) -> 0, the daemon; a payload shorter than 4
    octets (a keepalive) makes the load fail, which returns 0 too; an SPI whose worker bits
    name no worker -> 0 (the daemon counts it unknown); else BASE + the worker index."""
    return [
        (_LD_W_ABS, 0, 0, 0),
        (_JEQ_K, 4, 0, 0),  # IKE: to the last instruction
        (_ALU_RSH_K, 0, 0, WORKER_SHIFT),
        (_JGE_K, 2, 0, workers),  # no such worker: to the last instruction
        (_ALU_ADD_K, 0, 0, base),
        (_RET_A, 0, 0, 0),
        (_RET_K, 0, 0, 0),
    ]


def raw_filter(ipv4: bool, workers: int, index: int | None) -> list[Instruction]:
    """A raw ESP socket's filter: accept the SPIs of worker INDEX, or with None (the
    daemon's socket) the SPIs of no worker. An IPv4 raw socket sees the IP header first
    (its length from the IHL); an IPv6 one the ESP header."""
    load = [(_LDX_B_MSH, 0, 0, 0), (_LD_W_IND, 0, 0, 0)] if ipv4 else [(_LD_W_ABS, 0, 0, 0)]
    test = (_JEQ_K, 0, 1, index) if index is not None else (_JGE_K, 0, 1, workers)
    return [*load, (_ALU_RSH_K, 0, 0, WORKER_SHIFT), test, (_RET_K, 0, 0, _ACCEPT),
            (_RET_K, 0, 0, 0)]  # fmt: skip


def _drain(sock: socket.socket) -> None:
    """Read away what queued before a filter was attached."""
    sock.setblocking(False)
    with contextlib.suppress(BlockingIOError, InterruptedError):
        while True:
            sock.recv(1 << 16)


def join_udp_group(host: str, port: int, family: socket.AddressFamily) -> socket.socket:
    """A worker's port-4500 socket, in the group of the daemon's (bound with
    SO_REUSEPORT by ``sockets.open_udp_socket``); marked like the daemon's."""
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.setsockopt(socket.SOL_SOCKET, SO_REUSEPORT, 1)
        _mark(sock)
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER_BYTES)
        sock.bind((host, port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def filtered_raw_socket(family: socket.AddressFamily, workers: int, index: int) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_RAW, IPPROTO_ESP)
    try:
        _mark(sock)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER_BYTES)
        attach_cbpf(sock, SO_ATTACH_FILTER, raw_filter(family == socket.AF_INET, workers, index))
        _drain(sock)
    except OSError:
        sock.close()
        raise
    return sock


def restrict_raw(sock: socket.socket, workers: int) -> None:
    """The daemon's own raw ESP socket in this mode: only the SPIs no worker owns."""
    attach_cbpf(sock, SO_ATTACH_FILTER, raw_filter(sock.family == socket.AF_INET, workers, None))
    _drain(sock)


@dataclass
class Handoff:
    """One AF_UNIX datagram socketpair per worker: every worker sends on ``tx[i]`` the
    packets it read from the TUN for worker i's SAs; worker i reads ``rx[i]``."""

    rx: list[socket.socket] = field(default_factory=list)
    tx: list[socket.socket] = field(default_factory=list)

    @classmethod
    def open(cls, workers: int) -> Handoff:
        handoff = cls()
        for _ in range(workers):
            rx, tx = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
            for sock in (rx, tx):
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, HANDOFF_BUFFER_BYTES)
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, HANDOFF_BUFFER_BYTES)
                sock.setblocking(False)
            handoff.rx.append(rx)
            handoff.tx.append(tx)
        return handoff

    def close(self) -> None:
        for sock in (*self.rx, *self.tx):
            sock.close()


@dataclass
class WorkerSockets:
    """What the daemon opened for one worker (its own descriptors: kept for the daemon's
    life, passed again to a restarted worker)."""

    index: int
    tun_fd: int
    udp: list[socket.socket] = field(default_factory=list)
    raw: list[socket.socket] = field(default_factory=list)


def open_worker_sockets(
    workers: int,
    tun_fds: list[int],
    daemon_udp: Iterable[tuple[socket.socket, bool]],
    daemon_raw: Iterable[socket.socket],
) -> list[WorkerSockets]:
    """Per worker: its port-4500 sockets (one per address family, joined to the daemon's
    group in index order, then the group's program attached) and its filtered raw ESP
    sockets; the daemon's raw sockets restricted. DAEMON_UDP: each port-4500 socket of the
    daemon and whether it has a send-only twin in its group (index 1)."""
    result = [WorkerSockets(i, tun_fds[i]) for i in range(workers)]
    try:
        for daemon_sock, has_twin in daemon_udp:
            host, port = daemon_sock.getsockname()[:2]
            for sockets in result:
                sockets.udp.append(join_udp_group(host, port, daemon_sock.family))
            # Any member's program is the group's: the daemon's socket is index 0, its
            # twin 1, the workers' sockets follow in the order they were bound above.
            attach_cbpf(
                daemon_sock,
                SO_ATTACH_REUSEPORT_CBPF,
                reuseport_program(2 if has_twin else 1, workers),
            )
        for raw in daemon_raw:
            for sockets in result:
                sockets.raw.append(filtered_raw_socket(raw.family, workers, sockets.index))
            restrict_raw(raw, workers)
    except OSError:
        for sockets in result:
            for sock in (*sockets.udp, *sockets.raw):
                sock.close()
        raise
    return result


def close_worker_sockets(all_sockets: list[WorkerSockets]) -> None:
    for sockets in all_sockets:
        for sock in (*sockets.udp, *sockets.raw):
            sock.close()
        sockets.udp, sockets.raw = [], []


def steering_mode(configured: str) -> str:
    """``direction`` or ``sa``: AIOIPSEC_WORKER_STEERING if set, else the config."""
    text = os.environ.get(STEERING_ENV, "").strip().lower() or configured
    if text not in ("direction", "sa"):
        raise ValueError(
            f"worker_steering = {text!r}: give direction (workers = 2: an encrypt worker) "
            "or sa (workers = N: N workers, each owning some Child SAs)"
        )
    return text
