"""ESP Security Association (RFC 4303): the per-packet hot path.

One ``EspSa`` is one direction of one Child SA. Outbound: ``encrypt_into`` writes
``SPI || Seq || IV || ciphertext || ICV`` into a caller-owned buffer at an offset (so the
caller can reserve room for outer headers); inbound: ``decrypt_into`` reads a memoryview and
writes the inner packet into a caller-owned buffer. ``encrypt``/``decrypt`` are the
bytes-in/bytes-out wrappers.

Per packet the SA does one compare for every outbound limit at once (sequence number,
packet lifetime, hard expiry), builds ``inner || padding || pad length || next header``
once, writes SPI || Seq || IV with ``struct.pack_into`` and calls the cipher once.
Inbound: the replay check, the ICV check and decryption, the replay update (only after
the ICV verified: RFC 4303 sec. 3.4.3), the trailer checks and the selector check. For the
counter-mode AEADs (GCM-16, CCM, ChaCha20-Poly1305) the SA installs the closures of
``esp.fastpath`` as its ``encrypt_into``/``encrypt_parts``/``decrypt_into``/``decrypt_view``;
the other transforms go through ``Transform.seal``/``open`` in the methods below.
"""

from __future__ import annotations

import collections
import struct
from enum import StrEnum

from esp import ip, udp_encap
from esp.errors import DropReason, EspDrop
from esp.events import Lifetime, SaExpired
from esp.fastpath import make_aead_decrypt, make_aead_encrypt
from esp.replay import ReplayWindow
from esp.selectors import Selector, compile_selectors
from esp.transforms import (
    ENCR_INFO,
    INTEG_INFO,
    Transform,
    _Aead,
    encr_info,
    make_transform,
)
from ikev2.enums import EncrId, IntegId

_pack_header = struct.Struct("!II").pack_into
_unpack_seq = struct.Struct("!I").unpack_from

NEXT_HEADER_IPV4 = 4  # IP-in-IP, RFC 4303 sec. 2.6 / IANA protocol numbers
NEXT_HEADER_IPV6 = 41
NEXT_HEADER_NONE = 59  # "No Next Header": a dummy packet (RFC 4303 sec. 2.6)

# RFC 4303 sec. 2.4: padding bytes are 1, 2, 3, ... (a monotonically increasing series).
_PAD = bytes(range(1, 256))
# Padding || Pad Length || a placeholder for Next Header, for each padding length.
_TRAILERS = tuple(_PAD[:pad] + bytes((pad, NEXT_HEADER_IPV4)) for pad in range(256))
_MAX_INNER = 65535
_NEVER = 1 << 65


class Mode(StrEnum):
    TUNNEL = "tunnel"
    TRANSPORT = "transport"


class Direction(StrEnum):
    IN = "in"
    OUT = "out"


