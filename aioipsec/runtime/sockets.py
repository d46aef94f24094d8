"""UDP and raw sockets for IKE and ESP.

Two kinds of traffic, two kinds of socket handling (measured figures in docs/daemon.md):

* Port 500 carries only IKE: a few messages per second. It is read with ``recvmsg`` and
  IP_PKTINFO, which tells the address each request was sent to (:class:`IkePort500`).
* Port 4500 carries IKE *and* UDP-encapsulated ESP (RFC 3948), i.e. the data plane, and
  the raw protocol-50 socket carries plain ESP. An asyncio ``DatagramProtocol`` reads one
  datagram per event-loop turn (~31-35 us each here); a non-blocking socket watched with
  ``loop.add_reader`` and drained with ``recvfrom_into`` until ``BlockingIOError`` costs a
  few microseconds per datagram. Those sockets are therefore plain non-blocking sockets.

All sockets carry ``SO_MARK`` (:data:`BYPASS_MARK`) so that the policy-routing rule of
:mod:`aioipsec.runtime.routes` keeps our own outer packets out of the TUN device even when
a remote traffic selector covers the peer's outer address (host-to-host tunnels).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import ipaddress
import socket
import struct
from collections.abc import Callable

from esp.constants import IpProto

# Packets marked with this value bypass the tunnel routing table (see routes.py).
BYPASS_MARK = 0x2200
SO_MARK = getattr(socket, "SO_MARK", 36)
IPPROTO_ESP = int(IpProto.ESP)
# Large enough for any UDP datagram; one buffer per socket, reused for every read.
RECV_BUFFER_SIZE = 65536
# Socket buffers: bursts of ESP from a fast sender must not be dropped by the kernel
# while we are busy encrypting (performance-notes.md: bigger buffers helped wireguard-go).
SOCKET_BUFFER_BYTES = 4 * 1024 * 1024
# UDP segmentation offload (Linux 4.18+) and its receive side (5.0+); <linux/udp.h> values,
# which Python's socket module does not name (performance-notes.md).
SOL_UDP = 17
UDP_SEGMENT = 103
UDP_GRO = 104
# One GSO send: at most this many datagrams (UDP_MAX_SEGMENTS of older kernels) and octets.
GSO_MAX_SEGMENTS = 64
GSO_MAX_BYTES = 65000
_GSO_UNSUPPORTED = (errno.EINVAL, errno.EIO, errno.ENOPROTOOPT, errno.EOPNOTSUPP)
_SEGMENT_SIZE = struct.Struct("=H")  # the UDP_SEGMENT control message: a u16
_GRO_SIZE = struct.Struct("=i")  # the UDP_GRO control message we receive: an int
_GRO_CMSG_SPACE = socket.CMSG_SPACE(_GRO_SIZE.size)

# RFC 3948 sec. 2.2: ESP on port 4500 is at least SPI + Seq (8 octets) with a non-zero
# SPI; IKE starts with the 4-octet zero "non-ESP marker", a keepalive is the octet 0xFF.
# The same decision as nat_t.demux.classify, made in the drain loop itself.
ESP_MIN_LENGTH = 8
_unpack_spi = struct.Struct("!I").unpack_from

Address = tuple[str, int]
# Called with (buffer view of one datagram, source address); the view is only valid
# during the call: the buffer is reused for the next datagram.
DatagramHandler = Callable[[memoryview, Address], None]


# Outer packets without DF (copy_df, aioipsec/runtime/pmtu.py): the kernel takes DF per
# socket, so each outer socket gets a send-only twin with IP_PMTUDISC_DONT. The UDP twin is
# bound to the same address and port (SO_REUSEPORT, so the peer sees one source), and a
# reuseport program steers every received datagram to the first socket of the group, the
# one we read: the twin never receives. <asm-generic/socket.h>, <linux/filter.h> values.
SO_REUSEPORT = getattr(socket, "SO_REUSEPORT", 15)
SO_ATTACH_FILTER = 26
SO_ATTACH_REUSEPORT_CBPF = 51
_BPF_RET_K = 0x06  # BPF_RET | BPF_K: "return the constant k"
# One classic BPF instruction: code, jt, jf, k (struct sock_filter).
BpfInstruction = tuple[int, int, int, int]


def attach_cbpf(sock: socket.socket, option: int, program: list[BpfInstruction]) -> None:
    """Attach a classic BPF program (struct sock_fprog holds a pointer, hence ctypes; the
    kernel copies the program, the buffer may go after)."""
    code = b"".join(struct.pack("=HBBI", *instruction) for instruction in program)
    buffer = ctypes.create_string_buffer(code)
    fprog = struct.pack("@HP", len(program), ctypes.addressof(buffer))  # native alignment
    sock.setsockopt(socket.SOL_SOCKET, option, fprog)


# "return 0": as a reuseport program, every datagram to the group's first socket; as a
# socket filter, nothing accepted.
_RETURN_ZERO: list[BpfInstruction] = [(_BPF_RET_K, 0, 0, 0)]


def _fragments_allowed_always(sock: socket.socket) -> None:
    """No DF on IPv4. IPv6 has no DF and routers never fragment: the nearest is to let our
    kernel fragment to the path MTU it knows instead of failing with EMSGSIZE (WANT)."""
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_MTU_DISCOVER, IPV6_PMTUDISC_WANT)
    else:
        sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DONT)


# <linux/in.h>, <linux/in6.h>
IP_MTU_DISCOVER = getattr(socket, "IP_MTU_DISCOVER", 10)
IP_PMTUDISC_DONT = getattr(socket, "IP_PMTUDISC_DONT", 0)
IPV6_MTU_DISCOVER = getattr(socket, "IPV6_MTU_DISCOVER", 23)
IPV6_PMTUDISC_WANT = getattr(socket, "IPV6_PMTUDISC_WANT", 1)


def family_of(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET


def _mark(sock: socket.socket) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_MARK, BYPASS_MARK)
    except PermissionError:
        # Not root (unit tests): routing through the TUN device then relies on the
        # route manager never covering the peer's outer address.
        pass


def _enlarge_buffers(sock: socket.socket) -> None:
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER_BYTES)
        except OSError:
            pass


class LocalAddressCache:
    """Which of our addresses the kernel uses to reach a peer.

    The IKE sockets are bound to the wildcard address, so a received datagram does not
    tell which local address it was sent to; the engine needs one for NAT detection
    (RFC 7296 sec. 2.23). A connected UDP socket asks the routing table (no packet is
    sent); the answer is cached per peer.
    """

    def __init__(self) -> None:
        self._cache: dict[str, str] = {}

    def local_for(self, remote_host: str) -> str:
        cached = self._cache.get(remote_host)
        if cached is not None:
            return cached
        with socket.socket(family_of(remote_host), socket.SOCK_DGRAM) as probe:
            _mark(probe)
            try:
                probe.connect((remote_host, 9))
                local = probe.getsockname()[0]
            except OSError:
                local = "::" if ":" in remote_host else "0.0.0.0"
        self._cache[remote_host] = local
        return local

    def forget(self) -> None:
        self._cache.clear()


class DrainingSocket:
    """A non-blocking datagram socket read with ``loop.add_reader`` and a drain loop.

    ``handler(view, addr)`` runs for every datagram, synchronously, inside the reader
    callback; the view points into one reused buffer.
    """

    def __init__(self, sock: socket.socket, handler: DatagramHandler, name: str) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.name = name
        self._handler = handler
        self._buffer = bytearray(RECV_BUFFER_SIZE)
        self._view = memoryview(self._buffer)
        self._loop: asyncio.AbstractEventLoop | None = None
        # Port 4500 carries IKE and ESP (RFC 3948): with an esp_handler, ESP goes there
        # straight from the drain loop and only the rest to ``handler``.
        self.esp_handler: DatagramHandler | None = None
        # Called after a drain loop that handled datagrams (the forwarder writes what it
        # decrypted, coalesced: Forwarder.flush_tun).
        self.drained: Callable[[], None] | None = None
        self.ipv6 = sock.family == socket.AF_INET6
        self.datagrams_in = 0
        self.send_errors = 0
        # UDP GSO for send_segments(); cleared if the kernel refuses it.
        self.gso = sock.type == socket.SOCK_DGRAM
        self.gro = False
        # Called with the peer's address when a send fails with EMSGSIZE: the kernel learnt
        # a smaller path MTU towards it (aioipsec.runtime.pmtu).
        self.on_too_big: Callable[[str], None] | None = None
        # The send-only twin whose packets carry no DF (:meth:`open_no_df`); itself until
        # then, so the forwarder's choice needs no test for its absence.
        self.no_df: DrainingSocket = self
        if self.gso:
            self.enable_gro()

    def enable_gro(self) -> bool:
        """Ask for UDP GRO: the kernel may hand us several datagrams of one flow, laid end to
        end, in one read (their size in a control message). One ``recvmsg_into`` then
        replaces up to 64 reads when the peer sends with GSO (~0.3 us instead of ~2 us per
        datagram, performance-notes.md). False if the kernel does not have it."""
        try:
            self.sock.setsockopt(SOL_UDP, UDP_GRO, 1)
        except OSError:
            return False
        self.gro = True
        return True

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        loop.add_reader(self.sock.fileno(), self._drain_gro if self.gro else self._drain)

    def _drain(self) -> None:
        recv = self.sock.recvfrom_into
        view = self._view
        handler = self._handler
        esp = self.esp_handler or handler
        count = 0
        # Bounded so one busy socket cannot starve the others (and the IKE timers).
        while count < 256:
            try:
                length, addr = recv(self._buffer)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                # ICMP errors surface as ECONNREFUSED etc. on the next read: ignore them.
                if exc.errno in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH):
                    continue
                raise
            count += 1
            if length >= ESP_MIN_LENGTH and _unpack_spi(view)[0]:
                esp(view[:length], (addr[0], addr[1]))
            else:
                handler(view[:length], (addr[0], addr[1]))
        self.datagrams_in += count
        if count and self.drained is not None:
            self.drained()

    def _drain_gro(self) -> None:
        """:meth:`_drain` for a socket with UDP GRO: a read may hold several datagrams of
        ``segment`` octets each (the last may be shorter), cut apart here again."""
        recv = self.sock.recvmsg_into
        buffers = [self._buffer]
        view = self._view
        handler = self._handler
        esp = self.esp_handler or handler
        count = 0
        reads = 0
        while reads < 256:
            try:
                length, ancillary, _flags, addr = recv(buffers, _GRO_CMSG_SPACE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                if exc.errno in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH):
                    continue
                raise
            reads += 1
            source = (addr[0], addr[1])
            segment = length
            for level, kind, data in ancillary:
                if level == SOL_UDP and kind == UDP_GRO:
                    segment = _GRO_SIZE.unpack_from(data)[0]
            # GRO coalesces only datagrams of one flow and one size: ESP of one SA. A
            # segment is ESP when long enough and its SPI is not the zero marker.
            if segment >= length:
                count += 1
                if length >= ESP_MIN_LENGTH and _unpack_spi(view)[0]:
                    esp(view[:length], source)
                else:
                    handler(view[:length], source)
                continue
            for start in range(0, length, segment):
                count += 1
                end = min(start + segment, length)
                if end - start >= ESP_MIN_LENGTH and _unpack_spi(view, start)[0]:
                    esp(view[start:end], source)
                else:
                    handler(view[start:end], source)
        self.datagrams_in += count
        if count and self.drained is not None:
            self.drained()

    def sendto(self, data: bytes | bytearray | memoryview, addr: Address) -> None:
        try:
            self.sock.sendto(data, addr)
        except (BlockingIOError, InterruptedError):
            # Socket buffer full: drop, as a router would (ESP is datagram traffic and
            # IKE retransmits).
            self.send_errors += 1
        except OSError as exc:
            self.send_errors += 1
            if exc.errno == errno.EMSGSIZE and self.on_too_big is not None:
                self.on_too_big(addr[0])

    def send_segments(self, data: memoryview, segment: int, count: int, addr: Address) -> None:
        """Send COUNT datagrams laid end to end in DATA, each SEGMENT octets but the last
        (which may be shorter), with one ``sendmsg`` (UDP GSO: the kernel cuts them;
        ~1.2-1.6 us per datagram instead of ~6-10 us one by one, performance-notes.md)."""
        if count == 1:
            self.sendto(data, addr)
            return
        if self.gso:
            try:
                self.sock.sendmsg(
                    [data], [(SOL_UDP, UDP_SEGMENT, _SEGMENT_SIZE.pack(segment))], 0, addr
                )
                return
            except (BlockingIOError, InterruptedError):
                self.send_errors += count
                return
            except OSError as exc:
                if exc.errno == errno.EMSGSIZE and self.on_too_big is not None:
                    self.on_too_big(addr[0])
                if exc.errno not in _GSO_UNSUPPORTED:
                    self.send_errors += count
                    return
                self.gso = False  # not here (old kernel, odd device): one by one from now on
        for start in range(0, len(data), segment):
            self.sendto(data[start : start + segment], addr)

    def open_no_df(self) -> DrainingSocket:
        """The send-only twin of this port-4500 socket for outer packets without DF, bound
        to the same address and port (the socket was bound with SO_REUSEPORT and the
        steering program: :func:`open_udp_socket`). Never read: nothing reaches it."""
        host, port = self.sock.getsockname()[:2]
        twin = socket.socket(self.sock.family, socket.SOCK_DGRAM)
        try:
            if twin.family == socket.AF_INET6:
                twin.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            twin.setsockopt(socket.SOL_SOCKET, SO_REUSEPORT, 1)
            _mark(twin)
            _enlarge_buffers(twin)
            _fragments_allowed_always(twin)
            twin.bind((host, port))
        except OSError:
            twin.close()
            raise
        self.no_df = DrainingSocket(twin, _ignore, f"{self.name}-nodf")
        self.no_df.on_too_big = self.on_too_big
        return self.no_df

    def close(self) -> None:
        if self._loop is not None:
            try:
                self._loop.remove_reader(self.sock.fileno())
            except (ValueError, OSError):
                pass
        self.sock.close()
        if self.no_df is not self:
            self.no_df.close()


def open_udp_socket(host: str, port: int) -> socket.socket:
    """A bound, marked, non-blocking UDP socket with large buffers (port 4500).

    No SO_REUSEADDR: on UDP it would let a second daemon bind the same port silently and
    steal half the datagrams; UDP has no TIME_WAIT that would make it useful. SO_REUSEPORT
    lets our own send-only twin (:meth:`DrainingSocket.open_no_df`) join; the program
    attached steers every datagram to this socket (index 0 of the group), and a plain bind
    first still fails with EADDRINUSE when another process holds the port."""
    family = family_of(host)
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            probe.bind((host, port))
        except OSError as exc:
            raise OSError(exc.errno, f"cannot bind UDP {host} port {port}: {exc.strerror}") from exc
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        _mark(sock)
        _enlarge_buffers(sock)
        sock.setsockopt(socket.SOL_SOCKET, SO_REUSEPORT, 1)
        sock.bind((host, port))
        attach_cbpf(sock, SO_ATTACH_REUSEPORT_CBPF, _RETURN_ZERO)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot bind UDP {host} port {port}: {exc.strerror}") from exc
    return sock


class RawEspSocket(DrainingSocket):
    """ESP straight over IP (protocol 50), used when no NAT is in the way and
    encapsulation is not forced (RFC 4303 / RFC 3948 sec. 1).

    The kernel here has no ESP transform, so it hands protocol-50 packets to raw sockets
    only. On IPv4 a raw socket receives the IP header too; :meth:`_drain` strips it so the
    handler sees the ESP packet (SPI first), as for ESP-in-UDP.
    """

    def __init__(self, family: socket.AddressFamily, handler: DatagramHandler) -> None:
        sock = socket.socket(family, socket.SOCK_RAW, IPPROTO_ESP)
        _mark(sock)
        _enlarge_buffers(sock)
        self._strip_ip_header = family == socket.AF_INET
        super().__init__(sock, handler, "esp-v6" if family == socket.AF_INET6 else "esp-v4")

    def open_no_df(self) -> DrainingSocket:
        """A send-only raw ESP socket for outer packets without DF: a socket filter that
        accepts nothing keeps every received packet out of it (a raw socket gets a copy
        of each), and what queued before the filter is read away once."""
        twin = socket.socket(self.sock.family, socket.SOCK_RAW, IPPROTO_ESP)
        try:
            attach_cbpf(twin, SO_ATTACH_FILTER, _RETURN_ZERO)
            _mark(twin)
            _fragments_allowed_always(twin)
            twin.setblocking(False)
            while True:
                twin.recv(RECV_BUFFER_SIZE)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            twin.close()
            raise
        with contextlib.suppress(OSError):
            twin.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER_BYTES)
        self.no_df = PassedRawEsp(twin)
        self.no_df.on_too_big = self.on_too_big
        return self.no_df

    def _drain(self) -> None:
        buffer = self._buffer
        view = self._view
        handler = self._handler
        count = 0
        while count < 256:
            try:
                length, addr = self.sock.recvfrom_into(buffer)
            except (BlockingIOError, InterruptedError):
                break
            count += 1
            if self._strip_ip_header:
                header_length = (buffer[0] & 0x0F) * 4
                if length < header_length + 8:
                    continue
                handler(view[header_length:length], (addr[0], 0))
            else:
                handler(view[:length], (addr[0], 0))
        self.datagrams_in += count
        if count and self.drained is not None:
            self.drained()

    def sendto(self, data: bytes | bytearray | memoryview, addr: Address) -> None:
        # The port is meaningless for a raw socket; the kernel writes the IP header.
        super().sendto(data, (addr[0], 0))


def _ignore(data: memoryview, remote: Address) -> None:
    """A send-only socket's handler (it is never read)."""


