"""A DHCPv4 client for road warriors' addresses (strongSwan's dhcp plugin, RFC 2131/2132).

The gateway asks a DHCP server for an address on behalf of each client, as strongSwan's
dhcp plugin does: DISCOVER, OFFER, REQUEST, ACK, and RELEASE when the client's IKE SA
ends. The client hardware address is a locally administered unicast MAC, ``7a:a7`` and four
octets; with ``identity_lease`` those four octets are derived from the peer's identity and
the identity itself goes in the Client Identifier option (61), so the same identity gets
the same lease back. An FQDN identity is also sent as Host Name (12). DNS (6) and NBNS (44)
servers of the OFFER/ACK come with the lease.

Where requests go (strongSwan's ``server``, default 255.255.255.255): to a broadcast
address the request carries the BROADCAST flag (RFC 2131 sec. 4.1: we do not own the MAC
we ask for, so the answer must be broadcast) and is sent from port 68; to a unicast
address we act as a relay agent (RFC 2131 sec. 4.1, RFC 1542): ``giaddr`` is our address
toward the server, which answers to port 67 there. ``force_server_address`` sends REQUEST
and RELEASE to ``server`` too, not to the server that made the OFFER. ``interface`` binds
the socket to one interface.

No library on PyPI is both maintained and a client (dhcppython's last release is of 2021,
dhcplib's of 2018, and neither is typed), so the codec is here: :class:`DhcpMessage`, next to
the RFC 2131 diagram; parsing raises only :class:`DhcpError`.

The engine asks for the address through its pools (``ikev2.cp.AddressPending``, then
``Dispatcher.address_ready``); aioipsec/runtime/remote_access.py runs this client between.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import struct
from dataclasses import dataclass, field
from enum import IntEnum
from ipaddress import IPv4Address
from typing import Any

SERVER_PORT, CLIENT_PORT = 67, 68
MAGIC_COOKIE = b"\x63\x82\x53\x63"  # RFC 2131 sec. 3, RFC 2132 sec. 2
BOOTREQUEST, BOOTREPLY = 1, 2
HTYPE_ETHERNET = 1
FLAG_BROADCAST = 0x8000
_ZERO = IPv4Address(0)
_FIXED = struct.Struct("!BBBBIHH4s4s4s4s16s64s128s")  # 236 octets before the cookie


class DhcpError(ValueError):
    """A DHCP message that cannot be parsed; the only exception ``parse`` raises."""


class MessageType(IntEnum):
    """Option 53 (RFC 2132 sec. 9.6)."""

    DISCOVER = 1
    OFFER = 2
    REQUEST = 3
    DECLINE = 4
    ACK = 5
    NAK = 6
    RELEASE = 7
    INFORM = 8


class Option(IntEnum):
    """The options we send or read (RFC 2132)."""

    PAD = 0
    DNS_SERVER = 6
    HOST_NAME = 12
    NBNS_SERVER = 44
    REQUESTED_ADDRESS = 50
    LEASE_TIME = 51
    MESSAGE_TYPE = 53
    SERVER_ID = 54
    PARAMETER_REQUEST_LIST = 55
    MESSAGE = 56
    CLIENT_ID = 61
    END = 255


@dataclass
class DhcpMessage:
    """One BOOTP/DHCP message (RFC 2131 sec. 2, figure 1)::

         0                   1                   2                   3
         0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
        +---------------+---------------+---------------+---------------+
        |     op (1)    |   htype (1)   |   hlen (1)    |   hops (1)    |
        +---------------+---------------+---------------+---------------+
        |                            xid (4)                            |
        +-------------------------------+-------------------------------+
        |           secs (2)            |           flags (2)           |
        +-------------------------------+-------------------------------+
        |                          ciaddr  (4)                          |
        |                          yiaddr  (4)                          |
        |                          siaddr  (4)                          |
        |                          giaddr  (4)                          |
        |                          chaddr  (16)                         |
        |                          sname   (64)                         |
        |                          file    (128)                        |
        |          options (variable: magic cookie 99.130.83.99 first)  |
        +---------------------------------------------------------------+

    Options are (code, value) pairs in order (RFC 2132 sec. 2: code, length, value; PAD and
    END have no length). ``sname`` and ``file`` are not read (option overload, 52, is not
    used by servers answering a relay agent or a broadcast request of ours).
    """

    op: int
    xid: int
    chaddr: bytes = b""
    flags: int = 0
    ciaddr: IPv4Address = _ZERO
    yiaddr: IPv4Address = _ZERO
    siaddr: IPv4Address = _ZERO
    giaddr: IPv4Address = _ZERO
    hops: int = 0
    secs: int = 0
    options: list[tuple[int, bytes]] = field(default_factory=list)

    def serialize(self) -> bytes:
        out = bytearray(
            _FIXED.pack(
                self.op,
                HTYPE_ETHERNET,
                len(self.chaddr),
                self.hops,
                self.xid,
                self.secs,
                self.flags,
                self.ciaddr.packed,
                self.yiaddr.packed,
                self.siaddr.packed,
                self.giaddr.packed,
                self.chaddr.ljust(16, b"\0"),
                b"",
                b"",
            )
        )
        out += MAGIC_COOKIE
        for code, value in self.options:
            if len(value) > 255:
                raise ValueError(f"DHCP option {code}: {len(value)} octets (at most 255)")
            out += bytes((code, len(value))) + value
        out.append(Option.END)
        # RFC 2131 sec. 2 / RFC 1542 sec. 2.1: BOOTP relays expect at least 300 octets.
        return bytes(out.ljust(300, b"\0"))

    @classmethod
    def parse(cls, data: bytes) -> DhcpMessage:
        if len(data) < _FIXED.size + len(MAGIC_COOKIE):
            raise DhcpError(f"{len(data)} octets: shorter than a DHCP message")
        op, _htype, hlen, hops, xid, secs, flags, ci, yi, si, gi, chaddr, _s, _f = (
            _FIXED.unpack_from(data)
        )
        if data[_FIXED.size : _FIXED.size + 4] != MAGIC_COOKIE:
            raise DhcpError("no DHCP magic cookie (a BOOTP message)")
        if hlen > 16:
            raise DhcpError(f"hardware address length {hlen} (at most 16)")
        options: list[tuple[int, bytes]] = []
        position = _FIXED.size + 4
        while position < len(data):
            code = data[position]
            if code == Option.END:
                break
            if code == Option.PAD:
                position += 1
                continue
            if position + 2 > len(data):
                raise DhcpError(f"option {code} without its length")
            length = data[position + 1]
            value = data[position + 2 : position + 2 + length]
            if len(value) != length:
                raise DhcpError(f"option {code} is cut short ({len(value)} of {length} octets)")
            options.append((code, bytes(value)))
            position += 2 + length
        return cls(
            op, xid, bytes(chaddr[:hlen]), flags, IPv4Address(ci), IPv4Address(yi),
            IPv4Address(si), IPv4Address(gi), hops, secs, options,
        )  # fmt: skip

    def option(self, code: int) -> bytes | None:
        """The value of the first option CODE (RFC 3396 concatenation is not needed for
        the options we read)."""
        return next((value for c, value in self.options if c == code), None)

    @property
    def message_type(self) -> MessageType | None:
        value = self.option(Option.MESSAGE_TYPE)
        if value is None or len(value) != 1 or value[0] not in MessageType._value2member_map_:
            return None
        return MessageType(value[0])

    def addresses(self, code: int) -> list[IPv4Address]:
        """An option holding a list of IPv4 addresses (DNS, NBNS); a length that is not a
        multiple of 4 leaves the remainder out."""
        value = self.option(code) or b""
        return [IPv4Address(value[i : i + 4]) for i in range(0, len(value) - 3, 4)]

    @property
    def server_id(self) -> IPv4Address | None:
        value = self.option(Option.SERVER_ID)
        return IPv4Address(value) if value is not None and len(value) == 4 else None


@dataclass
class DhcpSettings:
    """strongSwan's ``charon.plugins.dhcp`` settings (strongswan.conf), here ``[dhcp]``."""

    server: str = "255.255.255.255"
    force_server_address: bool = False
    identity_lease: bool = False
    interface: str | None = None
    tries: int = 5  # strongSwan's: 1 s, 2 s, ... 5 s apart
    timeout: float = 1.0

    def check(self) -> None:
        """ValueError naming the bad setting."""
        try:
            IPv4Address(self.server)
        except ValueError:
            raise ValueError(f"server {self.server!r} is not an IPv4 address") from None
        if self.interface is not None and not 0 < len(self.interface) < 16:
            raise ValueError(f"interface {self.interface!r} is not an interface name")

    @property
    def broadcast(self) -> bool:
        address = IPv4Address(self.server)
        return address == IPv4Address("255.255.255.255") or address.packed[-1] == 255