class SaBase:
    """What ESP and AH SAs share: identity, sequence numbers and replay window, lifetimes
    and the events they raise, counters, selectors."""

    protocol = ""

    def __init__(
        self, spi: int, direction: Direction | str, *, esn: bool = False,
        replay_window: int = 1024, mode: Mode | str = Mode.TUNNEL,
        src: str | None = None, dst: str | None = None,
        selectors: tuple[Selector, ...] | list[Selector] = (),
        lifetime: Lifetime | None = None, udp_encap: tuple[int, int] | None = None,
        reqid: int = 0, seq_soft_limit: int | None = None, now: float = 0.0,
        events: collections.deque | None = None,
    ) -> None:  # fmt: skip
        if not 256 <= spi <= 0xFFFFFFFF:
            # RFC 4303 sec. 2.1: 1..255 are reserved by IANA, 0 is for local use only.
            raise ValueError(f"SPI {spi:#x} is reserved")
        self.spi = spi
        self.direction = Direction(direction)
        self.esn = esn
        self.mode = Mode(mode)
        self.src = src
        self.dst = dst
        self.selectors = tuple(selectors)
        self._match = compile_selectors(self.selectors)
        self.lifetime = lifetime or Lifetime()
        self.reqid = reqid
        self.udp_encap = udp_encap
        self.installed_at = now
        self.events: collections.deque = events if events is not None else collections.deque()

        # Outbound sequence number: the last one sent (= packets sent). RFC 4303
        # sec. 3.3.3: it never wraps.
        self.seq = 0
        self.seq_hard_limit = 0xFFFFFFFFFFFFFFFF if esn else 0xFFFFFFFF
        if seq_soft_limit is None:
            seq_soft_limit = self.seq_hard_limit - (1 << (32 if esn else 24))
        self.seq_soft_limit = seq_soft_limit
        self.replay = ReplayWindow(replay_window) if self.direction is Direction.IN else None
        self.replay_window = replay_window
        self.last_next_header = 0
        self.expired = False  # hard limit reached: neither send nor accept
        self.soft_expired = False

        # Counters (per SA and per reason); read with counters().
        self.bytes_in = self.packets_in = self.bytes_out = 0
        self.icv_failures = self.replays = self.malformed = 0
        self.policy_drops = self.dummy = self.expired_drops = 0

        # The next value of seq (outbound) / packets_in, bytes_in+bytes_out at which a
        # limit has to be looked at: one compare per packet covers them all.
        self._min_plaintext = 2  # set above any length once the SA is hard-expired
        self._seq_check = 0
        self._packets_check = _NEVER
        self._bytes_check = _NEVER
        self._recompute_checks()

    @property
    def packets_out(self) -> int:
        return self.seq

    def _selectors_match(self, inner: bytes | bytearray | memoryview) -> bool:
        match = self._match
        if match is None:
            return True
        if (
            len(inner) < 20
            or inner[0] >> 4 not in (4, 6)
            or (inner[0] >> 4 == 6 and len(inner) < 40)
        ):
            return False
        return match(inner, len(inner))

    def matches_selectors(self, inner: bytes | bytearray | memoryview) -> bool:
        """Policy check of a decrypted packet against the SA's selectors (no selectors:
        everything matches). Tunnel mode does it inside ``decrypt_into`` already."""
        return not self.selectors or self._selectors_match(memoryview(inner))

    # ---------------------------------------------------------------- limits
    def _recompute_checks(self) -> None:
        life = self.lifetime
        if self.expired:
            self._seq_check = 0
            self._packets_check = self._bytes_check = 0
            self._min_plaintext = 1 << 20
            return
        soft = not self.soft_expired
        seq_checks = [self.seq_hard_limit + 1]
        if life.hard_packets is not None:
            seq_checks.append(life.hard_packets)
        if soft:
            seq_checks.append(self.seq_soft_limit)
            if life.soft_packets is not None:
                seq_checks.append(life.soft_packets)
        self._seq_check = max(min(seq_checks), self.seq + 1)
        packets = [p for p in (life.hard_packets, life.soft_packets if soft else None) if p]
        nbytes = [b for b in (life.hard_bytes, life.soft_bytes if soft else None) if b]
        self._packets_check = min(packets, default=_NEVER)
        self._bytes_check = min(nbytes, default=_NEVER)

    def _outbound_limit(self, seq: int) -> None:
        """Slow path of ``encrypt_into`` once ``seq`` reached the next limit to look at."""
        life = self.lifetime
        if self.expired:
            self.expired_drops += 1
            raise EspDrop(DropReason.EXPIRED, "SA reached a hard limit")
        if seq > self.seq_hard_limit or (life.hard_packets is not None and seq > life.hard_packets):
            self._expire(hard=True, reason="sequence" if seq > self.seq_hard_limit else "packets")
            self.expired_drops += 1
            raise EspDrop(DropReason.EXPIRED, "hard limit (RFC 4303 sec. 3.3.3: no wrap)")
        if seq >= self.seq_soft_limit:
            self._expire(hard=False, reason="sequence")
        elif life.soft_packets is not None and seq >= life.soft_packets:
            self._expire(hard=False, reason="packets")
        if life.hard_packets is not None and seq == life.hard_packets:
            # This packet is the last one allowed; the next call raises.
            self._expire(hard=True, reason="packets")
            self._seq_check = seq + 1
            return
        self._recompute_checks()
        self._seq_check = max(self._seq_check, seq + 1)

    def _limit_reached(self) -> None:
        """Slow path once a packet or byte count reached a lifetime limit."""
        life = self.lifetime
        packets = self.packets_in
        nbytes = self.bytes_in + self.bytes_out
        if life.hard_packets is not None and packets >= life.hard_packets:
            self._expire(hard=True, reason="packets")
        elif life.hard_bytes is not None and nbytes >= life.hard_bytes:
            self._expire(hard=True, reason="bytes")
        elif life.soft_packets is not None and packets >= life.soft_packets:
            self._expire(hard=False, reason="packets")
        elif life.soft_bytes is not None and nbytes >= life.soft_bytes:
            self._expire(hard=False, reason="bytes")
        self._recompute_checks()

    def _expire(self, *, hard: bool, reason: str) -> None:
        if hard:
            if self.expired:
                return
            self.expired = True
            self.soft_expired = True
        else:
            if self.soft_expired:
                return
            self.soft_expired = True
        self.events.append(
            SaExpired(self.protocol, self.spi, self.direction.value, self.reqid, hard, reason)
        )
        self._recompute_checks()

    def check_time(self, now: float) -> None:
        """Report soft/hard time lifetimes (call from a timer; ``now`` on the install clock)."""
        life = self.lifetime
        age = now - self.installed_at
        if life.hard_seconds is not None and age >= life.hard_seconds:
            self._expire(hard=True, reason="time")
        elif life.soft_seconds is not None and age >= life.soft_seconds:
            self._expire(hard=False, reason="time")

    def expire(self, *, hard: bool = True) -> None:
        """Force expiry (e.g. the IKE side deleted the SA)."""
        self._expire(hard=hard, reason="forced")

    def counters(self) -> dict[str, int]:
        return {
            "bytes_in": self.bytes_in,
            "packets_in": self.packets_in,
            "bytes_out": self.bytes_out,
            "packets_out": self.packets_out,
            DropReason.ICV_FAILURE.value: self.icv_failures,
            DropReason.REPLAY.value: self.replays,
            DropReason.MALFORMED.value: self.malformed,
            DropReason.POLICY.value: self.policy_drops,
            DropReason.DUMMY.value: self.dummy,
            DropReason.EXPIRED.value: self.expired_drops,
        }


