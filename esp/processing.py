"""RFC 4303 processing of one ESP SA direction: the one definition of the per-packet path.

Outbound (RFC 4303 sec. 3.3), ``encrypt_into``:
    limits (one compare: ``SaBase.seq_check``) -> trailer (padding 1, 2, 3, ..., pad
    length, next header; sec. 2.4-2.6; TFC padding sec. 2.7) -> SPI || Seq || IV ->
    encryption and ICV -> counters (byte lifetimes: one compare).
Inbound (sec. 3.4), ``decrypt_view``:
    length -> sequence number (ESN: high half inferred, App. A2.2) -> replay check ->
    ICV verification and decryption -> replay update, only now (sec. 3.4.3: a forged
    packet never moves the window; ``ReplayWindow.update``) -> trailer checks (sec. 2.4,
    3.4.4: pad length, padding bytes, next header 59 = dummy) -> tunnel mode: the inner
    IP header gives the length (drops TFC padding) -> the SA's selectors (RFC 4301
    sec. 5.2) -> counters.

``build_outbound``/``build_inbound`` return these as closures; ``EspSa`` installs them as
its ``encrypt_into``/``encrypt_parts``/``decrypt_into``/``decrypt_view``. Why closures:
on CPython every attribute load, memoryview slice and temporary object costs roughly
30-100 ns, the order of the fixed cost of an AEAD call, so constants live in cell
variables and the buffers and their memoryview slices are made once per SA, here.

The cipher is called one of two ways, chosen once per SA:

* direct (``Transform.direct``: AES-GCM-16, AES-CCM, ChaCha20-Poly1305, no TFC padding):
  one ``struct.pack_into`` writes SPI || Seq || IV, the AAD and the nonce into one small
  per-SA buffer, ``inner || trailer`` is one concatenation, and ``AEAD.encrypt``/
  ``decrypt`` is called on it::

      outbound buffer:  SPI | Seq low | IV (= 64-bit Seq) | salt | IV      (non-ESN)
                        header = [0:16], AAD = [0:8], nonce = [16:]
      with ESN:         SPI | Seq low | IV | salt | IV | SPI | Seq high | Seq low
                        AAD = the last 12 octets (RFC 4106 sec. 5 / RFC 4303 sec. 2.2.1)

* through the transform (CBC/CTR + HMAC, GMAC, GCM-8/12, ENCR_NULL, TFC padding):
  ``Transform.seal`` / ``Transform.open`` on per-SA buffers.

Everything else (limits, trailer, replay, checks, counters) is written once, below, for
both. The SA's state is the public ``esp.state.SaBase``; the slow paths (limits reached)
are its methods.
"""

from __future__ import annotations

import struct
from typing import Protocol

from cryptography.exceptions import InvalidTag

from esp.constants import (
    AEAD_IV_LEN,
    ESP_HEADER_LEN,
    MAX_INNER,
    PADDING,
    TRAILER_FIXED_LEN,
    IpProto,
)
from esp.errors import DropReason, EspDrop
from esp.state import SaBase
from esp.transforms import Buffer, Transform

_pack_header = struct.Struct("!II").pack_into
_unpack_seq_iv = struct.Struct("!IQ").unpack_from

# Plain ints (not IntEnum members) for the per-packet compares: CPython specialises
# int == int only for exact ints.
_IPV4 = int(IpProto.IPV4)
_IPV6 = int(IpProto.IPV6)
_NO_NEXT_HEADER = int(IpProto.NONE)
_HEADER_LEN = ESP_HEADER_LEN + AEAD_IV_LEN  # SPI || Seq || IV of the direct AEADs

# The padding of each length (RFC 4303 sec. 2.4: 1, 2, 3, ...).
_PADDINGS = tuple(PADDING[:pad] for pad in range(256))
# The tunnel-mode trailer by (first octet of the inner packet & 0xF0) | padding length
# (0..3, 4-octet alignment): IPv4 (0x4_) -> next header 4, IPv6 (0x6_) -> 41, anything
# else None (not an IP packet). One table lookup gives the whole trailer.
_TUNNEL_TRAILERS = tuple(
    PADDING[: i & 3] + bytes((i & 3, _IPV4 if i >> 4 == 4 else _IPV6)) if i >> 4 in (4, 6) else None
    for i in range(256)
)


class EncryptInto(Protocol):
    def __call__(
        self, inner: Buffer, out: bytearray | memoryview, offset: int = 0, next_header: int = 0
    ) -> int: ...


class EncryptParts(Protocol):
    def __call__(self, inner: Buffer, next_header: int = 0) -> tuple[memoryview, bytes]: ...


class DecryptInto(Protocol):
    def __call__(self, packet: Buffer, out: bytearray | memoryview, offset: int = 0) -> int: ...


