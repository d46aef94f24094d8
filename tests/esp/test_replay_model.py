"""The RFC 6479 ring window and the ESN inference against plain reference models."""

from __future__ import annotations

import hashlib
import hmac
import os
import struct

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from esp.errors import DropReason, EspDrop
from esp.replay import ReplayWindow
from esp.sa import EspSa
from ikev2.enums import EncrId, IntegId
from tests.esp.helpers import ipv4_packet, ipv6_packet


class ModelWindow:
    """RFC 4303 sec. 3.4.3 stated directly: a set of everything seen."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.highest = 0
        self.seen: set[int] = set()

    def accept(self, seq: int) -> bool:
        if seq <= 0 or seq in self.seen or self.highest - seq >= self.size:
            return False
        self.seen.add(seq)
        self.highest = max(self.highest, seq)
        return True


@settings(max_examples=300, deadline=None)
@given(
    size=st.sampled_from([1, 7, 32, 64, 100, 1024, 4096]),
    steps=st.lists(st.integers(min_value=-50, max_value=5000), min_size=1, max_size=300),
)
def test_ring_window_matches_the_model(size: int, steps: list[int]) -> None:
    window = ReplayWindow(size)
    model = ModelWindow(size)
    position = 1
    for step in steps:
        # Mostly forward, sometimes back, sometimes a big jump.
        position = max(0, position + step)
        expected = model.accept(position)
        assert window.check(position) == expected, (position, window.highest)
        if expected:
            window.update(position)
        assert window.highest == model.highest


@settings(max_examples=40, deadline=None)
@given(order=st.permutations(list(range(1, 80))), drops=st.sets(st.integers(1, 79)))
def test_sa_fast_path_window_matches_the_model(order: list[int], drops: set[int]) -> None:
    """The inlined window update of the AEAD fast path and the generic one agree with the
    model, with reordering and forged packets mixed in."""
    key = os.urandom(20)
    sender = EspSa(0x5555, "out", EncrId.ENCR_AES_GCM_16, key)
    packets = [sender.encrypt(ipv4_packet()) for _ in range(79)]
    cbc_keys = (os.urandom(16), os.urandom(32))
    cbc_sender = EspSa(0x5556, "out", EncrId.ENCR_AES_CBC, cbc_keys[0],
                       IntegId.AUTH_HMAC_SHA2_256_128, cbc_keys[1])  # fmt: skip
    cbc_packets = [cbc_sender.encrypt(ipv4_packet()) for _ in range(79)]
    receivers = [
        (EspSa(0x5555, "in", EncrId.ENCR_AES_GCM_16, key, replay_window=16), packets),
        (EspSa(0x5556, "in", EncrId.ENCR_AES_CBC, cbc_keys[0], IntegId.AUTH_HMAC_SHA2_256_128,
               cbc_keys[1], replay_window=16), cbc_packets),
    ]  # fmt: skip
    for receiver, stream in receivers:
        model = ModelWindow(16)
        for seq in order + order[:10]:  # then some duplicates
            packet = stream[seq - 1]
            if seq in drops:  # a forged copy first: must not change anything
                forged = bytearray(packet)
                forged[-1] ^= 1
                try:
                    receiver.decrypt(bytes(forged))
                except EspDrop:
                    pass
                else:
                    raise AssertionError("forged packet accepted")
            expected = model.accept(seq)
            try:
                receiver.decrypt(packet)
                accepted = True
            except EspDrop:
                accepted = False
            assert accepted == expected, seq
        assert receiver.replay.highest == model.highest


def model_esn(highest: int, window: int, seq_low: int) -> int:
    """RFC 4303 App. A: the candidate full number closest to the window (the one among
    high-1, high, high+1 inside or right of the window), -1 if none is valid."""
    top_high = highest >> 32
    bottom = highest - window + 1
    for high in (top_high - 1, top_high, top_high + 1):
        if not 0 <= high <= 0xFFFFFFFF:
            continue
        candidate = (high << 32) | seq_low
        if bottom <= candidate < bottom + (1 << 32):
            return candidate
    return -1


@settings(max_examples=500, deadline=None)
@given(
    high=st.integers(0, 0xFFFFFFFF),
    low=st.integers(0, 0xFFFFFFFF),
    window=st.sampled_from([1, 32, 1024, 4096]),
    seq_low=st.integers(0, 0xFFFFFFFF),
    near=st.integers(-5000, 5000),
)
def test_esn_inference_matches_the_model(
    high: int, low: int, window: int, seq_low: int, near: int
) -> None:
    replay = ReplayWindow(window)
    replay.highest = max(1, (high << 32) | low)
    for candidate_low in (seq_low, (low + near) & 0xFFFFFFFF):
        assert replay.infer_esn(candidate_low) == model_esn(
            replay.highest, window, candidate_low
        ), (hex(replay.highest), hex(candidate_low))


# ---------------------------------------------------------------- trailer checks


def model_trailer(plaintext: bytes, tunnel: bool) -> tuple[DropReason | None, bytes]:
    """RFC 4303 sec. 2.4-2.7 and 3.4.4 stated directly, on the decrypted payload:
    (None, the inner packet) or (the drop reason, b"")."""
    pad_len, next_header = plaintext[-2], plaintext[-1]
    if pad_len > len(plaintext) - 2:
        return DropReason.MALFORMED, b""
    data = plaintext[: len(plaintext) - 2 - pad_len]
    if plaintext[len(data) : len(plaintext) - 2] != bytes(range(1, pad_len + 1)):
        return DropReason.MALFORMED, b""  # sec. 2.4: padding is 1, 2, 3, ...
    if next_header == 59:
        return DropReason.DUMMY, b""  # sec. 2.6: "no next header", dropped silently
    if not tunnel:
        return None, data
    # Tunnel mode: the inner IP header says where the packet ends (sec. 2.7: TFC padding).
    total = -1
    if next_header == 4 and len(data) >= 20 and data[0] >> 4 == 4:
        total = int.from_bytes(data[2:4], "big")
        total = total if total >= 20 else -1
    elif next_header == 41 and len(data) >= 40 and data[0] >> 4 == 6:
        total = 40 + int.from_bytes(data[4:6], "big")
    if 0 <= total <= len(data):
        return None, data[:total]
    return DropReason.MALFORMED, b""


@st.composite
def payloads(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """Decrypted ESP payloads, mostly almost right, as (inner packet || TFC padding,
    padding || pad length || next header): an inner packet whose length field may lie,
    a padding that may be wrong, a pad length that may lie, any next header."""
    kind = draw(st.sampled_from(["ipv4", "ipv6", "random"]))
    if kind == "ipv4":
        inner = bytearray(ipv4_packet(draw(st.integers(28, 200))))
    elif kind == "ipv6":
        inner = bytearray(ipv6_packet(draw(st.integers(48, 200))))
    else:
        inner = bytearray(draw(st.binary(max_size=60)))
    tfc = bytes(draw(st.integers(0, 40)))
    if kind != "random" and draw(st.booleans()):  # a length field that lies, often by 1
        field = slice(2, 4) if kind == "ipv4" else slice(4, 6)
        told = int.from_bytes(inner[field], "big") + len(tfc) + draw(st.integers(-2, 2))
        told = draw(st.sampled_from([told, draw(st.integers(0, 400))]))
        inner[field] = max(0, told).to_bytes(2, "big")
    pad_len = draw(st.integers(0, 24))
    padding = bytearray(range(1, pad_len + 1))
    if pad_len and draw(st.integers(0, 3)) == 0:
        padding[draw(st.integers(0, pad_len - 1))] ^= draw(st.integers(1, 255))
    claimed = pad_len if draw(st.integers(0, 5)) else draw(st.integers(0, 255))
    natural = {"ipv4": 4, "ipv6": 41, "random": 17}[kind]
    next_header = draw(st.sampled_from([natural] * 4 + [4, 41, 59, 6, 0, 255]))
    return bytes(inner) + tfc, bytes(padding) + bytes((claimed, next_header))


def _forge_gcm(key: bytes, spi: int, seq: int, plaintext: bytes) -> bytes:
    header = struct.pack("!II", spi, seq)
    iv = seq.to_bytes(8, "big")
    return header + iv + AESGCM(key[:-4]).encrypt(key[-4:] + iv, plaintext, header)


def _forge_cbc(keys: tuple[bytes, bytes], spi: int, seq: int, plaintext: bytes) -> bytes:
    header = struct.pack("!II", spi, seq)
    iv = os.urandom(16)
    encryptor = Cipher(algorithms.AES(keys[0]), modes.CBC(iv)).encryptor()
    body = header + iv + encryptor.update(plaintext) + encryptor.finalize()
    return body + hmac.new(keys[1], body, hashlib.sha256).digest()[:16]


@settings(max_examples=150, deadline=None)
@given(stream=st.lists(payloads(), min_size=1, max_size=12), tunnel=st.booleans())
def test_trailer_checks_match_the_model(stream: list[tuple[bytes, bytes]], tunnel: bool) -> None:
    """Every authenticated payload is judged as the model says, on the direct AEAD path
    and on the transform (CBC + HMAC) path alike, and the replay window moved for each of
    them, dropped or not (RFC 4303 sec. 3.4.3: the update follows the ICV check; the
    trailer checks come after it)."""
    mode = "tunnel" if tunnel else "transport"
    gcm_key = os.urandom(20)
    cbc_keys = (os.urandom(16), os.urandom(32))
    gcm = EspSa(0x7001, "in", EncrId.ENCR_AES_GCM_16, gcm_key, mode=mode)
    cbc = EspSa(0x7002, "in", EncrId.ENCR_AES_CBC, cbc_keys[0],
                IntegId.AUTH_HMAC_SHA2_256_128, cbc_keys[1], mode=mode)  # fmt: skip
    for seq, (data, tail) in enumerate(stream, start=1):
        # CBC takes whole blocks: the filler is more TFC padding.
        filler = bytes(-(len(data) + len(tail)) % 16)
        for receiver, payload, packet in (
            (gcm, data + tail, _forge_gcm(gcm_key, 0x7001, seq, data + tail)),
            (cbc, data + filler + tail, _forge_cbc(cbc_keys, 0x7002, seq, data + filler + tail)),
        ):
            expected, inner = model_trailer(payload, tunnel)
            try:
                got, reason = receiver.decrypt(packet), None
            except EspDrop as drop:
                got, reason = b"", drop.reason
            assert (reason, got) == (expected, inner), (receiver, payload.hex())
            if reason is None:
                assert receiver.last_next_header == payload[-1]
            assert receiver.replay is not None and receiver.replay.highest == seq
            with pytest.raises(EspDrop) as again:  # the window moved: a replay now
                receiver.decrypt(packet)
            assert again.value.reason is DropReason.REPLAY
