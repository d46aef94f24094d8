"""The outer path MTU: DF on outer packets as strongSwan's copy_df says, and the tunnel MTU
following what ICMP says.

strongSwan's ``copy_df = yes`` (its default) copies the inner IPv4 packet's DF bit to the
outer header; an inner IPv6 packet gets DF (the kernel's XFRM rule, which strongSwan's
``copy_df`` drives through ``XFRM_STATE_NOPMTUDISC``); ``copy_df = no`` never sets DF, and
a router on the path may then fragment the outer packet. Our outer headers are written by
the kernel's UDP (ESP-in-UDP) and raw ESP sockets, which take DF per socket, not per
packet: :func:`dont_fragment` sets ``IP_PMTUDISC_DO`` on them, and each gets a send-only
twin with ``IP_PMTUDISC_DONT`` (:func:`open_no_df_twins`); the forwarder picks one of the
two per packet (:meth:`aioipsec.runtime.forwarding.Forwarder.send_protected`). An inner
IPv4 packet without DF above the tunnel MTU is still fragmented before encryption
(:mod:`tun.fragment`), as the TUN device's MTU makes the kernel do anyway; one with DF (all
TCP), or IPv6, gets ICMP "fragmentation needed" / Packet Too Big from the TUN device.

How the outer path MTU is learnt: a router that cannot forward one of our DF packets sends
ICMP "fragmentation needed" (RFC 1191) or Packet Too Big (RFC 8201); the kernel stores the
smaller MTU for that destination (a route exception), and our next larger send fails with
EMSGSIZE instead of leaving. The socket reports that (``DrainingSocket.on_too_big``), and
:class:`PathMtu` reads the new MTU back (``IP_MTU`` of a connected probe socket, which sees
the route exception: :func:`aioipsec.runtime.children.outer_mtu_towards`), lowers the
tunnel MTU of every Child SA towards that peer and with it the TUN device's MTU. A check
every ``REFRESH_INTERVAL`` seconds also raises it again when the kernel forgets the smaller
path MTU (after ``net.ipv4.route.mtu_expires``, 10 minutes by default).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable, Iterable, Iterator

import structlog

from aioipsec.runtime.children import ChildTable, outer_mtu_towards
from aioipsec.runtime.sockets import DrainingSocket

log = structlog.get_logger("aioipsec.pmtu")

# <linux/in.h>, <linux/in6.h> (not all named by Python's socket module).
IP_MTU_DISCOVER = getattr(socket, "IP_MTU_DISCOVER", 10)
IP_PMTUDISC_DO = getattr(socket, "IP_PMTUDISC_DO", 2)
IPV6_MTU_DISCOVER = getattr(socket, "IPV6_MTU_DISCOVER", 23)
IPV6_PMTUDISC_DO = getattr(socket, "IPV6_PMTUDISC_DO", 2)

REFRESH_INTERVAL = 30.0
MIN_RECHECK = 0.2  # seconds between two reads of one peer's path MTU after EMSGSIZE


def dont_fragment(sock: socket.socket) -> bool:
    """DF on every packet SOCK sends, and EMSGSIZE for what exceeds the known path MTU."""
    try:
        if sock.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_MTU_DISCOVER, IPV6_PMTUDISC_DO)
        else:
            sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)
    except OSError as exc:
        log.warning("cannot set DF on the outer socket", error=str(exc))
        return False
    return True


IP_PMTUDISC_DONT = getattr(socket, "IP_PMTUDISC_DONT", 0)
IPV6_PMTUDISC_DONT = getattr(socket, "IPV6_PMTUDISC_DONT", 0)


def open_no_df_twins(sockets: Iterable[DrainingSocket]) -> None:
    """The send-only twins without DF (``DrainingSocket.open_no_df``). Where the kernel
    refuses one, that socket's packets keep DF (copy_df = no then behaves as yes)."""
    for sock in sockets:
        try:
            sock.open_no_df()
        except OSError as exc:
            log.warning("cannot open a socket for outer packets without DF: they keep DF "
                        "(copy_df = no acts as yes); needs Linux 4.5 or later",
                        socket=sock.name, error=str(exc))  # fmt: skip


@contextlib.contextmanager
def fragments_allowed(sock: socket.socket) -> Iterator[None]:
    """For one send: an IKE message on port 4500 may exceed the path MTU (certificates,
    a peer without RFC 7383 fragmentation) and must then be fragmented by IP as it was
    before DF was set, not refused with EMSGSIZE. IKE is a few messages a second: two
    setsockopt calls per message cost nothing."""
    v6 = sock.family == socket.AF_INET6
    level = socket.IPPROTO_IPV6 if v6 else socket.IPPROTO_IP
    option = IPV6_MTU_DISCOVER if v6 else IP_MTU_DISCOVER
    try:
        sock.setsockopt(level, option, IPV6_PMTUDISC_DONT if v6 else IP_PMTUDISC_DONT)
    except OSError:
        yield
        return
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            sock.setsockopt(level, option, IPV6_PMTUDISC_DO if v6 else IP_PMTUDISC_DO)


class PathMtu:
    """Keeps the Child SAs' tunnel MTUs at the outer path MTU minus the ESP overhead."""

    def __init__(
        self,
        table: ChildTable,
        on_change: Callable[[], None],
        probe: Callable[[str], int] = outer_mtu_towards,
    ) -> None:
        self.table = table
        self._on_change = on_change  # DataPath._update_tun_mtu
        self._probe = probe
        self._checked: dict[str, float] = {}
        self.changes = 0

    def too_big(self, host: str) -> None:
        """A send to HOST failed with EMSGSIZE: the kernel learnt a smaller path MTU."""
        now = time.monotonic()
        if now - self._checked.get(host, 0.0) < MIN_RECHECK:
            return
        self._checked[host] = now
        self.check(host)

    def check(self, host: str) -> bool:
        """Read HOST's outer path MTU and apply it; True when a tunnel MTU changed."""
        outer = self._probe(host)
        changed = self.table.set_outer_mtu(host, outer)
        if changed:
            self.changes += 1
            log.info("outer path MTU changed: tunnel MTU follows", peer=host,
                     outer_mtu=outer, child_sas=changed)  # fmt: skip
            self._on_change()
        return bool(changed)

    def check_all(self) -> None:
        for host in sorted({entry.peer.address[0] for entry in self.table.children.values()}):
            self.check(host)

    async def run(self, interval: float = REFRESH_INTERVAL) -> None:
        while True:
            await asyncio.sleep(interval)
            self.check_all()