class PassedRawEsp(RawEspSocket):
    """A raw ESP socket opened elsewhere (the daemon's, in the encrypt worker; a no-DF
    twin), used to send on, never read."""

    def __init__(self, sock: socket.socket) -> None:  # pylint: disable=super-init-not-called
        self._strip_ip_header = sock.family == socket.AF_INET
        DrainingSocket.__init__(self, sock, _ignore, f"esp-{sock.fileno()}")


class IkePort500:
    """IKE on UDP 500 (the control plane: a few messages a second), read with ``recvmsg``
    so that each datagram comes with the address it was sent to (IP_PKTINFO /
    IPV6_RECVPKTINFO): the socket is bound to the wildcard, and a responder with several
    addresses must hash the one the request reached into NAT_DETECTION_SOURCE_IP and
    answer from it (RFC 7296 sec. 2.23; the routing table's choice is another address)."""

    def __init__(self, sock: socket.socket, name: str) -> None:
        self.sock = sock
        self.name = name
        self.family = sock.family
        self.send_errors = 0

    @classmethod
    async def bind(cls, host: str, port: int) -> IkePort500:
        # IPV6_V6ONLY, so IPv4 and IPv6 can both bind port 500.
        sock = socket.socket(family_of(host), socket.SOCK_DGRAM)
        try:
            if sock.family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
            else:
                sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
            _mark(sock)
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            raise OSError(exc.errno, f"cannot bind UDP {host} port {port}: {exc.strerror}") from exc
        sock.setblocking(False)
        return cls(sock, f"ike{port}")

    @property
    def local_port(self) -> int:
        return int(self.sock.getsockname()[1])

    async def receive_forever(
        self, handler: Callable[[memoryview, Address, str | None], None]
    ) -> None:
        """``handler(datagram, source, destination address or None)`` for every datagram."""
        loop = asyncio.get_running_loop()
        ready = asyncio.Event()
        loop.add_reader(self.sock.fileno(), ready.set)
        try:
            while True:
                await ready.wait()
                ready.clear()
                while True:
                    try:
                        data, ancillary, _, addr = self.sock.recvmsg(
                            RECV_BUFFER_SIZE, _PKTINFO_SPACE
                        )
                    except BlockingIOError:
                        break
                    except OSError:
                        # An earlier send's ICMP error (ECONNREFUSED, ...) surfaces here: it
                        # says nothing about receiving, port 500 must stay open.
                        self.send_errors += 1
                        continue
                    handler(memoryview(data), (str(addr[0]), int(addr[1])), _destination(ancillary))
        finally:
            loop.remove_reader(self.sock.fileno())

    def sendto(self, data: bytes, addr: Address, source: str | None = None) -> None:
        """Send from ``source`` (the address the peer talks to) when given, else from the
        address the routing table picks."""
        ancillary = [] if source is None else _pktinfo(self.family, source)
        try:
            self.sock.sendmsg([data], ancillary, 0, addr)
        except OSError:  # BlockingIOError (a full buffer), unreachable...: IKE retransmits
            self.send_errors += 1

    def close(self) -> None:
        self.sock.close()