@dataclass(frozen=True)
class DhcpLease:
    identity: str
    address: IPv4Address
    server: IPv4Address
    chaddr: bytes
    dns: tuple[IPv4Address, ...] = ()
    nbns: tuple[IPv4Address, ...] = ()
    lease_time: int | None = None


def hardware_address(identity: str, identity_lease: bool, xid: int) -> bytes:
    """strongSwan's client MAC: 7a:a7 (locally administered, unicast) and 4 octets, from
    the identity with ``identity_lease`` (the same identity, the same MAC: the same lease),
    else from the transaction id."""
    if identity_lease:
        tail = hashlib.sha256(identity.encode("utf-8")).digest()[:4]
    else:
        tail = xid.to_bytes(4, "big")
    return b"\x7a\xa7" + tail


class DhcpUnavailable(Exception):
    """No lease: the message says what was sent and seen."""


class _Receiver(asyncio.DatagramProtocol):
    def __init__(self, client: DhcpClient) -> None:
        self.client = client

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            message = DhcpMessage.parse(data)
        except DhcpError:
            return  # not for us, or garbage: a DHCP port sees both
        queue = self.client.waiting.get(message.xid)
        if message.op == BOOTREPLY and queue is not None:
            queue.put_nowait(message)


class DhcpClient:
    """Leases for identities from the DHCP server of ``settings``; one UDP socket (port 68
    for broadcast, 67 as relay agent), opened on first use."""

    def __init__(self, settings: DhcpSettings, source: IPv4Address | None = None) -> None:
        self.settings = settings
        self.source = source  # relay mode: our address toward the server (giaddr)
        self.waiting: dict[int, asyncio.Queue[DhcpMessage]] = {}
        self._transport: asyncio.DatagramTransport | None = None
        self._sock: socket.socket | None = None

    def open_socket(self) -> None:
        """Open the socket now (a privileged port, SO_BINDTODEVICE): the daemon calls this
        at start, before it drops its capabilities. OSError when it cannot."""
        if self._sock is None and self._transport is None:
            if not self.settings.broadcast and self.source is None:
                self.source = _source_toward(IPv4Address(self.settings.server))
            self._sock = self._socket()

    def _socket(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        if self.settings.interface:
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_BINDTODEVICE, self.settings.interface.encode()
            )
        port = CLIENT_PORT if self.settings.broadcast else SERVER_PORT
        host = "" if self.settings.broadcast or self.source is None else str(self.source)
        sock.bind((host, port))
        sock.setblocking(False)
        return sock

    async def _open(self) -> asyncio.DatagramTransport:
        if self._transport is None:
            self.open_socket()
            sock, self._sock = self._sock, None
            loop = asyncio.get_running_loop()
            transport, _ = await loop.create_datagram_endpoint(lambda: _Receiver(self), sock=sock)
            self._transport = transport
        return self._transport

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def _message(self, kind: MessageType, xid: int, identity: str, chaddr: bytes) -> DhcpMessage:
        message = DhcpMessage(BOOTREQUEST, xid, chaddr)
        if self.settings.broadcast:
            message.flags = FLAG_BROADCAST
        else:
            message.giaddr = self.source or _ZERO
        message.options.append((Option.MESSAGE_TYPE, bytes((kind,))))
        encoded = identity.encode("utf-8")[:255]
        if "@" not in identity and "." in identity and "=" not in identity:
            message.options.append((Option.HOST_NAME, encoded))  # an FQDN identity
        if self.settings.identity_lease:
            message.options.append((Option.CLIENT_ID, encoded))
        return message

    def _destination(self, server: IPv4Address | None) -> tuple[str, int]:
        if server is None or self.settings.force_server_address or self.settings.broadcast:
            return (self.settings.server, SERVER_PORT)
        return (str(server), SERVER_PORT)

    async def _exchange(
        self, message: DhcpMessage, wanted: MessageType, server: IPv4Address | None
    ) -> DhcpMessage | None:
        transport = await self._open()
        queue: asyncio.Queue[DhcpMessage] = asyncio.Queue()
        self.waiting[message.xid] = queue
        data = message.serialize()
        loop = asyncio.get_running_loop()
        try:
            for attempt in range(1, self.settings.tries + 1):
                transport.sendto(data, self._destination(server))
                deadline = loop.time() + self.settings.timeout * attempt
                while (remaining := deadline - loop.time()) > 0:
                    try:
                        reply = await asyncio.wait_for(queue.get(), remaining)
                    except TimeoutError:
                        break
                    if reply.message_type in (wanted, MessageType.NAK):
                        return reply
        finally:
            self.waiting.pop(message.xid, None)
        return None

    async def acquire(self, identity: str) -> DhcpLease:
        """DISCOVER, OFFER, REQUEST, ACK (RFC 2131 sec. 3.1); DhcpUnavailable otherwise."""
        await self._open()  # first: it finds our giaddr
        xid = int.from_bytes(os.urandom(4), "big")
        chaddr = hardware_address(identity, self.settings.identity_lease, xid)
        asked = bytes((Option.DNS_SERVER, Option.NBNS_SERVER))
        discover = self._message(MessageType.DISCOVER, xid, identity, chaddr)
        discover.options.append((Option.PARAMETER_REQUEST_LIST, asked))
        offer = await self._exchange(discover, MessageType.OFFER, None)
        if offer is None or offer.message_type != MessageType.OFFER or offer.yiaddr == _ZERO:
            raise DhcpUnavailable(
                f"no DHCP OFFER for {identity!r} from {self.settings.server} "
                f"({self.settings.tries} DISCOVERs)"
            )
        server = offer.server_id or offer.siaddr
        request = self._message(MessageType.REQUEST, xid, identity, chaddr)
        request.options += [
            (Option.REQUESTED_ADDRESS, offer.yiaddr.packed),
            (Option.SERVER_ID, server.packed),
            (Option.PARAMETER_REQUEST_LIST, asked),
        ]
        ack = await self._exchange(request, MessageType.ACK, server)
        if ack is None or ack.message_type != MessageType.ACK:
            said = (ack.option(Option.MESSAGE) or b"").decode("utf-8", "replace") if ack else ""
            raise DhcpUnavailable(
                f"no DHCP ACK for {offer.yiaddr} ({identity!r}) from {server}"
                + (f": NAK {said!r}" if ack is not None else "")
            )
        lease_time = ack.option(Option.LEASE_TIME)
        reply = ack if ack.option(Option.DNS_SERVER) is not None else offer
        return DhcpLease(
            identity,
            ack.yiaddr if ack.yiaddr != _ZERO else offer.yiaddr,
            server,
            chaddr,
            tuple(reply.addresses(Option.DNS_SERVER)),
            tuple(reply.addresses(Option.NBNS_SERVER)),
            int.from_bytes(lease_time, "big") if lease_time and len(lease_time) == 4 else None,
        )

    async def release(self, lease: DhcpLease) -> None:
        """RELEASE (RFC 2131 sec. 4.4.6): no answer comes."""
        transport = await self._open()
        xid = int.from_bytes(os.urandom(4), "big")
        message = self._message(MessageType.RELEASE, xid, lease.identity, lease.chaddr)
        message.flags = 0
        message.ciaddr = lease.address
        message.options.append((Option.SERVER_ID, lease.server.packed))
        transport.sendto(message.serialize(), self._destination(lease.server))


def _source_toward(server: IPv4Address) -> IPv4Address:
    """Our address the kernel would use toward SERVER (a connected UDP socket sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((str(server), SERVER_PORT))
        return IPv4Address(probe.getsockname()[0])
