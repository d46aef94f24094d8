"""A Linux TUN device for the tunnel's inner packets, with its addresses and routes.

The device is created with the ``TUNSETIFF`` ioctl on ``/dev/net/tun`` (``IFF_TUN | IFF_NO_PI``:
every ``read`` returns one bare IP packet, every ``write`` injects one). MTU and the UP flag are
set with the classic ``SIOCSIFMTU`` / ``SIOCSIFFLAGS`` ioctls; addresses with the ``ip``
command of iproute2 (see docs/tun.md for why ``ip`` and not a netlink library); the routes of
Child SAs, which are on every set-up's path, with one rtnetlink request each
(:mod:`tun.rtnetlink`).

Everything acts on the network namespace of the calling thread at the time of the call, which is
how ``ip netns exec NS aioipsec daemon`` and the tests' ``netns.entered(NS)`` both work.
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import json
import os
import socket
import struct
import subprocess
from collections.abc import Sequence
from typing import Any, Self

from tun import rtnetlink

TUN_CLONE_DEVICE = "/dev/net/tun"

# <linux/if_tun.h>
TUNSETIFF = 0x400454CA
TUNSETPERSIST = 0x400454CB
TUNSETOFFLOAD = 0x400454D0
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
IFF_MULTI_QUEUE = 0x0100

# <linux/sockios.h>, <linux/if.h>
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
SIOCGIFMTU = 0x8921
SIOCSIFMTU = 0x8922
SIOCSIFTXQLEN = 0x8943
IFF_UP = 0x1

IFNAMSIZ = 16
_IFREQ_SIZE = 40  # sizeof(struct ifreq) on 64-bit Linux

DEFAULT_TUN_NAME = "ipsec0"
DEFAULT_TUN_MTU = 1400
# The TUN device's transmit ring (kernel -> daemon), in packets. The kernel's default (500)
# is smaller than what one local TCP sender may queue under TCP small queues
# (net.ipv4.tcp_limit_output_bytes, 4 MB = about 3 000 segments of 1 400 octets): a
# full-speed TCP stream then fills the ring and every packet sent meanwhile, of any flow,
# is tail-dropped (tx_dropped). 4096 lets TSQ hold the sender back instead (issue 20:
# 37 of 26 000 UDP datagrams lost beside iperf3 with 500, none with 4096).
DEFAULT_TUN_TXQUEUELEN = 4096

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


class TunError(OSError):
    """Creating or configuring the TUN device failed; the message says which step and why."""


def _ifreq(name: str, payload: bytes = b"") -> bytes:
    encoded = name.encode()
    if not encoded or len(encoded) >= IFNAMSIZ or "/" in name or name.strip() != name:
        raise TunError(errno.EINVAL, f"invalid interface name {name!r} (1-15 bytes, no '/')")
    return encoded.ljust(IFNAMSIZ, b"\0") + payload.ljust(_IFREQ_SIZE - IFNAMSIZ, b"\0")


def run_ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``ip ARGS`` in the caller's network namespace; a failure raises TunError with stderr."""
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise TunError(errno.EIO, f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result


def link_info(name: str) -> dict[str, Any] | None:
    """``ip -d -j link show NAME`` as a dict, or None when no interface has that name."""
    result = run_ip("-d", "-j", "link", "show", "dev", name, check=False)
    if result.returncode != 0:
        return None
    links: list[dict[str, Any]] = json.loads(result.stdout or "[]")
    return links[0] if links else None


def is_tun_device(info: dict[str, Any]) -> bool:
    return bool(info.get("linkinfo", {}).get("info_kind") == "tun")


def remove_stale_device(name: str) -> bool:
    """Delete a TUN device called NAME left by an earlier run; True when one was removed.

    A non-persistent TUN device disappears when the last descriptor closes, so a device that is
    still there belongs to a process that hangs on, or was made persistent (``TUNSETPERSIST``,
    ``ip tuntap add``). An interface of another kind with that name is never touched: that is a
    configuration error the caller must see.
    """
    info = link_info(name)
    if info is None:
        return False
    if not is_tun_device(info):
        kind = info.get("linkinfo", {}).get("info_kind", "physical")
        raise TunError(errno.EEXIST, f"interface {name} exists and is not a TUN device ({kind})")
    run_ip("link", "delete", "dev", name)
    return True


def local_addresses() -> set[IpAddress]:
    """Every address assigned to an interface of the caller's network namespace."""
    result = run_ip("-j", "address", "show")
    found: set[IpAddress] = set()
    for link in json.loads(result.stdout or "[]"):
        for entry in link.get("addr_info", []):
            if "local" in entry:
                found.add(ipaddress.ip_address(entry["local"]))
    return found


def _attach(name: str, flags: int) -> tuple[int, str]:
    """Open the clone device and attach it to NAME (TUNSETIFF): (descriptor, name)."""
    try:
        fd = os.open(TUN_CLONE_DEVICE, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise TunError(exc.errno, f"cannot open {TUN_CLONE_DEVICE}: {exc.strerror}") from exc
    try:
        answer = fcntl.ioctl(fd, TUNSETIFF, _ifreq(name, struct.pack("H", flags)))
    except OSError as exc:
        os.close(fd)
        hint = " (is the device held by another process?)" if exc.errno == errno.EBUSY else ""
        raise TunError(exc.errno, f"TUNSETIFF {name}: {exc.strerror}{hint}") from exc
    return fd, answer[:IFNAMSIZ].rstrip(b"\0").decode()


class TunDevice:
    """An open TUN device. ``fd`` is non-blocking, ready for ``loop.add_reader``.

    >>> tun = TunDevice.create("ipsec0", mtu=1400)   # doctest: +SKIP
    >>> tun.add_address("10.1.0.1/32"); tun.add_route("10.2.0.0/16", source="10.1.0.1")
    >>> packet = tun.read()        # None when nothing is queued
    >>> tun.close()                # the device and its routes disappear with the descriptor
    """

    def __init__(self, fd: int, name: str, vnet_hdr: bool, multi_queue: bool = False) -> None:
        self.fd = fd
        self.name = name
        self.vnet_hdr = vnet_hdr
        self.multi_queue = multi_queue
        self.queues: list[int] = []  # the descriptors of the queues after the first
        self._routes: dict[tuple[IpNetwork, int | None, int | None], IpAddress | None] = {}
        self._closed = False

    @classmethod
    def create(
        cls,
        name: str = DEFAULT_TUN_NAME,
        mtu: int | None = DEFAULT_TUN_MTU,
        *,
        up: bool = True,
        remove_stale: bool = True,
        vnet_hdr: bool = False,
        txqueuelen: int | None = DEFAULT_TUN_TXQUEUELEN,
        multi_queue: bool = False,
    ) -> Self:
        """Create (or take over after removing a stale one) the TUN device NAME.

        ``vnet_hdr`` prefixes every packet with a ``struct virtio_net_hdr`` (10 bytes). The
        daemon sets it to write coalesced TCP super packets (tun.offload.coalesce); reading
        super packets would also need ``set_offload`` (TUNSETOFFLOAD), which it does not ask.
        """
        _ifreq(name)  # validate the name before touching anything
        if remove_stale:
            remove_stale_device(name)
        flags = IFF_TUN | IFF_NO_PI | (IFF_VNET_HDR if vnet_hdr else 0)
        flags |= IFF_MULTI_QUEUE if multi_queue else 0
        fd, actual_name = _attach(name, flags)
        device = cls(fd, actual_name, vnet_hdr, multi_queue)
        try:
            if mtu is not None:
                device.set_mtu(mtu)
            if txqueuelen is not None:
                device.set_txqueuelen(txqueuelen)
            if up:
                device.set_up(True)
        except BaseException:
            device.close()
            raise
        return device

    def open_queue(self) -> int:
        """One more queue of a multi-queue device: a non-blocking descriptor, closed with
        the device."""
        if not self.multi_queue:
            raise TunError(errno.EINVAL, f"{self.name} was not created with multi_queue")
        flags = IFF_TUN | IFF_NO_PI | IFF_MULTI_QUEUE | (IFF_VNET_HDR if self.vnet_hdr else 0)
        fd, _ = _attach(self.name, flags)
        self.queues.append(fd)
        return fd

    # --- link settings (ioctls on any socket of the current namespace) -------------------------

    def _ioctl(self, request: int, payload: bytes) -> bytes:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            try:
                return fcntl.ioctl(sock.fileno(), request, _ifreq(self.name, payload))
            except OSError as exc:
                raise TunError(exc.errno, f"ioctl {request:#x} on {self.name}: {exc}") from exc

    def set_mtu(self, mtu: int) -> None:
        if not 68 <= mtu <= 65535:
            raise TunError(errno.EINVAL, f"MTU {mtu} out of range 68..65535")
        self._ioctl(SIOCSIFMTU, struct.pack("i", mtu))

    def set_txqueuelen(self, packets: int) -> None:
        if not 1 <= packets <= 1 << 20:
            raise TunError(errno.EINVAL, f"txqueuelen {packets} out of range 1..{1 << 20}")
        self._ioctl(SIOCSIFTXQLEN, struct.pack("i", packets))

    @property
    def mtu(self) -> int:
        answer = self._ioctl(SIOCGIFMTU, b"")
        mtu: int = struct.unpack_from("i", answer, IFNAMSIZ)[0]
        return mtu

    def set_up(self, up: bool = True) -> None:
        flags = struct.unpack_from("H", self._ioctl(SIOCGIFFLAGS, b""), IFNAMSIZ)[0]
        flags = flags | IFF_UP if up else flags & ~IFF_UP
        self._ioctl(SIOCSIFFLAGS, struct.pack("H", flags))

    @property
    def is_up(self) -> bool:
        flags = struct.unpack_from("H", self._ioctl(SIOCGIFFLAGS, b""), IFNAMSIZ)[0]
        return bool(flags & IFF_UP)

    def set_offload(self, flags: int) -> None:
        """``TUNSETOFFLOAD`` (tun.offload.TUN_F_*): let the kernel hand us unchecksummed TCP
        super packets; only with ``vnet_hdr=True`` (every read/write then carries a
        virtio_net_hdr, see tun.offload)."""
        if not self.vnet_hdr:
            raise TunError(errno.EINVAL, "offloads need a device created with vnet_hdr=True")
        try:
            fcntl.ioctl(self.fd, TUNSETOFFLOAD, flags)
        except OSError as exc:
            raise TunError(exc.errno, f"TUNSETOFFLOAD {flags:#x} on {self.name}: {exc}") from exc

    # --- addresses and routes ------------------------------------------------------------------

    def add_address(self, address: str | IpInterface) -> None:
        """Assign ADDRESS (``"10.1.0.1/32"``; no prefix means a host prefix). Idempotent."""
        interface = ipaddress.ip_interface(address)
        # A point-to-point TUN link has no neighbours to collide with: skip IPv6 duplicate
        # address detection, which would leave the address "tentative" (unusable as a route
        # source) for a second or so.
        extra = ("nodad",) if interface.version == 6 else ()
        run_ip("address", "replace", str(interface), "dev", self.name, *extra)

    def remove_address(self, address: str | IpInterface) -> None:
        interface = ipaddress.ip_interface(address)
        run_ip("address", "del", str(interface), "dev", self.name, check=False)

    def addresses(self) -> list[IpInterface]:
        result = run_ip("-j", "address", "show", "dev", self.name)
        found: list[IpInterface] = []
        for link in json.loads(result.stdout or "[]"):
            for entry in link.get("addr_info", []):
                found.append(ipaddress.ip_interface(f"{entry['local']}/{entry['prefixlen']}"))
        return found

    def _route(
        self,
        command: int,
        network: IpNetwork,
        source: IpAddress | None,
        table: int | None,
        metric: int | None,
    ) -> None:
        """One rtnetlink route request for this device (tun.rtnetlink: no ``ip`` process,
        which cost a Child SA set-up 8-25 ms per route)."""
        message = rtnetlink.route_message(
            command, network, socket.if_nametoindex(self.name),
            source=source, table=table, metric=metric,
        )  # fmt: skip
        rtnetlink.request(message)

    def add_route(
        self,
        network: str | IpNetwork,
        *,
        source: str | IpAddress | None = None,
        table: int | None = None,
        metric: int | None = None,
    ) -> None:
        """Route NETWORK (a Child SA's remote selector) into the tunnel. Idempotent
        (``ip route replace``).

        ``source`` is the preferred source address (the local selector address when it is one of
        ours, so that locally generated packets match the Child SA's local selector).
        """
        net = ipaddress.ip_network(network, strict=False)
        src = ipaddress.ip_address(source) if source is not None else None
        if src is not None and src.version != net.version:
            raise TunError(errno.EINVAL, f"source {src} and route {net} differ in IP version")
        try:
            self._route(rtnetlink.RTM_NEWROUTE, net, src, table, metric)
        except OSError as exc:
            where = f" src {src}" if src is not None else ""
            where += f" table {table}" if table is not None else ""
            hint = ""
            if src is not None and exc.errno == errno.EINVAL:
                hint = " (is the source address one of this host's?)"
            raise TunError(
                exc.errno or errno.EIO,
                f"route replace {net} dev {self.name}{where}: {exc.strerror or exc}{hint}",
            ) from None
        self._routes[(net, table, metric)] = src

    def remove_route(
        self,
        network: str | IpNetwork,
        *,
        table: int | None = None,
        metric: int | None = None,
    ) -> None:
        """Remove the route to NETWORK via this device (no error when it is already gone)."""
        net = ipaddress.ip_network(network, strict=False)
        self._delete_route(net, table, metric)
        self._routes.pop((net, table, metric), None)

    def _delete_route(self, net: IpNetwork, table: int | None, metric: int | None) -> None:
        try:
            self._route(rtnetlink.RTM_DELROUTE, net, None, table, metric)
        except OSError:
            pass  # gone already (ESRCH), or the device with it: nothing left to remove

    def add_selector_routes(
        self,
        remote_networks: Sequence[str | IpNetwork],
        local_address: str | IpAddress | None = None,
        *,
        table: int | None = None,
    ) -> list[IpNetwork]:
        """Route every remote selector of a Child SA into the tunnel.

        The local selector address is used as the source only when it is assigned in this
        namespace (``ip route`` refuses a ``src`` that is not ours) and of the same IP version.
        Returns the networks routed.
        """
        ours = local_addresses() if local_address is not None else set()
        local = ipaddress.ip_address(local_address) if local_address is not None else None
        routed: list[IpNetwork] = []
        for remote in remote_networks:
            net = ipaddress.ip_network(remote, strict=False)
            source = local if local in ours and local.version == net.version else None
            self.add_route(net, source=source, table=table)
            routed.append(net)
        return routed

    def routes(self, family: int = 4) -> list[dict[str, Any]]:
        """This device's routes in the main table as ``ip -j route`` dicts."""
        result = run_ip(f"-{family}", "-j", "route", "show", "dev", self.name)
        routes: list[dict[str, Any]] = json.loads(result.stdout or "[]")
        return routes

    # --- packets -------------------------------------------------------------------------------

    def fileno(self) -> int:
        return self.fd

    def read(self, size: int = 65535) -> bytes | None:
        """One packet from the kernel, or None when none is queued (non-blocking)."""
        try:
            return os.read(self.fd, size)
        except BlockingIOError:
            return None

    def read_into(self, buffer: bytearray | memoryview) -> int:
        """Read one packet into BUFFER; returns its length, 0 when none is queued."""
        try:
            return os.readv(self.fd, [buffer])
        except BlockingIOError:
            return 0

    def write(self, packet: bytes | bytearray | memoryview) -> int:
        """Hand one IP packet to the kernel as if it had arrived on this interface."""
        return os.write(self.fd, packet)

    # --- lifetime ------------------------------------------------------------------------------

    def close(self) -> None:
        """Remove the routes we added and close the descriptor, which removes the device."""
        if self._closed:
            return
        self._closed = True
        for net, table, metric in reversed(self._routes):
            self._delete_route(net, table, metric)
        self._routes.clear()
        for fd in self.queues:
            os.close(fd)
        self.queues.clear()
        os.close(self.fd)

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"fd={self.fd}"
        return f"TunDevice({self.name!r}, {state})"