# <linux/in.h> IP_PKTINFO (Python 3.11's socket module does not name it) and the sizes of
# struct in_pktinfo (ifindex, spec_dst, addr) and struct in6_pktinfo (addr, ifindex).
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
_IN_PKTINFO = struct.Struct("=i4s4s")
_IN6_PKTINFO = struct.Struct("=16si")
_PKTINFO_SPACE = socket.CMSG_SPACE(max(_IN_PKTINFO.size, _IN6_PKTINFO.size))


def _destination(ancillary: list[tuple[int, int, bytes]]) -> str | None:
    """The destination address of a received datagram, from its PKTINFO control message."""
    for level, kind, data in ancillary:
        if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(data) >= _IN_PKTINFO.size:
            return socket.inet_ntop(socket.AF_INET, _IN_PKTINFO.unpack_from(data)[2])
        if (
            level == socket.IPPROTO_IPV6
            and kind == socket.IPV6_PKTINFO
            and len(data) >= _IN6_PKTINFO.size
        ):
            return socket.inet_ntop(socket.AF_INET6, _IN6_PKTINFO.unpack_from(data)[0])
    return None


def _pktinfo(family: int, source: str) -> list[tuple[int, int, bytes]]:
    """The control message that sends a datagram from ``source``."""
    if family == socket.AF_INET6:
        return [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO,
                 _IN6_PKTINFO.pack(socket.inet_pton(socket.AF_INET6, source), 0))]  # fmt: skip
    return [(socket.IPPROTO_IP, IP_PKTINFO,
             _IN_PKTINFO.pack(0, socket.inet_pton(socket.AF_INET, source), bytes(4)))]  # fmt: skip