class EspSa(SaBase):
    """One direction of an ESP SA.

    ``encr_key`` is the key material as IKE derives it (salt included for AEADs);
    ``integ``/``integ_key`` only for non-AEAD transforms. ``replay_window`` (inbound) is in
    packets. ``selectors`` (inbound, tunnel mode) are the traffic selectors decrypted
    packets must match (source = the peer's side): packets outside them are dropped
    (RFC 4301 sec. 5.2, step 4). ``tfc_pad_to`` pads tunnel-mode inner packets up to that
    length (RFC 4303 sec. 2.7). ``now`` is the installation time for time lifetimes (any
    monotonic clock; the data plane never reads one). ``src``/``dst`` are the outer
    addresses (listings, tunnel headers); ``udp_encap`` the (sport, dport) of RFC 3948.
    """

    protocol = "esp"

    def __init__(
        self, spi: int, direction: Direction | str, encr: EncrId | int, encr_key: bytes,
        integ: IntegId | int = IntegId.NONE, integ_key: bytes = b"", *,
        esn: bool = False, replay_window: int = 1024, mode: Mode | str = Mode.TUNNEL,
        src: str | None = None, dst: str | None = None,
        selectors: tuple[Selector, ...] | list[Selector] = (),
        lifetime: Lifetime | None = None, tfc_pad_to: int = 0,
        udp_encap: tuple[int, int] | None = None, reqid: int = 0,
        allow_null: bool = False, allow_no_integrity: bool = False,
        seq_soft_limit: int | None = None, now: float = 0.0,
        events: collections.deque | None = None,
    ) -> None:  # fmt: skip
        super().__init__(
            spi, direction, esn=esn, replay_window=replay_window, mode=mode, src=src,
            dst=dst, selectors=selectors, lifetime=lifetime, udp_encap=udp_encap,
            reqid=reqid, seq_soft_limit=seq_soft_limit, now=now, events=events,
        )  # fmt: skip
        self.encr = EncrId(encr)
        self.integ = IntegId(integ)
        self.key_bits = 8 * (len(encr_key) - encr_info(encr).salt_size)
        if not 0 <= tfc_pad_to <= _MAX_INNER:
            raise ValueError("tfc_pad_to out of range")
        self.tfc_pad_to = tfc_pad_to if self.mode is Mode.TUNNEL else 0

        transform: Transform = make_transform(
            encr, encr_key, integ, integ_key,
            allow_null=allow_null, allow_no_integrity=allow_no_integrity,
        )  # fmt: skip
        self._transform = transform
        self._seal = transform.seal
        self._open = transform.open
        self._iv_size = transform.iv_size
        self._icv_size = transform.icv_size
        self._align = max(4, transform.block_size)
        self._overhead = 8 + transform.iv_size + transform.icv_size  # all but the payload
        self._tunnel = self.mode is Mode.TUNNEL
        # Per-SA buffers of the generic paths, allocated on first use (the AEAD fast paths
        # never need them, and 64 KiB per SA adds up with many SAs).
        self._scratch_buffer: memoryview | None = None
        self._parts_buffer: memoryview | None = None

        if type(transform) is _Aead:
            if self.direction is Direction.OUT and not self.tfc_pad_to:
                fast_into, fast_parts = make_aead_encrypt(self)
                self.encrypt_into = fast_into  # type: ignore[method-assign]
                self.encrypt_parts = fast_parts  # type: ignore[method-assign]
            if self.direction is Direction.IN:
                fast_into, fast_view = make_aead_decrypt(self)
                self.decrypt_into = fast_into  # type: ignore[method-assign]
                self.decrypt_view = fast_view  # type: ignore[method-assign]

    # ---------------------------------------------------------------- sizes
    def encrypted_size(self, inner_len: int) -> int:
        """Length of the ESP packet (SPI .. ICV) ``encrypt_into`` writes for this input."""
        payload = max(inner_len, self.tfc_pad_to)
        return self._overhead + payload + 2 + (-(payload + 2)) % self._align

    @property
    def overhead(self) -> int:
        """Worst-case bytes added to an inner packet (for MTU computations)."""
        return self._overhead + 2 + self._align - 1

    # ---------------------------------------------------------------- outbound
    def encrypt_into(
        self, inner: bytes | bytearray | memoryview, out: bytearray | memoryview,
        offset: int = 0, next_header: int = 0,
    ) -> int:  # fmt: skip
        """Encrypt ``inner`` into ``out[offset:]`` and return the ESP packet length.

        Tunnel mode: ``inner`` is an IPv4/IPv6 packet (next header 4/41 is taken from the
        version nibble). Transport mode: ``inner`` is the upper-layer payload and
        ``next_header`` its protocol number. Raises ``EspDrop(EXPIRED)`` once the SA hit a
        hard limit (lifetime or sequence number).
        """
        if self.direction is Direction.IN:
            raise ValueError("encrypt on an inbound SA")
        seq = self.seq + 1
        if seq >= self._seq_check:
            self._outbound_limit(seq)
        inner_len = len(inner)
        if not next_header:
            next_header = self._tunnel_next_header(inner)
        scratch = self._scratch_buffer
        if scratch is None:
            scratch = self._scratch_buffer = memoryview(bytearray(_MAX_INNER + 2 * 256))
        scratch[:inner_len] = inner
        payload_len = inner_len
        if self.tfc_pad_to > inner_len:
            # RFC 4303 sec. 2.7: TFC padding after the inner packet; the receiver finds the
            # real end from the inner IP header.
            payload_len = self.tfc_pad_to
            scratch[inner_len:payload_len] = bytes(payload_len - inner_len)
        pad = (-(payload_len + 2)) % self._align
        end = payload_len + pad + 2
        scratch[payload_len:end] = _TRAILERS[pad]
        scratch[end - 1] = next_header
        if type(out) is not memoryview:
            out = memoryview(out)
        _pack_header(out, offset, self.spi, seq & 0xFFFFFFFF)
        self._seal(out, offset, scratch[:end], seq, self.esn)
        self.seq = seq
        self.bytes_out += inner_len
        if self.bytes_out >= self._bytes_check:
            self._limit_reached()
        return self._overhead + end

    def encrypt_parts(
        self, inner: bytes | bytearray | memoryview, next_header: int = 0
    ) -> tuple[memoryview, bytes]:
        """Encrypt ``inner``; return the ESP packet as two buffers for a gathering send
        (``sock.sendmsg([header, body], [], 0, peer)``): ``header`` = SPI || Seq || IV
        and ``body`` = ciphertext || ICV. Saves the copies into a caller buffer. ``header``
        is a view into a per-SA buffer: valid until the next call on this SA."""
        out = self._parts_buffer
        if out is None:
            size = _MAX_INNER + 2 * 256 + self._overhead
            out = self._parts_buffer = memoryview(bytearray(size))
        n = self.encrypt_into(inner, out, 0, next_header)
        split = 8 + self._iv_size
        return out[:split], bytes(out[split:n])

    def _trailer(self, pad: int, next_header: int, inner: bytes | bytearray | memoryview) -> bytes:
        if not next_header:
            next_header = self._tunnel_next_header(inner)
        return _PAD[:pad] + bytes((pad, next_header))

    def _tunnel_next_header(self, inner: bytes | bytearray | memoryview) -> int:
        version = inner[0] >> 4 if len(inner) else 0
        if version == 4:
            return NEXT_HEADER_IPV4
        if version == 6:
            return NEXT_HEADER_IPV6
        raise ValueError("tunnel mode needs an IPv4/IPv6 packet, or give next_header")

    def encrypt(self, inner: bytes | bytearray | memoryview, next_header: int = 0) -> bytes:
        """Bytes-in/bytes-out form of ``encrypt_into``."""
        out = bytearray(self.encrypted_size(len(inner)))
        n = self.encrypt_into(inner, out, 0, next_header)
        return bytes(out[:n])

    def encrypt_dummy(self, size: int = 0) -> bytes:
        """A dummy packet (next header 59, RFC 4303 sec. 2.6) with ``size`` zero bytes,
        encrypted like any other; the peer drops it silently (traffic flow confidentiality).
        """
        return self.encrypt(bytes(size), next_header=NEXT_HEADER_NONE)

    # ---------------------------------------------------------------- whole IP packets
    def protect_transport(self, packet: bytes | bytearray | memoryview) -> bytes:
        """Transport mode (RFC 4303 sec. 3.1.1): the full IP packet in, the full IP packet
        out with ESP (protocol 50) after the IP header (after the hop-by-hop, routing and
        fragment headers for IPv6), lengths and IPv4 checksum fixed. With ``udp_encap``
        the ESP is carried in UDP (RFC 3948 sec. 2.1)."""
        if self.mode is not Mode.TRANSPORT:
            raise ValueError("protect_transport on a tunnel-mode SA")
        offset, field = ip.transport_split(packet)
        header = bytearray(packet[:offset])
        esp = self.encrypt(memoryview(packet)[offset:], next_header=packet[field])
        return self._with_header(header, field, esp)

    def _with_header(self, header: bytearray, field: int, esp: bytes) -> bytes:
        if self.udp_encap:
            v6 = header[0] >> 4 == 6
            addresses = (ip.address_text(header, 8), ip.address_text(header, 24)) if v6 else None
            esp = udp_encap.wrap(esp, *self.udp_encap, ipv6_addresses=addresses)
            header[field] = ip.IPPROTO_UDP
        else:
            header[field] = ip.IPPROTO_ESP
        packet = header + esp
        ip.set_lengths(packet)
        return bytes(packet)

    def unprotect_transport(self, packet: bytes | bytearray | memoryview) -> bytes:
        """Inverse of ``protect_transport``: the original IP packet (lengths and checksum
        fixed). Raises ``EspDrop`` (counted) for anything that does not decrypt."""
        offset, field = self._locate_esp(packet)
        payload = self.decrypt(memoryview(packet)[offset:])
        header = bytearray(packet[: offset - (8 if self.udp_encap else 0)])
        header[field] = self.last_next_header
        result = header + payload
        ip.set_lengths(result)
        return bytes(result)

    def _locate_esp(self, packet: bytes | bytearray | memoryview) -> tuple[int, int]:
        try:
            if self.udp_encap:
                offset, field = ip.find_ipsec_header(packet, ip.IPPROTO_UDP)
                udp_encap.unwrap(memoryview(packet)[offset:])
                return offset + 8, field
            return ip.find_ipsec_header(packet, ip.IPPROTO_ESP)
        except ValueError as err:
            self.malformed += 1
            raise EspDrop(DropReason.MALFORMED, str(err)) from None

    def encapsulate(self, inner: bytes | bytearray | memoryview) -> bytes:
        """Tunnel mode with the outer header (RFC 4303 sec. 3.1.2): outer IP (``src`` to
        ``dst`` of the SA) [+ UDP if ``udp_encap``] + ESP. For raw sockets and tests; the
        daemon sends ``encrypt_into`` output through a UDP socket instead."""
        if self.mode is not Mode.TUNNEL or self.src is None or self.dst is None:
            raise ValueError("encapsulate needs a tunnel-mode SA with src and dst")
        esp = self.encrypt(inner)
        v6 = ":" in self.src
        header = bytearray(ip.ip_header(self.src, self.dst, ip.IPPROTO_ESP, 0))
        return self._with_header(header, 6 if v6 else 9, esp)

    def decapsulate(self, packet: bytes | bytearray | memoryview) -> bytes:
        """Inverse of ``encapsulate``: the inner packet."""
        offset, _ = self._locate_esp(packet)
        return self.decrypt(memoryview(packet)[offset:])

    # ---------------------------------------------------------------- inbound
    def decrypt_into(
        self, packet: bytes | bytearray | memoryview, out: bytearray | memoryview,
        offset: int = 0,
    ) -> int:  # fmt: skip
        """Verify and decrypt the ESP ``packet`` (SPI .. ICV); write the inner packet (tunnel)
        or upper-layer payload (transport) at ``out[offset:]`` and return its length.
        The next header is left in ``self.last_next_header``. ``out`` needs room for
        ``len(packet)`` bytes. Raises ``EspDrop`` (already counted) on any drop."""
        mv = packet if type(packet) is memoryview else memoryview(packet)
        plaintext_len = len(mv) - self._overhead
        if plaintext_len < self._min_plaintext:
            self._drop_early()
        if self._align > 4 and plaintext_len % self._align:
            self.malformed += 1
            raise EspDrop(DropReason.MALFORMED, "ciphertext not a multiple of the block size")
        replay = self.replay
        if replay is None:
            raise ValueError("decrypt on an outbound SA")
        seq = _unpack_seq(mv, 4)[0]
        if self.esn:
            seq = replay.infer_esn(seq)  # type: ignore[union-attr]
        if seq <= replay.highest and not replay.check(seq):  # type: ignore[union-attr]
            self.replays += 1
            raise EspDrop(DropReason.REPLAY, f"sequence number {seq}")
        if type(out) is not memoryview:
            out = memoryview(out)
        target = out[offset : offset + plaintext_len]
        if self._open(mv, seq, self.esn, target) < 0:
            self.icv_failures += 1
            raise EspDrop(DropReason.ICV_FAILURE, "MAC mismatch")
        replay.update(seq)  # type: ignore[union-attr]
        return self._finish_inbound(target, plaintext_len)

    def _finish_inbound(self, target: memoryview, plaintext_len: int) -> int:
        """Trailer checks after the ICV verified (RFC 4303 sec. 2.4-2.6, 3.4.4)."""
        pad_len = target[plaintext_len - 2]
        next_header = target[plaintext_len - 1]
        data_len = plaintext_len - 2 - pad_len
        if data_len < 0:
            self.malformed += 1
            raise EspDrop(DropReason.MALFORMED, "pad length beyond the payload")
        if pad_len and target[data_len : plaintext_len - 2] != _PAD[:pad_len]:
            self.malformed += 1
            raise EspDrop(DropReason.MALFORMED, "padding bytes are not 1, 2, 3, ...")
        if next_header == NEXT_HEADER_NONE:
            self.dummy += 1
            raise EspDrop(DropReason.DUMMY)
        if self._tunnel:
            if next_header == NEXT_HEADER_IPV4 and data_len >= 20 and target[0] >> 4 == 4:
                total = (target[2] << 8) | target[3]  # drops TFC padding (sec. 2.7)
                if total < 20 or total > data_len:
                    self._bad_inner(next_header)
                data_len = total
            else:
                data_len = self._inner_length(target, data_len, next_header)
            if self.selectors and not self._selectors_match(target[:data_len]):
                self.policy_drops += 1
                raise EspDrop(DropReason.POLICY, "inner packet outside the SA's selectors")
        self.last_next_header = next_header
        self.packets_in += 1
        self.bytes_in += data_len
        if self.packets_in >= self._packets_check or self.bytes_in >= self._bytes_check:
            self._limit_reached()
        return data_len

    def decrypt_view(self, packet: bytes | bytearray | memoryview) -> memoryview:
        """Like ``decrypt_into`` but returns a read-only view of the inner packet in a new
        buffer (``os.write(tun_fd, view)`` needs no buffer of the caller's)."""
        out = bytearray(len(packet))
        n = self.decrypt_into(packet, out)
        return memoryview(out)[:n]

    def decrypt(self, packet: bytes | bytearray | memoryview) -> bytes:
        """Bytes-in/bytes-out form of ``decrypt_into``."""
        return bytes(self.decrypt_view(packet))

    def _drop_early(self) -> None:
        if self.expired:
            self.expired_drops += 1
            raise EspDrop(DropReason.EXPIRED, "SA reached a hard limit")
        self.malformed += 1
        raise EspDrop(DropReason.MALFORMED, "shorter than SPI + Seq + IV + trailer + ICV")

    def _bad_inner(self, next_header: int) -> None:
        self.malformed += 1
        raise EspDrop(DropReason.MALFORMED, f"bad tunnel-mode inner packet (next {next_header})")

    def _inner_length(self, inner: memoryview, data_len: int, next_header: int) -> int:
        """Length of the inner IP packet from its own header (drops TFC padding)."""
        if next_header == NEXT_HEADER_IPV6 and data_len >= 40 and inner[0] >> 4 == 6:
            total = 40 + ((inner[4] << 8) | inner[5])
            if total <= data_len:
                return total
        self._bad_inner(next_header)
        return 0  # not reached

    # ---------------------------------------------------------------- reporting
    @property
    def encr_name(self) -> str:
        return ENCR_INFO[self.encr].name

    @property
    def integ_name(self) -> str | None:
        info = INTEG_INFO.get(self.integ)
        return info.name if info else None

    @property
    def icv_size(self) -> int:
        return self._icv_size

    def __repr__(self) -> str:  # never shows keys
        return (
            f"EspSa(spi={self.spi:#010x}, {self.direction.value}, {self.encr.name}, "
            f"{self.mode.value}, esn={self.esn})"
        )