class DecryptView(Protocol):
    # ``out``: where the transform path decrypts to (a new buffer when None); the direct
    # AEAD path returns a view of the AEAD's own output and ignores it. Either way one
    # call, no copy (the daemon's inbound path: view -> os.write to the TUN).
    def __call__(
        self, packet: Buffer, out: bytearray | memoryview | None = None, offset: int = 0
    ) -> memoryview: ...


# ---------------------------------------------------------------- trailer
def tunnel_next_header(inner: Buffer) -> int:
    """Tunnel mode: the next header of an inner packet from its version nibble."""
    version = inner[0] >> 4 if len(inner) else 0
    if version == 4:
        return _IPV4
    if version == 6:
        return _IPV6
    raise ValueError("tunnel mode needs an IPv4/IPv6 packet, or give next_header")


def make_trailer(pad: int, next_header: int, inner: Buffer) -> bytes:
    """Padding || Pad Length || Next Header (RFC 4303 sec. 2.4-2.6); next header 0 means
    tunnel mode (taken from ``inner``)."""
    if not next_header:
        next_header = tunnel_next_header(inner)
    return _PADDINGS[pad] + bytes((pad, next_header))


def plaintext_size(inner_len: int, tfc_pad_to: int, align: int) -> int:
    """Length of ``inner || TFC padding || padding || pad length || next header``."""
    payload = max(inner_len, tfc_pad_to)
    return payload + TRAILER_FIXED_LEN + (-(payload + TRAILER_FIXED_LEN)) % align


# ---------------------------------------------------------------- inbound slow paths
def _drop_short(sa: SaBase) -> None:
    if sa.expired:
        sa.expired_drops += 1
        raise EspDrop(DropReason.EXPIRED, "SA reached a hard limit")
    sa.malformed += 1
    raise EspDrop(DropReason.MALFORMED, "shorter than SPI + Seq + IV + trailer + ICV")


def _bad_inner(sa: SaBase, next_header: int) -> None:
    sa.malformed += 1
    raise EspDrop(DropReason.MALFORMED, f"bad tunnel-mode inner packet (next {next_header})")


def _ipv6_inner_length(sa: SaBase, inner: Buffer, data_len: int, next_header: int) -> int:
    """Length of an inner IPv6 packet from its own header (drops TFC padding)."""
    if next_header == _IPV6 and data_len >= 40 and inner[0] >> 4 == 6:
        total = 40 + ((inner[4] << 8) | inner[5])
        if total <= data_len:
            return total
    _bad_inner(sa, next_header)
    return 0  # not reached


