"""aioipsec.runtime.workers without processes: the sequence-number reservation that keeps
a restarted encrypt worker from reusing an AES-GCM nonce, and the socketpair framing.
(The worker processes themselves: tests/hardening/test_workers.py.)"""

from __future__ import annotations

import os

import pytest

from aioipsec.runtime.workers import (
    SEQUENCE_BLOCK,
    WORKERS_ENV,
    FrameReader,
    SequenceGuard,
    frame,
    worker_count,
)
from esp.errors import EspDrop
from esp.events import Lifetime, SaExpired
from esp.sa import EspSa
from ikev2.enums import EncrId

KEY = bytes(range(36))  # AES-256-GCM key and salt
INNER = bytes.fromhex("4500001c0000400040010000") + bytes([10, 1, 0, 1, 10, 2, 0, 1]) + bytes(8)


def sealed_sequence(packet: bytes) -> int:
    return int.from_bytes(packet[4:8], "big")


def guarded(**extra: object) -> tuple[EspSa, EspSa, list[tuple[int, int]]]:
    out = EspSa(0x1234, "out", EncrId.ENCR_AES_GCM_16, KEY, **extra)  # type: ignore[arg-type]  # the keyword options of EspSa
    inbound = EspSa(0x1234, "in", EncrId.ENCR_AES_GCM_16, KEY)
    reserved: list[tuple[int, int]] = []
    SequenceGuard(out, lambda spi, limit: reserved.append((spi, limit)))
    return out, inbound, reserved


def test_every_sequence_number_is_reserved_before_it_is_sealed() -> None:
    out, inbound, reserved = guarded()
    buffer = bytearray(2048)
    length = out.encrypt_into(INNER, buffer)
    # The first packet reserved a block first; nothing is sealed beyond a reservation.
    assert reserved == [(0x1234, 1 + SEQUENCE_BLOCK)]
    assert sealed_sequence(buffer[:length]) == 1
    assert inbound.decrypt(bytes(buffer[:length])) == INNER
    # Just below the reservation: no new message...
    out.seq = SEQUENCE_BLOCK - 1
    out.encrypt_into(INNER, buffer)
    assert len(reserved) == 1 and out.seq == SEQUENCE_BLOCK
    # ...at it, a new block is reserved before the packet is sealed.
    length = out.encrypt_into(INNER, buffer)
    assert reserved[-1] == (0x1234, 1 + 2 * SEQUENCE_BLOCK)
    assert sealed_sequence(buffer[:length]) == 1 + SEQUENCE_BLOCK


def test_a_restart_starts_past_the_reservation() -> None:
    """What the daemon does for a new worker: the SA starts at the dead one's reservation
    (every number it may have used is below it)."""
    first, inbound, reserved = guarded()
    buffer = bytearray(2048)
    used = [sealed_sequence(buffer[: first.encrypt_into(INNER, buffer)]) for _ in range(5)]
    limit = reserved[-1][1]
    second = EspSa(0x1234, "out", EncrId.ENCR_AES_GCM_16, KEY)
    second.seq = limit - 1
    SequenceGuard(second, lambda spi, new: reserved.append((spi, new)))
    after = sealed_sequence(buffer[: second.encrypt_into(INNER, buffer)])
    assert after == limit and after > max(used)
    assert reserved[-1] == (0x1234, limit + SEQUENCE_BLOCK)
    assert inbound.decrypt(bytes(buffer[: second.encrypt_into(INNER, buffer)])) == INNER


def test_lifetimes_still_work_under_the_guard() -> None:
    out, _inbound, reserved = guarded(lifetime=Lifetime(soft_packets=3, hard_packets=5))
    buffer = bytearray(2048)
    for _ in range(5):
        out.encrypt_into(INNER, buffer)
    with pytest.raises(EspDrop):
        out.encrypt_into(INNER, buffer)
    kinds = [(e.hard, e.reason) for e in out.events if isinstance(e, SaExpired)]
    assert kinds == [(False, "packets"), (True, "packets")]
    # A recomputation of the limits (here after the expiry) never lifts the cap.
    assert out.seq_check <= reserved[-1][1]


def test_frames_survive_any_cut() -> None:
    messages = [("reserve", 7, 1 << 40), ("counters", {1: (2, 3, 0)}, {"held": 1}), ("x",)]
    stream = b"".join(frame(m) for m in messages)
    for cut in range(len(stream)):
        reader = FrameReader()
        got = reader.feed(stream[:cut]) + reader.feed(stream[cut:])
        assert got == messages


def test_worker_count_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(WORKERS_ENV, raising=False)
    assert worker_count(1) == 1 and worker_count(2) == 2
    monkeypatch.setenv(WORKERS_ENV, "2")
    assert worker_count(1) == 2
    monkeypatch.setenv(WORKERS_ENV, "4")
    with pytest.raises(ValueError, match="not built"):
        worker_count(1)
    monkeypatch.setenv(WORKERS_ENV, "two")
    with pytest.raises(ValueError, match="AIOIPSEC_WORKERS"):
        worker_count(1)
    assert os.environ[WORKERS_ENV] == "two"
