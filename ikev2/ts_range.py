"""The traffic selector range the engine hands to the data plane (RFC 7296 sec. 3.13.1).

A leaf module: :mod:`ikev2.events` carries these ranges in its events and :mod:`ikev2.ts`
builds them from its selector model, so the type lives below both of them.
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass

_PROTOCOL_BY_NUMBER = {6: "tcp", 17: "udp", 1: "icmp", 58: "ipv6-icmp", 132: "sctp"}


@dataclass(frozen=True, slots=True)
class TrafficSelectorRange:
    """One traffic selector as the data plane's SPD wants it (RFC 7296 sec. 3.13.1).

    ``start``/``end`` are textual addresses (inclusive), ``protocol`` 0 means any,
    ports are inclusive (0-65535 = any).
    """

    start: str
    end: str
    protocol: int = 0
    start_port: int = 0
    end_port: int = 65535

    def __str__(self) -> str:
        return format_range(self)


# A responder formats the same few selectors for every Child SA (listings, logs, reqids):
# ipaddress parsing and summarising was ~2 % of its time under IKE load. The ranges are
# frozen (hashable), the text a pure function of them.
@functools.lru_cache(maxsize=4096)
def format_range(ts: TrafficSelectorRange) -> str:
    """strongSwan-like text: ``10.1.0.0/16``, ``10.0.0.1..10.0.0.9[tcp/80]``."""
    start = ipaddress.ip_address(ts.start)
    end = ipaddress.ip_address(ts.end)
    text = f"{ts.start}..{ts.end}"
    nets: list[ipaddress.IPv4Network] | list[ipaddress.IPv6Network] = []
    try:
        # Two branches, not one "or": each narrows both addresses to the same IP version.
        if isinstance(start, ipaddress.IPv4Address) and isinstance(end, ipaddress.IPv4Address):  # noqa: SIM114
            nets = list(ipaddress.summarize_address_range(start, end))
        elif isinstance(start, ipaddress.IPv6Address) and isinstance(end, ipaddress.IPv6Address):
            nets = list(ipaddress.summarize_address_range(start, end))
    except ValueError:  # end before start: the dotted form stays
        pass
    if len(nets) == 1:
        text = str(nets[0]) if nets[0].num_addresses > 1 else str(start)
    if ts.protocol == 0 and ts.start_port == 0 and ts.end_port == 65535:
        return text
    proto = _PROTOCOL_BY_NUMBER.get(ts.protocol, str(ts.protocol)) if ts.protocol else "%any"
    if ts.start_port == 0 and ts.end_port == 65535:
        return f"{text}[{proto}]"
    if ts.start_port == ts.end_port:
        return f"{text}[{proto}/{ts.start_port}]"
    return f"{text}[{proto}/{ts.start_port}-{ts.end_port}]"
