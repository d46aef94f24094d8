"""Authentication Header (RFC 4302): integrity for the whole IP packet.

AH sits after the IP header (transport mode) or after a new outer header (tunnel mode)::

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    | Next Header   |  Payload Len  |          RESERVED             |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                 Security Parameters Index (SPI)               |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                    Sequence Number Field                      |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                Integrity Check Value-ICV (variable)           |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+

The ICV covers the IP header with its mutable fields zeroed (RFC 4302 sec. 3.3.3.1), the
AH header with the ICV zeroed, the payload and, with ESN, the high 32 bits of the sequence
number appended (sec. 3.3.3.2). The ICV field is padded with zeros to a multiple of 4
octets (IPv4) or 8 octets (IPv6) (sec. 3.3.3.2.1). AH is not on the hot path here: it has
no users besides interop, so it favours plainness over speed.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import struct
from typing import Any

from esp import ip
from esp.constants import IpProto
from esp.errors import DropReason, EspDrop, InvalidKey, UnsupportedAlgorithm
from esp.events import Lifetime
from esp.selectors import Selector
from esp.state import Direction, Mode, SaBase
from esp.transforms import INTEG_INFO, integ_info
from ikev2.enums import IntegId

_AH_FIXED = struct.Struct("!BBHII")  # next header, payload len, reserved, SPI, Seq
# RFC 4302 App. A.1: IPv4 options whose value is immutable in transit (by option number):
# End of List, No Operation, Security, Extended Security, Commercial Security, Router
# Alert, Sender Directed Multi-Destination Delivery. All others are zeroed whole.
_IMMUTABLE_IPV4_OPTIONS = frozenset({0, 1, 2, 5, 6, 20, 21})
_IPV6_HOP_BY_HOP, _IPV6_ROUTING, _IPV6_DEST_OPTS = 0, 43, 60


def _zero_ipv4_mutable(header: bytearray, ihl: int) -> None:
    header[1] = 0  # DSCP/ECN (TOS)
    header[6] = header[7] = 0  # flags, fragment offset
    header[8] = 0  # TTL
    header[10] = header[11] = 0  # header checksum
    i = 20
    while i < ihl:
        kind = header[i]
        if kind == 0:  # End of Option List: the rest is padding, immutable
            break
        if kind == 1:
            i += 1
            continue
        length = header[i + 1] if i + 1 < ihl else 0
        if length < 2 or i + length > ihl:
            raise ValueError("malformed IPv4 option")
        if kind & 0x1F not in _IMMUTABLE_IPV4_OPTIONS:
            header[i : i + length] = bytes(length)
        i += length


def _zero_ipv6_mutable(header: bytearray, sending: bool) -> None:
    header[1] = header[2] = header[3] = 0  # traffic class, flow label (keeps version)
    header[0] &= 0xF0
    header[7] = 0  # hop limit
    nh, offset, n = header[6], 40, len(header)
    while nh in (_IPV6_HOP_BY_HOP, _IPV6_ROUTING, _IPV6_DEST_OPTS):
        if offset + 8 > n:
            raise ValueError("truncated IPv6 extension header")
        length = (header[offset + 1] + 1) * 8
        end = offset + length
        if end > n:
            raise ValueError("truncated IPv6 extension header")
        if nh == _IPV6_ROUTING:
            if sending and header[offset + 3] != 0:
                # The sender would have to predict the header as the receiver sees it
                # (sec. 3.3.3.1.2.2); not implemented.
                raise ValueError("AH with a routing header that has segments left")
        else:
            i = offset + 2
            while i < end:
                kind = header[i]
                if kind == 0:  # Pad1
                    i += 1
                    continue
                if i + 2 > end or i + 2 + header[i + 1] > end:
                    raise ValueError("IPv6 option runs past its header")
                opt_len = header[i + 1]
                if kind & 0x20:  # "option data may change en route" (RFC 8200 sec. 4.2)
                    header[i + 2 : i + 2 + opt_len] = bytes(opt_len)
                i += 2 + opt_len
        nh = header[offset]
        offset = end


class AhSa(SaBase):
    """One direction of an AH SA (HMAC-SHA2-256/384/512, HMAC-SHA1-96 for interop).

    ``protect(packet)`` takes the full IP packet (transport mode) or the inner packet
    (tunnel mode, with ``src``/``dst`` of the SA as the outer header) and returns the full
    IP packet with AH; ``unprotect(packet)`` reverses it and raises ``EspDrop`` (counted).
    """

    protocol = "ah"

    def __init__(
        self, spi: int, direction: Direction | str, integ: IntegId | int, integ_key: bytes, *,
        esn: bool = False, replay_window: int = 1024, mode: Mode | str = Mode.TUNNEL,
        src: str | None = None, dst: str | None = None,
        selectors: tuple[Selector, ...] | list[Selector] = (),
        lifetime: Lifetime | None = None, reqid: int = 0,
        seq_soft_limit: int | None = None, now: float = 0.0,
        events: collections.deque[Any] | None = None,
    ) -> None:  # fmt: skip
        super().__init__(
            spi, direction, esn=esn, replay_window=replay_window, mode=mode, src=src, dst=dst,
            selectors=selectors, lifetime=lifetime, reqid=reqid,
            seq_soft_limit=seq_soft_limit, now=now, events=events,
        )  # fmt: skip
        info = integ_info(integ)
        if info is None:
            raise UnsupportedAlgorithm("AH needs an integrity algorithm")
        if len(integ_key) != info.key_size:
            raise InvalidKey(f"{IntegId(integ).name} key must be {info.key_size * 8} bits")
        self.integ = IntegId(integ)
        self._icv_size = info.icv_size
        self._mac = hmac.new(bytes(integ_key), digestmod=getattr(hashlib, info.digest))

    @property
    def integ_name(self) -> str:
        return INTEG_INFO[self.integ].name

    @property
    def icv_size(self) -> int:
        return self._icv_size

    def _ah_length(self, version: int) -> int:
        align = 8 if version == 6 else 4
        length = 12 + self._icv_size
        return length + (-length) % align

    def _icv(self, packet: bytearray, ah_offset: int, ah_length: int, seq: int) -> bytes:
        """ICV of ``packet`` (already carrying AH at ``ah_offset``) with mutable fields zeroed."""
        work = bytearray(packet)
        work[ah_offset + 12 : ah_offset + ah_length] = bytes(ah_length - 12)
        if work[0] >> 4 == 4:
            _zero_ipv4_mutable(work, (work[0] & 0x0F) * 4)
        else:
            _zero_ipv6_mutable(work, sending=self.direction is Direction.OUT)
        mac = self._mac.copy()
        mac.update(work)
        if self.esn:
            mac.update(struct.pack("!I", seq >> 32))
        return mac.digest()[: self._icv_size]

    def protect(self, packet: bytes | bytearray | memoryview) -> bytes:
        seq = self.seq + 1
        if seq >= self.seq_check:
            self.outbound_limit(seq)
        if self.mode is Mode.TUNNEL:
            if self.src is None or self.dst is None:
                raise ValueError("tunnel-mode AH needs src and dst")
            version = packet[0] >> 4
            if version not in (4, 6):
                raise ValueError("tunnel mode needs an IPv4/IPv6 inner packet")
            header = bytearray(ip.ip_header(self.src, self.dst, IpProto.AH, 0))
            field = 6 if header[0] >> 4 == 6 else 9
            next_header: int = IpProto.IPV4 if version == 4 else IpProto.IPV6
            payload = bytes(packet)
        else:
            offset, field = ip.transport_split(packet)
            header = bytearray(packet[:offset])
            next_header = header[field]
            payload = bytes(packet[offset:])
        header[field] = IpProto.AH
        ah_length = self._ah_length(header[0] >> 4)
        ah = _AH_FIXED.pack(next_header, ah_length // 4 - 2, 0, self.spi, seq & 0xFFFFFFFF)
        result = header + ah + bytes(ah_length - 12) + payload
        ip.set_lengths(result)
        icv = self._icv(result, len(header), ah_length, seq)
        result[len(header) + 12 : len(header) + 12 + self._icv_size] = icv
        self.seq = seq
        self.bytes_out += len(payload)
        if self.bytes_out >= self.bytes_check:
            self.limit_reached()
        return bytes(result)

    def unprotect(self, packet: bytes | bytearray | memoryview) -> bytes:
        if self.expired:
            self.expired_drops += 1
            raise EspDrop(DropReason.EXPIRED, "SA reached a hard limit")
        data = bytearray(packet)
        try:
            offset, field = ip.find_ipsec_header(data, IpProto.AH)
        except ValueError as err:
            return self._malformed(str(err))
        if offset + 12 > len(data):
            return self._malformed("truncated AH header")
        next_header, payload_len, _, spi, seq_low = _AH_FIXED.unpack_from(data, offset)
        ah_length = (payload_len + 2) * 4
        if ah_length < 12 + self._icv_size or offset + ah_length > len(data) or spi != self.spi:
            return self._malformed("bad AH length or SPI")
        replay = self.replay
        assert replay is not None
        seq = replay.infer_esn(seq_low) if self.esn else seq_low
        if not replay.check(seq):
            self.replays += 1
            raise EspDrop(DropReason.REPLAY, f"sequence number {seq}")
        received = bytes(data[offset + 12 : offset + 12 + self._icv_size])
        try:
            expected = self._icv(data, offset, ah_length, seq)
        except ValueError as err:
            return self._malformed(str(err))
        if not hmac.compare_digest(received, expected):
            self.icv_failures += 1
            raise EspDrop(DropReason.ICV_FAILURE, "MAC mismatch")
        replay.update(seq)
        payload = data[offset + ah_length :]
        if self.mode is Mode.TUNNEL:
            result = self._tunnel_inner(payload, next_header)
        else:
            header = data[:offset]
            header[field] = next_header
            result = header + payload
            ip.set_lengths(result)
        self.packets_in += 1
        self.bytes_in += len(payload)
        if self.packets_in >= self.packets_check or self.bytes_in >= self.bytes_check:
            self.limit_reached()
        return bytes(result)

    def _tunnel_inner(self, payload: bytearray, next_header: int) -> bytearray:
        version = payload[0] >> 4 if payload else 0
        inside = ((IpProto.IPV4, 4), (IpProto.IPV6, 6))
        if (next_header, version) not in inside or len(payload) < 20:
            self._malformed("tunnel-mode AH without an IP packet inside")
        if self.selectors and not self._selectors_match(memoryview(payload)):
            self.policy_drops += 1
            raise EspDrop(DropReason.POLICY, "inner packet outside the SA's selectors")
        return payload

    def _malformed(self, detail: str) -> bytes:
        self.malformed += 1
        raise EspDrop(DropReason.MALFORMED, detail)

    def __repr__(self) -> str:
        return f"AhSa(spi={self.spi:#010x}, {self.direction.value}, {self.integ.name})"