# ---------------------------------------------------------------- builders
def build_outbound(
    sa: SaBase, transform: Transform, tfc_pad_to: int = 0
) -> tuple[EncryptInto, EncryptParts]:
    """``encrypt_into`` and ``encrypt_parts`` of an outbound SA.

    ``encrypt_parts`` is ``encrypt_into`` with no caller buffer (``out=None``): the direct
    path then keeps the AEAD's output as the body (no copy), the transform path encrypts
    into a per-SA buffer. The header is a view into a per-SA buffer: valid until the next
    call on the SA.
    """
    spi = sa.spi
    esn = sa.esn
    direct = transform.direct if not tfc_pad_to else None
    align = max(4, transform.block_size)
    overhead = ESP_HEADER_LEN + transform.iv_size + transform.icv_size
    split = ESP_HEADER_LEN + transform.iv_size

    # Direct path: SPI || Seq || IV, nonce and AAD in one buffer (see the module doc).
    salt = direct.salt if direct is not None else b""
    seal = direct.encrypt if direct is not None else None
    salt_len = len(salt)
    buf = bytearray(_HEADER_LEN + salt_len + AEAD_IV_LEN + 12)
    view = memoryview(buf)
    header = view[0:_HEADER_LEN]
    nonce = view[_HEADER_LEN : _HEADER_LEN + salt_len + AEAD_IV_LEN]
    if esn:
        aad = view[_HEADER_LEN + salt_len + AEAD_IV_LEN :]
        pack = struct.Struct(f"!IIQ{salt_len}sQIQ").pack_into
    else:
        aad = view[0:ESP_HEADER_LEN]
        pack = struct.Struct(f"!IIQ{salt_len}sQ").pack_into
    tunnel_trailers = _TUNNEL_TRAILERS
    join = b"".join
    header_len = _HEADER_LEN

    # Transform path: inner || TFC padding || trailer assembled in a scratch buffer,
    # allocated on first use (64 KiB per SA adds up with many SAs).
    scratch: memoryview | None = None
    parts_buffer: memoryview | None = None
    # encrypt_parts: the last header and body (encrypt_into with out=None sets them).
    parts_header: memoryview = header
    body = b""

    def seal_with_transform(
        inner: Buffer, out: bytearray | memoryview | None, offset: int, next_header: int,
        seq: int,
    ) -> int:  # fmt: skip
        nonlocal scratch, parts_buffer, parts_header, body
        inner_len = len(inner)
        payload_len = max(inner_len, tfc_pad_to)
        pad = (-(payload_len + TRAILER_FIXED_LEN)) % align
        trailer = make_trailer(pad, next_header, inner)
        end = payload_len + pad + TRAILER_FIXED_LEN
        if scratch is None:
            scratch = memoryview(bytearray(MAX_INNER + 2 * 256))
        scratch[:inner_len] = inner
        if payload_len > inner_len:
            # RFC 4303 sec. 2.7: TFC padding after the inner packet; the receiver finds
            # the real end from the inner IP header.
            scratch[inner_len:payload_len] = bytes(payload_len - inner_len)
        scratch[payload_len:end] = trailer
        if out is None:
            if parts_buffer is None:
                parts_buffer = memoryview(bytearray(MAX_INNER + 2 * 256 + overhead))
                parts_header = parts_buffer[:split]
            target, offset = parts_buffer, 0
        else:
            target = out if type(out) is memoryview else memoryview(out)
        _pack_header(target, offset, spi, seq & 0xFFFFFFFF)
        transform.seal(target, offset, scratch[:end], seq, esn)
        if out is None:
            body = bytes(target[split : overhead + end])
        return overhead + end

    def encrypt_into(
        inner: Buffer, out: bytearray | memoryview | None, offset: int = 0,
        next_header: int = 0,
    ) -> int:  # fmt: skip
        nonlocal body
        seq = sa.seq + 1
        if seq >= sa.seq_check:
            sa.outbound_limit(seq)  # raises EspDrop(EXPIRED) past a hard limit
        inner_len = len(inner)
        if seal is None:
            length = seal_with_transform(inner, out, offset, next_header, seq)
        else:
            # RFC 4303 sec. 2.4: pad to 4-octet alignment; tunnel mode takes the next
            # header from the version nibble: one table lookup gives the whole trailer.
            if next_header or not inner_len:
                trailer = make_trailer((2 - inner_len) & 3, next_header, inner)
            else:
                found = tunnel_trailers[(inner[0] & 0xF0) | ((2 - inner_len) & 3)]
                if found is None:
                    found = make_trailer((2 - inner_len) & 3, next_header, inner)
                trailer = found
            if esn:
                pack(buf, 0, spi, seq & 0xFFFFFFFF, seq, salt, seq, spi, seq)
            else:  # seq < 2**32 here: the hard limit stops the SA before
                pack(buf, 0, spi, seq, seq, salt, seq)
            sealed = seal(
                nonce, inner + trailer if type(inner) is bytes else join((inner, trailer)), aad
            )
            if out is None:  # encrypt_parts: the AEAD's output is the body, no copy
                body = sealed
                length = 0  # not used
            else:
                length = header_len + len(sealed)
                out[offset : offset + header_len] = header
                out[offset + header_len : offset + length] = sealed
        sa.seq = seq
        sa.bytes_out = sent = sa.bytes_out + inner_len
        if sent >= sa.bytes_check:
            sa.limit_reached()
        return length

    def encrypt_parts(inner: Buffer, next_header: int = 0) -> tuple[memoryview, bytes]:
        encrypt_into(inner, None, 0, next_header)
        return parts_header, body

    return encrypt_into, encrypt_parts


