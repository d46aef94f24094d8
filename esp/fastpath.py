"""Specialised per-packet paths for the counter-mode AEADs (AES-GCM-16, AES-CCM,
ChaCha20-Poly1305), built once per SA as closures.

Why closures: on CPython every attribute load, memoryview slice and temporary object costs
roughly 30-100 ns, the same order as the per-call overhead of the AEAD itself, so the hot
path keeps its constants in cell variables and writes SPI || Seq || IV, the AAD and the
nonce with a single ``struct.pack_into`` into one small per-SA buffer whose memoryview
slices are created once, here, not per packet:

    outbound buffer:  SPI | Seq low | IV (= 64-bit Seq) | salt | IV      (non-ESN)
                      header = [0:16], AAD = [0:8], nonce = [16:]
    with ESN:         SPI | Seq low | IV | salt | IV | SPI | Seq high | Seq low
                      AAD = the last 12 octets (RFC 4106 sec. 5 / RFC 4303 sec. 2.2.1)

The slow paths (limits, drops, TFC padding, selectors) stay methods of ``EspSa``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag

from esp.errors import DropReason, EspDrop

if TYPE_CHECKING:
    from esp.sa import EspSa

_PAD = bytes(range(1, 256))
# Padding || Pad Length || Next Header for tunnel mode, by padding length (0..3).
_TRAILERS_V4 = tuple(_PAD[:pad] + bytes((pad, 4)) for pad in range(4))
_TRAILERS_V6 = tuple(_PAD[:pad] + bytes((pad, 41)) for pad in range(4))
_PADDING = tuple(_PAD[:pad] for pad in range(256))
# The tunnel-mode trailer by (first octet of the inner packet & 0xF0) | padding length:
# IPv4 (0x4_) -> next header 4, IPv6 (0x6_) -> 41, anything else None (not an IP packet).
_TUNNEL_TRAILERS = tuple(
    _TRAILERS_V4[i & 3] if i >> 4 == 4 else _TRAILERS_V6[i & 3] if i >> 4 == 6 else None
    for i in range(256)
)


def make_aead_encrypt(sa: EspSa) -> tuple[Callable[..., int], Callable[..., tuple]]:
    """``EspSa.encrypt_into`` and ``EspSa.encrypt_parts`` for an AEAD transform, no TFC."""
    transform = sa._transform
    seal = transform._aead.encrypt  # type: ignore[attr-defined]
    salt = bytes(transform._nonce[: transform._salt_len])  # type: ignore[attr-defined]
    spi = sa.spi
    esn = sa.esn
    salt_len = len(salt)
    buf = bytearray(16 + salt_len + 8 + 12)
    view = memoryview(buf)
    header = view[0:16]
    nonce = view[16 : 24 + salt_len]
    if esn:
        aad = view[24 + salt_len :]
        pack = struct.Struct(f"!IIQ{salt_len}sQIQ").pack_into
    else:
        aad = view[0:8]
        pack = struct.Struct(f"!IIQ{salt_len}sQ").pack_into
    tunnel_trailers = _TUNNEL_TRAILERS
    join = b"".join

    def encrypt_into(
        inner: bytes | bytearray | memoryview, out: bytearray | memoryview,
        offset: int = 0, next_header: int = 0,
    ) -> int:  # fmt: skip
        seq = sa.seq + 1
        if seq >= sa._seq_check:
            sa._outbound_limit(seq)
        inner_len = len(inner)
        # RFC 4303 sec. 2.4: pad to 4-octet alignment; tunnel mode takes the next header
        # from the version nibble: one table lookup gives the whole trailer.
        if next_header or not inner_len:
            trailer = sa._trailer((2 - inner_len) & 3, next_header, inner)
        else:
            trailer = tunnel_trailers[(inner[0] & 0xF0) | ((2 - inner_len) & 3)]
            if trailer is None:
                trailer = sa._trailer((2 - inner_len) & 3, next_header, inner)
        if esn:
            pack(buf, 0, spi, seq & 0xFFFFFFFF, seq, salt, seq, spi, seq)
        else:  # seq < 2**32 here: the hard limit stops the SA before
            pack(buf, 0, spi, seq, seq, salt, seq)
        sealed = seal(
            nonce, inner + trailer if type(inner) is bytes else join((inner, trailer)), aad
        )
        out[offset : offset + 16] = header
        end = offset + 16 + len(sealed)
        out[offset + 16 : end] = sealed
        sa.seq = seq
        sa.bytes_out = sent = sa.bytes_out + inner_len
        if sent >= sa._bytes_check:
            sa._limit_reached()
        return end - offset

    def encrypt_parts(
        inner: bytes | bytearray | memoryview, next_header: int = 0
    ) -> tuple[memoryview, bytes]:
        seq = sa.seq + 1
        if seq >= sa._seq_check:
            sa._outbound_limit(seq)
        inner_len = len(inner)
        if next_header or not inner_len:
            trailer = sa._trailer((2 - inner_len) & 3, next_header, inner)
        else:
            trailer = tunnel_trailers[(inner[0] & 0xF0) | ((2 - inner_len) & 3)]
            if trailer is None:
                trailer = sa._trailer((2 - inner_len) & 3, next_header, inner)
        if esn:
            pack(buf, 0, spi, seq & 0xFFFFFFFF, seq, salt, seq, spi, seq)
        else:  # seq < 2**32 here: the hard limit stops the SA before
            pack(buf, 0, spi, seq, seq, salt, seq)
        sealed = seal(
            nonce, inner + trailer if type(inner) is bytes else join((inner, trailer)), aad
        )
        sa.seq = seq
        sa.bytes_out = sent = sa.bytes_out + inner_len
        if sent >= sa._bytes_check:
            sa._limit_reached()
        return header, sealed

    return encrypt_into, encrypt_parts


def make_aead_decrypt(sa: EspSa) -> tuple[Callable[..., int], Callable[..., memoryview]]:
    """``EspSa.decrypt_into`` and ``EspSa.decrypt_view`` for an AEAD transform.

    Order (RFC 4303 sec. 3.4): length, sequence number (ESN inference), replay check, ICV
    verification + decryption, then the replay update, then the trailer checks.
    ``decrypt_view`` lets ``AEAD.decrypt`` allocate the plaintext and returns a view of it
    (one object fewer than a slice of the caller's buffer, and bytes index faster than
    memoryviews); ``decrypt_into`` copies that view into the caller's buffer.
    """
    transform = sa._transform
    open_ = transform._aead.decrypt  # type: ignore[attr-defined]
    salt = bytes(transform._nonce[: transform._salt_len])  # type: ignore[attr-defined]
    spi = sa.spi
    esn = sa.esn
    salt_len = len(salt)
    overhead = sa._overhead
    replay = sa.replay
    assert replay is not None
    bitmap = replay._bitmap
    zeros = replay._zeros
    blocks_mask = replay._blocks_mask
    bits_mask = replay._bits_mask
    check = replay.check
    infer_esn = replay.infer_esn
    tunnel = sa._tunnel
    padding = _PADDING
    # buffer: SPI | Seq (low, or high || low with ESN) | salt | IV
    seq_format = "Q" if esn else "I"
    pack = struct.Struct(f"!I{seq_format}{salt_len}sQ").pack_into
    unpack_seq_iv = struct.Struct("!IQ").unpack_from
    seq_len = 8 if esn else 4
    buf = bytearray(4 + seq_len + salt_len + 8)
    view = memoryview(buf)
    aad = view[: 4 + seq_len]
    nonce = view[4 + seq_len :]

    def decrypt_view(packet: bytes | bytearray | memoryview) -> memoryview:
        mv = packet if type(packet) is memoryview else memoryview(packet)
        plaintext_len = len(mv) - overhead
        if plaintext_len < sa._min_plaintext:
            sa._drop_early()
        seq, iv = unpack_seq_iv(mv, 4)
        if esn:
            seq = infer_esn(seq)
            if seq < 0:
                sa.replays += 1
                raise EspDrop(DropReason.REPLAY, "no consistent ESN high half")
        highest = replay.highest
        if seq <= highest and not check(seq):
            sa.replays += 1
            raise EspDrop(DropReason.REPLAY, f"sequence number {seq}")
        # The SPI was looked up by the caller (SAD): it is ours, so pack it from memory
        # (a packet with another SPI fails the ICV, which covers the SPI).
        pack(buf, 0, spi, seq, salt, iv)
        try:
            plaintext = open_(nonce, mv[16:], aad)
        except InvalidTag:
            sa.icv_failures += 1
            raise EspDrop(DropReason.ICV_FAILURE, "MAC mismatch") from None
        # RFC 4303 sec. 3.4.3: the window moves only now that the ICV verified.
        if seq > highest:
            new_block = seq >> 3
            if new_block != highest >> 3:
                old_block = highest >> 3
                if new_block - old_block > blocks_mask:
                    bitmap[:] = zeros
                else:
                    for block in range(old_block + 1, new_block + 1):
                        bitmap[block & blocks_mask] = 0
            replay.highest = seq
        bit = seq & bits_mask
        bitmap[bit >> 3] |= 1 << (bit & 7)

        pad_len = plaintext[-2]
        next_header = plaintext[-1]
        data_len = plaintext_len - 2 - pad_len
        if data_len < 0:
            sa.malformed += 1
            raise EspDrop(DropReason.MALFORMED, "pad length beyond the payload")
        if pad_len and plaintext[data_len : data_len + pad_len] != padding[pad_len]:
            sa.malformed += 1
            raise EspDrop(DropReason.MALFORMED, "padding bytes are not 1, 2, 3, ...")
        if next_header == 59:
            sa.dummy += 1
            raise EspDrop(DropReason.DUMMY)
        if tunnel:
            if next_header == 4 and data_len >= 20 and plaintext[0] >> 4 == 4:
                total = (plaintext[2] << 8) | plaintext[3]  # drops TFC padding (sec. 2.7)
                if total < 20 or total > data_len:
                    sa._bad_inner(next_header)
                data_len = total
            else:
                data_len = sa._inner_length(memoryview(plaintext), data_len, next_header)
            match = sa._match
            if match is not None and not match(plaintext, data_len):
                sa.policy_drops += 1
                raise EspDrop(DropReason.POLICY, "inner packet outside the SA's selectors")
        sa.last_next_header = next_header
        sa.packets_in = count = sa.packets_in + 1
        sa.bytes_in = received = sa.bytes_in + data_len
        if count >= sa._packets_check or received >= sa._bytes_check:
            sa._limit_reached()
        return memoryview(plaintext)[:data_len]

    def decrypt_into(
        packet: bytes | bytearray | memoryview, out: bytearray | memoryview, offset: int = 0
    ) -> int:
        inner = decrypt_view(packet)
        length = len(inner)
        out[offset : offset + length] = inner
        return length

    return decrypt_into, decrypt_view
