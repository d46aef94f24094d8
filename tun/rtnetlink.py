"""Routes through the TUN device with one rtnetlink request each, not an ``ip`` process.

A Child SA's set-up adds a route per remote selector (and its deletion removes it) on both
peers before the exchange completes, so the route's cost is set-up latency. ``ip route
replace`` as a process cost 8-25 ms from the daemon (fork and exec of a large Python
process on a loaded machine); the same request over a NETLINK_ROUTE socket takes ~0.1 ms.
Only these two requests are made here; reading state back stays with ``ip -j`` (rare).

The messages are what iproute2 sends for ``ip route replace NET dev DEV [src A] [table T]
[metric M]`` and ``ip route del NET dev DEV [table T] [metric M]`` (include/uapi/linux/
rtnetlink.h): an ``rtmsg`` for a unicast route of link scope (no gateway), protocol
``boot``, with the attributes RTA_DST, RTA_OIF, RTA_PREFSRC, RTA_TABLE and RTA_PRIORITY.
The socket is opened per request, in the network namespace of the calling thread, like
the ``ip`` process it replaces.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct

# <linux/netlink.h>
NLMSG_ERROR = 2
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_REPLACE = 0x100
NLM_F_CREATE = 0x400
# <linux/rtnetlink.h>
RTM_NEWROUTE = 24
RTM_DELROUTE = 25
RTA_DST = 1
RTA_OIF = 4
RTA_PRIORITY = 6
RTA_PREFSRC = 7
RTA_TABLE = 15
RT_TABLE_UNSPEC = 0
RT_TABLE_MAIN = 254
RTPROT_BOOT = 3
RT_SCOPE_LINK = 253
RT_SCOPE_NOWHERE = 255
RTN_UNSPEC = 0
RTN_UNICAST = 1

_HEADER = struct.Struct("=IHHII")  # struct nlmsghdr
_RTMSG = struct.Struct("=BBBBBBBBI")  # struct rtmsg
_ATTR = struct.Struct("=HH")  # struct rtattr

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _attribute(kind: int, value: bytes) -> bytes:
    length = _ATTR.size + len(value)
    return _ATTR.pack(length, kind) + value + b"\0" * (-length % 4)  # NLA_ALIGNTO = 4


def route_message(
    command: int,
    network: IpNetwork,
    ifindex: int,
    *,
    source: IpAddress | None = None,
    table: int | None = None,
    metric: int | None = None,
    sequence: int = 1,
) -> bytes:
    """The RTM_NEWROUTE (replace) or RTM_DELROUTE request iproute2 would send."""
    table = RT_TABLE_MAIN if table is None else table
    family = socket.AF_INET if network.version == 4 else socket.AF_INET6
    if command == RTM_NEWROUTE:
        flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE
        protocol, scope, kind = RTPROT_BOOT, RT_SCOPE_LINK, RTN_UNICAST
    else:  # a delete matches on what is given; scope "nowhere" matches any
        flags = NLM_F_REQUEST | NLM_F_ACK
        protocol, scope, kind = 0, RT_SCOPE_NOWHERE, RTN_UNSPEC
    # A table id above 255 does not fit rtm_table: it goes in RTA_TABLE (as iproute2 does).
    body = _RTMSG.pack(
        family, network.prefixlen, 0, 0, table if table < 256 else RT_TABLE_UNSPEC,
        protocol, scope, kind, 0,
    )  # fmt: skip
    body += _attribute(RTA_DST, network.network_address.packed)
    body += _attribute(RTA_OIF, struct.pack("=i", ifindex))
    if source is not None:
        body += _attribute(RTA_PREFSRC, source.packed)
    if table >= 256:
        body += _attribute(RTA_TABLE, struct.pack("=I", table))
    if metric is not None:
        body += _attribute(RTA_PRIORITY, struct.pack("=I", metric))
    return _HEADER.pack(_HEADER.size + len(body), command, flags, sequence, 0) + body


def request(message: bytes) -> None:
    """Send one request and wait for its acknowledgement; OSError(errno) when refused."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as sock:
        sock.settimeout(5.0)
        sock.bind((0, 0))
        sock.send(message)
        sequence = _HEADER.unpack_from(message)[3]
        while True:
            reply = sock.recv(65536)
            offset = 0
            while offset + _HEADER.size <= len(reply):
                length, kind, _flags, seq, _pid = _HEADER.unpack_from(reply, offset)
                if kind == NLMSG_ERROR and seq == sequence:
                    (code,) = struct.unpack_from("=i", reply, offset + _HEADER.size)
                    if code:
                        raise OSError(-code, os.strerror(-code))
                    return  # error 0: the acknowledgement
                if length < _HEADER.size:
                    raise OSError(errno.EPROTO, "malformed netlink reply")
                offset += (length + 3) & ~3