def build_inbound(sa: SaBase, transform: Transform) -> tuple[DecryptInto, DecryptView]:
    """``decrypt_into`` and ``decrypt_view`` of an inbound SA.

    ``decrypt_view`` is the definition. On the direct path ``AEAD.decrypt`` allocates the
    plaintext and the result is a view of it (one object fewer than a slice of a caller's
    buffer, and bytes index faster than memoryviews); ``decrypt_into`` copies it into the
    caller's buffer. On the transform path ``decrypt_into`` hands its buffer down and
    ``Transform.open`` decrypts straight into it.
    """
    replay = sa.replay
    if replay is None:
        raise ValueError("an inbound SA without a replay window")
    spi = sa.spi
    esn = sa.esn
    direct = transform.direct
    align = max(4, transform.block_size)
    check_blocks = align > 4  # block ciphers: the ciphertext is whole blocks
    overhead = ESP_HEADER_LEN + transform.iv_size + transform.icv_size
    check = replay.check
    update = replay.update
    infer_esn = replay.infer_esn
    tunnel = sa.tunnel
    match = sa.inner_match
    paddings = _PADDINGS
    open_transform = transform.open
    unpack_seq_iv = _unpack_seq_iv
    # Cells, not module globals, for the per-packet constants (a cell load is cheaper).
    header_len, trailer_len = _HEADER_LEN, TRAILER_FIXED_LEN
    ipv4, no_next_header = _IPV4, _NO_NEXT_HEADER

    # Direct path buffer: SPI | Seq (low, or high || low with ESN) | salt | IV
    salt = direct.salt if direct is not None else b""
    open_ = direct.decrypt if direct is not None else None
    salt_len = len(salt)
    seq_len = 8 if esn else 4
    pack = struct.Struct(f"!I{'Q' if esn else 'I'}{salt_len}sQ").pack_into
    buf = bytearray(4 + seq_len + salt_len + AEAD_IV_LEN)
    view = memoryview(buf)
    aad = view[: 4 + seq_len]
    nonce = view[4 + seq_len :]

    def decrypt_view(
        packet: Buffer, out: bytearray | memoryview | None = None, offset: int = 0
    ) -> memoryview:
        mv = packet if type(packet) is memoryview else memoryview(packet)
        plaintext_len = len(mv) - overhead
        if plaintext_len < sa.min_plaintext:
            _drop_short(sa)
        if check_blocks and plaintext_len % align:
            sa.malformed += 1
            raise EspDrop(DropReason.MALFORMED, "ciphertext not a multiple of the block size")
        seq, iv = unpack_seq_iv(mv, 4)
        if esn:
            seq = infer_esn(seq)
            if seq < 0:
                sa.replays += 1
                raise EspDrop(DropReason.REPLAY, "no consistent ESN high half")
        if seq <= replay.highest and not check(seq):
            sa.replays += 1
            raise EspDrop(DropReason.REPLAY, f"sequence number {seq}")
        plaintext: bytes | memoryview
        if open_ is not None:
            # The SPI was looked up by the caller (SAD): it is ours, so pack it from
            # memory (a packet with another SPI fails the ICV, which covers the SPI).
            pack(buf, 0, spi, seq, salt, iv)
            try:
                plaintext = open_(nonce, mv[header_len:], aad)
            except InvalidTag:
                sa.icv_failures += 1
                raise EspDrop(DropReason.ICV_FAILURE, "MAC mismatch") from None
        else:
            if out is None:
                target = memoryview(bytearray(plaintext_len))
            else:
                target = (out if type(out) is memoryview else memoryview(out))[
                    offset : offset + plaintext_len
                ]
            if open_transform(mv, seq, esn, target) < 0:
                sa.icv_failures += 1
                raise EspDrop(DropReason.ICV_FAILURE, "MAC mismatch")
            plaintext = target
        # RFC 4303 sec. 3.4.3: the window moves only now that the ICV verified.
        update(seq)

        pad_len = plaintext[-2]
        next_header = plaintext[-1]
        data_len = plaintext_len - trailer_len - pad_len
        if data_len < 0:
            sa.malformed += 1
            raise EspDrop(DropReason.MALFORMED, "pad length beyond the payload")
        if pad_len and plaintext[data_len : data_len + pad_len] != paddings[pad_len]:
            sa.malformed += 1
            raise EspDrop(DropReason.MALFORMED, "padding bytes are not 1, 2, 3, ...")
        if next_header == no_next_header:
            sa.dummy += 1
            raise EspDrop(DropReason.DUMMY)
        if tunnel:
            if next_header == ipv4 and data_len >= 20 and plaintext[0] >> 4 == 4:
                total = (plaintext[2] << 8) | plaintext[3]  # drops TFC padding (sec. 2.7)
                if total < 20 or total > data_len:
                    _bad_inner(sa, next_header)
                data_len = total
            else:
                data_len = _ipv6_inner_length(sa, plaintext, data_len, next_header)
            if match is not None and not match(plaintext, data_len):
                sa.policy_drops += 1
                raise EspDrop(DropReason.POLICY, "inner packet outside the SA's selectors")
        sa.last_next_header = next_header
        sa.packets_in = count = sa.packets_in + 1
        sa.bytes_in = received = sa.bytes_in + data_len
        if count >= sa.packets_check or received >= sa.bytes_check:
            sa.limit_reached()
        return memoryview(plaintext)[:data_len]

    if open_ is not None:

        def decrypt_into(packet: Buffer, out: bytearray | memoryview, offset: int = 0) -> int:
            # Direct: the plaintext is the AEAD's own buffer, copied into the caller's.
            inner = decrypt_view(packet)
            length = len(inner)
            out[offset : offset + length] = inner
            return length

    else:

        def decrypt_into(packet: Buffer, out: bytearray | memoryview, offset: int = 0) -> int:
            # Transform: Transform.open decrypted straight into the caller's buffer.
            return len(decrypt_view(packet, out, offset))

    return decrypt_into, decrypt_view
