"""Traffic selectors: the model, strongSwan's textual syntax, and narrowing.

RFC 7296 sec. 2.9: the responder may *narrow* the initiator's proposed selectors to the
subset its policy allows; if nothing is left it answers TS_UNACCEPTABLE. The initiator
must check that what comes back is a subset of what it proposed (and of its own policy).

Syntax accepted in configs (swanctl.conf ``local_ts``/``remote_ts``):
``10.1.0.0/16``, ``10.1.0.1-10.1.0.20``, ``192.0.2.7``, ``::/0``, ``dynamic``, each
optionally followed by ``[proto/port]`` where proto is a number, ``tcp``/``udp``/``icmp``/
``icmp6``/``sctp``/``%any`` and port is a number, ``a-b`` or ``%any``
(e.g. ``10.0.0.0/8[tcp/22]``, ``dynamic[udp]``).
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from ikev2.enums import PayloadType, TsType
from ikev2.errors import ProtocolError
from ikev2.payloads import TrafficSelector, TsPayload
from ikev2.ts_range import TrafficSelectorRange, format_range

_PROTOCOL_NAMES = {"tcp": 6, "udp": 17, "icmp": 1, "icmp6": 58, "ipv6-icmp": 58, "sctp": 132}


@dataclass(frozen=True, order=True, slots=True)
class Ts:
    """One selector: an address range of one IP version, a protocol and a port range."""

    version: int  # 4 or 6
    start: int
    end: int
    protocol: int = 0
    start_port: int = 0
    end_port: int = 65535

    @property
    def ts_type(self) -> TsType:
        return TsType.TS_IPV4_ADDR_RANGE if self.version == 4 else TsType.TS_IPV6_ADDR_RANGE

    def _address(self, value: int) -> str:
        if self.version == 4:
            return str(ipaddress.IPv4Address(value))
        return str(ipaddress.IPv6Address(value))

    def to_range(self) -> TrafficSelectorRange:
        return _to_range(self)

    def to_payload(self) -> TrafficSelector:
        width = 4 if self.version == 4 else 16
        return TrafficSelector(
            ts_type=self.ts_type,
            ip_protocol=self.protocol,
            start_port=self.start_port,
            end_port=self.end_port,
            start_address=self.start.to_bytes(width, "big"),
            end_address=self.end.to_bytes(width, "big"),
        )

    def __str__(self) -> str:
        return format_range(self.to_range())

    def contains(self, other: Ts) -> bool:
        return (
            self.version == other.version
            and self.start <= other.start
            and other.end <= self.end
            and (self.protocol == 0 or self.protocol == other.protocol)
            and self.start_port <= other.start_port
            and other.end_port <= self.end_port
        )


def format_list(selectors: Iterable[Ts]) -> str:
    return ", ".join(str(ts) for ts in selectors) or "(none)"


def _parse_protoport(text: str) -> tuple[int, int, int]:
    proto_text, _, port_text = text.partition("/")
    proto_text = proto_text.strip().lower()
    if proto_text in ("", "%any", "any"):
        protocol = 0
    elif proto_text in _PROTOCOL_NAMES:
        protocol = _PROTOCOL_NAMES[proto_text]
    else:
        protocol = int(proto_text)
        if not 0 <= protocol <= 255:
            raise ValueError(f"IP protocol {protocol} out of range")
    port_text = port_text.strip().lower()
    if port_text in ("", "%any", "any"):
        return protocol, 0, 65535
    if "-" in port_text:
        low, high = (int(p) for p in port_text.split("-", 1))
    else:
        low = high = int(port_text)
    if not 0 <= low <= high <= 65535:
        raise ValueError(f"bad port range {port_text!r}")
    return protocol, low, high


def parse_ts(text: str, dynamic_address: str | None = None) -> list[Ts]:
    """Parse one configured selector. ``dynamic`` becomes ``dynamic_address`` (our own or
    the peer's IKE address); without one it yields nothing."""
    return list(_parse_ts(text, dynamic_address))


# Every Child SA resolves its configured selectors again (a responder under load: ~3 % of
# the engine's time in ipaddress). Ts is frozen and the parse pure; errors are not cached.
@functools.lru_cache(maxsize=4096)
def _parse_ts(text: str, dynamic_address: str | None) -> tuple[Ts, ...]:
    text = text.strip()
    protocol, start_port, end_port = 0, 0, 65535
    if text.endswith("]") and "[" in text:
        text, _, rest = text[:-1].partition("[")
        protocol, start_port, end_port = _parse_protoport(rest)
    text = text.strip()
    if text in ("dynamic", "%dynamic"):
        if dynamic_address is None:
            return ()
        text = dynamic_address
    if text in ("", "%any"):
        return tuple(
            _network_ts(ipaddress.ip_network(any_net), protocol, start_port, end_port)
            for any_net in ("0.0.0.0/0", "::/0")
        )
    if "-" in text and "/" not in text:
        first, last = (ipaddress.ip_address(p.strip()) for p in text.split("-", 1))
        if first.version != last.version or int(first) > int(last):
            raise ValueError(f"bad address range {text!r}")
        return (Ts(first.version, int(first), int(last), protocol, start_port, end_port),)
    net = ipaddress.ip_network(text, strict=False)
    return (_network_ts(net, protocol, start_port, end_port),)


def _network_ts(
    net: ipaddress.IPv4Network | ipaddress.IPv6Network,
    protocol: int,
    start_port: int,
    end_port: int,
) -> Ts:
    return Ts(
        net.version,
        int(net.network_address),
        int(net.broadcast_address),
        protocol,
        start_port,
        end_port,
    )


def parse_ts_list(texts: Iterable[str], dynamic_address: str | None) -> list[Ts]:
    out: list[Ts] = []
    for text in texts:
        for part in text.split(","):
            if part.strip():
                out.extend(parse_ts(part, dynamic_address))
    return out


def from_payload(payload: TsPayload) -> list[Ts]:
    """Validate and convert a TSi/TSr payload.

    Raises ``ProtocolError(INVALID_SYNTAX)`` for start > end or a wrong address length
    (libreswan CVE-2023-23009). Unknown TS types (e.g. FC) are skipped: we cannot narrow
    to them, so they simply do not match anything (RFC 7296 sec. 3.13.1).
    """
    out: list[Ts] = []
    for selector in payload.selectors:
        if selector.ts_type == TsType.TS_IPV4_ADDR_RANGE:
            version, width = 4, 4
        elif selector.ts_type == TsType.TS_IPV6_ADDR_RANGE:
            version, width = 6, 16
        else:
            continue
        if len(selector.start_address) != width or len(selector.end_address) != width:
            raise ProtocolError("traffic selector address length does not match its type")
        start = int.from_bytes(selector.start_address, "big")
        end = int.from_bytes(selector.end_address, "big")
        if start > end:
            raise ProtocolError("traffic selector start address above end address")
        if selector.start_port > selector.end_port:
            # RFC 7296 sec. 3.13.1 allows this to mean "OPAQUE" ports: nothing matches.
            continue
        if not 0 <= selector.ip_protocol <= 255:
            raise ProtocolError("traffic selector IP protocol out of range")
        out.append(
            Ts(version, start, end, selector.ip_protocol, selector.start_port, selector.end_port)
        )
    return out


# A gateway's Child SAs mostly have the same few narrowed selectors: one shared (frozen)
# Ts and TrafficSelectorRange each instead of copies per Child SA, which the ChildSa, the
# ChildSaEstablished event the daemon keeps and the data plane's ChildSpec all hold
# (about 0.7 KiB per Child SA). Bounded: past the limit new ones are simply not shared.
_SHARED_TS: dict[Ts, Ts] = {}
_SHARED_TS_MAX = 4096


def _shared(ts: Ts) -> Ts:
    kept = _SHARED_TS.get(ts)
    if kept is not None:
        return kept
    if len(_SHARED_TS) < _SHARED_TS_MAX:
        _SHARED_TS[ts] = ts
    return ts


@functools.lru_cache(maxsize=_SHARED_TS_MAX)
def _to_range(ts: Ts) -> TrafficSelectorRange:
    return TrafficSelectorRange(
        start=ts._address(ts.start),
        end=ts._address(ts.end),
        protocol=ts.protocol,
        start_port=ts.start_port,
        end_port=ts.end_port,
    )


def to_payload(payload_type: PayloadType, selectors: Iterable[Ts]) -> TsPayload:
    return TsPayload(payload_type=payload_type, selectors=[ts.to_payload() for ts in selectors])


def intersect(a: Ts, b: Ts) -> Ts | None:
    """The largest selector inside both, or None."""
    if a.version != b.version:
        return None
    if a.protocol and b.protocol and a.protocol != b.protocol:
        return None
    start, end = max(a.start, b.start), min(a.end, b.end)
    low, high = max(a.start_port, b.start_port), min(a.end_port, b.end_port)
    if start > end or low > high:
        return None
    return _shared(Ts(a.version, start, end, a.protocol or b.protocol, low, high))


def narrow(proposed: list[Ts], allowed: list[Ts]) -> list[Ts]:
    """RFC 7296 sec. 2.9: the parts of ``proposed`` that ``allowed`` permits.

    Order follows ``proposed`` (the initiator's first selector is the most specific one
    when it carries the triggering packet), duplicates and selectors covered by an
    earlier result are dropped.
    """
    result: list[Ts] = []
    for offered in proposed:
        for permitted in allowed:
            common = intersect(offered, permitted)
            if common is None:
                continue
            if any(existing.contains(common) for existing in result):
                continue
            result = [existing for existing in result if not common.contains(existing)]
            result.append(common)
    return result


def is_subset(selected: list[Ts], proposed: list[Ts]) -> bool:
    """True if every selector in ``selected`` lies inside one in ``proposed``."""
    return all(any(p.contains(s) for p in proposed) for s in selected)
