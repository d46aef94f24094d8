"""ESP Security Association (RFC 4303): the per-packet hot path.

One ``EspSa`` is one direction of one Child SA. Outbound: ``encrypt_into`` writes
``SPI || Seq || IV || ciphertext || ICV`` into a caller-owned buffer at an offset (so the
caller can reserve room for outer headers); inbound: ``decrypt_into`` reads a memoryview and
writes the inner packet into a caller-owned buffer. ``encrypt``/``decrypt`` are the
bytes-in/bytes-out wrappers.

Per packet the SA does: one sequence-number compare, ``struct.pack_into`` of the header,
one copy of the inner packet into a per-SA scratch buffer (to append the ESP trailer),
one ``encrypt_into``; inbound, the replay check, one ``decrypt_into``, the replay update
(only after the ICV verified: RFC 4303 sec. 3.4.3) and the trailer checks. No objects are
built per packet beyond the few memoryview slices the ``cryptography`` calls need.
"""

from __future__ import annotations

import collections
import struct
from enum import StrEnum

from esp.errors import DropReason, EspDrop
from esp.events import Lifetime, SaExpired
from esp.replay import ReplayWindow
from esp.selectors import Selector, packet_fields
from esp.transforms import ENCR_INFO, INTEG_INFO, Transform, encr_info, make_transform
from ikev2.enums import EncrId, IntegId

_pack_header = struct.Struct("!II").pack_into
_unpack_seq = struct.Struct("!I").unpack_from

NEXT_HEADER_IPV4 = 4  # IP-in-IP, RFC 4303 sec. 2.6 / IANA protocol numbers
NEXT_HEADER_IPV6 = 41
NEXT_HEADER_NONE = 59  # "No Next Header": a dummy packet (RFC 4303 sec. 2.6)

# RFC 4303 sec. 2.4: padding bytes are 1, 2, 3, ... (a monotonically increasing series).
_PAD = bytes(range(1, 256))
_MAX_INNER = 65535
_NEVER = 1 << 65


class Mode(StrEnum):
    TUNNEL = "tunnel"
    TRANSPORT = "transport"


class Direction(StrEnum):
    IN = "in"
    OUT = "out"


