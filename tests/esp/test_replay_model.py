"""The RFC 6479 ring window and the ESN inference against plain reference models."""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st

from esp.errors import EspDrop
from esp.replay import ReplayWindow
from esp.sa import EspSa
from ikev2.enums import EncrId, IntegId
from tests.esp.helpers import ipv4_packet


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