class EspSa:
    """One direction of an ESP SA. Keyword arguments only, except spi/direction/encr/key.

    ``encr_key`` is the key material as IKE derives it (salt included for AEADs);
    ``integ``/``integ_key`` only for non-AEAD transforms. ``replay_window`` (inbound) is in
    packets. ``selectors`` (inbound) are the traffic selectors decrypted packets must match
    (source = peer side): packets outside them are dropped (RFC 4301 sec. 5.2, step 4).
    ``tfc_pad_to`` pads tunnel-mode inner packets up to that length (RFC 4303 sec. 2.7).
    ``now`` is the installation time for time lifetimes (any monotonic clock).
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
        if not 256 <= spi <= 0xFFFFFFFF:
            # RFC 4303 sec. 2.1: 1..255 are reserved by IANA, 0 is for local use only.
            raise ValueError(f"SPI {spi:#x} is reserved")
        self.spi = spi
        self.direction = Direction(direction)
        self.encr = EncrId(encr)
        self.integ = IntegId(integ)
        self.key_bits = 8 * (len(encr_key) - encr_info(encr).salt_size)
        self.esn = esn
        self.mode = Mode(mode)
        self.src = src
        self.dst = dst
        self.selectors = tuple(selectors)
        self.lifetime = lifetime or Lifetime()
        self.reqid = reqid
        self.udp_encap = udp_encap
        if not 0 <= tfc_pad_to <= _MAX_INNER:
            raise ValueError("tfc_pad_to out of range")
        self.tfc_pad_to = tfc_pad_to
        self.installed_at = now
        self.events: collections.deque = events if events is not None else collections.deque()

        self._transform: Transform = make_transform(
            encr, encr_key, integ, integ_key,
            allow_null=allow_null, allow_no_integrity=allow_no_integrity,
        )  # fmt: skip
        t = self._transform
        self._seal = t.seal
        self._open = t.open
        self._iv_size = t.iv_size
        self._icv_size = t.icv_size
        self._align = max(4, t.block_size)
        self._overhead = 8 + t.iv_size + t.icv_size  # everything but the payload
        self._tunnel = self.mode is Mode.TUNNEL
        self._scratch_buf = bytearray(_MAX_INNER + 2 * 256)
        self._scratch = memoryview(self._scratch_buf)

        # Outbound sequence number: the last one sent. RFC 4303 sec. 3.3.3: never wraps.
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
        self.bytes_in = self.packets_in = self.bytes_out = self.packets_out = 0
        self.icv_failures = self.replays = self.malformed = 0
        self.policy_drops = self.dummy = self.expired_drops = 0

        # One compare per packet: the next byte/packet count (or sequence number) at which
        # something has to be looked at; recomputed in _limit_reached.
        self._seq_check = seq_soft_limit
        self._bytes_check = _NEVER
        self._packets_check = _NEVER
        self._recompute_checks()

    # ---------------------------------------------------------------- sizes
    def encrypted_size(self, inner_len: int) -> int:
        """Length of the ESP packet (SPI .. ICV) ``encrypt_into`` writes for this input."""
        payload = max(inner_len, self.tfc_pad_to) if self._tunnel else inner_len
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
        seq = self.seq + 1
        if seq >= self._seq_check or self.expired:
            self._sequence_limit(seq)
        inner_len = len(inner)
        if not next_header:
            version = inner[0] >> 4 if inner_len else 0
            if version == 4:
                next_header = NEXT_HEADER_IPV4
            elif version == 6:
                next_header = NEXT_HEADER_IPV6
            else:
                raise ValueError("tunnel mode needs an IPv4/IPv6 packet, or give next_header")
        payload_len = inner_len
        scratch = self._scratch
        scratch[:inner_len] = inner
        if self.tfc_pad_to > inner_len and self._tunnel:
            # RFC 4303 sec. 2.7: TFC padding after the inner packet; the receiver finds the
            # real end from the inner IP header.
            payload_len = self.tfc_pad_to
            scratch[inner_len:payload_len] = bytes(payload_len - inner_len)
        pad = (-(payload_len + 2)) % self._align
        end = payload_len + pad
        scratch[payload_len:end] = _PAD[:pad]
        scratch[end] = pad
        scratch[end + 1] = next_header
        plaintext_len = end + 2
        if type(out) is not memoryview:
            out = memoryview(out)
        _pack_header(out, offset, self.spi, seq & 0xFFFFFFFF)
        self._seal(out, offset, scratch[:plaintext_len], seq, self.esn)
        self.seq = seq
        self.packets_out += 1
        self.bytes_out += inner_len
        if self.packets_out >= self._packets_check or self.bytes_out >= self._bytes_check:
            self._limit_reached()
        return self._overhead + plaintext_len

    def encrypt(self, inner: bytes | bytearray | memoryview, next_header: int = 0) -> bytes:
        """Bytes-in/bytes-out form of ``encrypt_into``."""
        out = bytearray(self.encrypted_size(len(inner)))
        n = self.encrypt_into(inner, out, 0, next_header)
        return bytes(out[:n])

    def encrypt_dummy(self, size: int = 0) -> bytes:
        """A dummy packet (next header 59, RFC 4303 sec. 2.6) of ``size`` random-looking
        zero bytes; the peer drops it silently. Used for traffic flow confidentiality."""
        return self.encrypt(bytes(size), next_header=NEXT_HEADER_NONE)

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
        n = len(mv)
        plaintext_len = n - self._overhead
        if plaintext_len < 2 or self.expired:
            return self._drop_early(plaintext_len)
        if self._align > 4 and plaintext_len % self._align:
            self.malformed += 1
            raise EspDrop(DropReason.MALFORMED, "ciphertext not a multiple of the block size")
        replay = self.replay
        seq = _unpack_seq(mv, 4)[0]
        if self.esn:
            seq = replay.infer_esn(seq)  # type: ignore[union-attr]
        if not replay.check(seq):  # type: ignore[union-attr]
            self.replays += 1
            raise EspDrop(DropReason.REPLAY, f"seq {seq}")
        if type(out) is not memoryview:
            out = memoryview(out)
        target = out[offset : offset + plaintext_len]
        if self._open(mv, seq, self.esn, target) < 0:
            self.icv_failures += 1
            raise EspDrop(DropReason.ICV_FAILURE, "MAC mismatch")
        replay.update(seq)  # type: ignore[union-attr]

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
            data_len = self._inner_length(target, data_len, next_header)
        self.last_next_header = next_header
        self.packets_in += 1
        self.bytes_in += data_len
        if self.selectors and not self._selectors_match(target[:data_len]):
            self.policy_drops += 1
            raise EspDrop(DropReason.POLICY, "inner packet outside the SA's selectors")
        if self.packets_in >= self._packets_check or self.bytes_in >= self._bytes_check:
            self._limit_reached()
        return data_len

    def decrypt(self, packet: bytes | bytearray | memoryview) -> bytes:
        """Bytes-in/bytes-out form of ``decrypt_into``."""
        out = bytearray(len(packet))
        n = self.decrypt_into(packet, out)
        return bytes(out[:n])

    def _drop_early(self, plaintext_len: int) -> int:
        if self.expired:
            self.expired_drops += 1
            raise EspDrop(DropReason.EXPIRED, "SA reached a hard limit")
        self.malformed += 1
        raise EspDrop(DropReason.MALFORMED, "shorter than SPI + Seq + IV + trailer + ICV")

    def _inner_length(self, inner: memoryview, data_len: int, next_header: int) -> int:
        """Length of the inner IP packet from its own header (drops TFC padding)."""
        if next_header == NEXT_HEADER_IPV4:
            if data_len >= 20 and inner[0] >> 4 == 4:
                total = (inner[2] << 8) | inner[3]
                if 20 <= total <= data_len:
                    return total
        elif next_header == NEXT_HEADER_IPV6 and data_len >= 40 and inner[0] >> 4 == 6:
            total = 40 + ((inner[4] << 8) | inner[5])
            if total <= data_len:
                return total
        self.malformed += 1
        raise EspDrop(
            DropReason.MALFORMED, f"tunnel mode inner packet bad (next header {next_header})"
        )

    def _selectors_match(self, inner: memoryview) -> bool:
        if not self._tunnel:
            return True  # transport mode: the caller checks the outer header it holds
        fields = packet_fields(inner)
        if fields is None:
            return False
        return any(sel.matches(fields) for sel in self.selectors)

    # ---------------------------------------------------------------- limits
    def _recompute_checks(self) -> None:
        life = self.lifetime
        if self.soft_expired:
            packets = life.hard_packets
            nbytes = life.hard_bytes
            self._seq_check = self.seq_hard_limit
        else:
            packets = life.soft_packets if life.soft_packets is not None else life.hard_packets
            nbytes = life.soft_bytes if life.soft_bytes is not None else life.hard_bytes
            self._seq_check = min(self.seq_soft_limit, self.seq_hard_limit)
        self._packets_check = packets if packets is not None else _NEVER
        self._bytes_check = nbytes if nbytes is not None else _NEVER

    def _limit_reached(self) -> None:
        life = self.lifetime
        packets = self.packets_in + self.packets_out
        nbytes = self.bytes_in + self.bytes_out
        if (life.hard_packets is not None and packets >= life.hard_packets) or (
            life.hard_bytes is not None and nbytes >= life.hard_bytes
        ):
            reason = (
                "packets"
                if life.hard_packets is not None and packets >= life.hard_packets
                else "bytes"
            )
            self._expire(hard=True, reason=reason)
        elif not self.soft_expired:
            reason = (
                "packets"
                if life.soft_packets is not None and packets >= life.soft_packets
                else "bytes"
            )
            self._expire(hard=False, reason=reason)
        self._recompute_checks()

    def _sequence_limit(self, seq: int) -> None:
        if self.expired:
            self.expired_drops += 1
            raise EspDrop(DropReason.EXPIRED, "SA reached a hard limit")
        if seq > self.seq_hard_limit:
            self._expire(hard=True, reason="sequence")
            self.expired_drops += 1
            raise EspDrop(DropReason.EXPIRED, "sequence number would wrap (RFC 4303 sec. 3.3.3)")
        if seq >= self.seq_soft_limit and not self.soft_expired:
            self._expire(hard=False, reason="sequence")
        # Past the soft limit only the hard limit is left to watch.
        self._seq_check = self.seq_hard_limit + 1

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

    def check_time(self, now: float) -> None:
        """Report soft/hard time lifetimes (call from a timer; ``now`` as at install)."""
        life = self.lifetime
        age = now - self.installed_at
        if life.hard_seconds is not None and age >= life.hard_seconds:
            self._expire(hard=True, reason="time")
        elif life.soft_seconds is not None and age >= life.soft_seconds:
            self._expire(hard=False, reason="time")
        self._recompute_checks()

    # ---------------------------------------------------------------- reporting
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
