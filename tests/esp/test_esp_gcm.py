"""AES-GCM-16 tunnel-mode ESP: round trips, replay window, ICV failure, UDP framing."""

from __future__ import annotations

import os

import pytest

from esp import udp_encap
from esp.errors import DropReason, EspDrop
from esp.sa import EspSa
from ikev2.enums import EncrId
from tests.esp.helpers import ipv4_packet, ipv6_packet

GCM = EncrId.ENCR_AES_GCM_16


def pair(key_bytes: int = 20, **kw):
    key = os.urandom(key_bytes)
    return EspSa(0x1234, "out", GCM, key, **kw), EspSa(0x1234, "in", GCM, key, **kw)


@pytest.mark.parametrize("key_bytes", [20, 36])
@pytest.mark.parametrize("make", [ipv4_packet, ipv6_packet])
def test_round_trip(key_bytes: int, make) -> None:
    out_sa, in_sa = pair(key_bytes)
    for size in (64, 100, 1400):
        inner = make(size)
        esp = out_sa.encrypt(inner)
        assert esp[:4] == (0x1234).to_bytes(4, "big")
        assert len(esp) == out_sa.encrypted_size(len(inner))
        assert (len(esp) - 8 - 8 - 16) % 4 == 0  # RFC 4303 sec. 2.4 alignment
        assert in_sa.decrypt(esp) == inner
        assert in_sa.last_next_header == (4 if make is ipv4_packet else 41)
    assert in_sa.packets_in == 3 and out_sa.packets_out == 3


def test_iv_is_the_sequence_number_and_never_repeats() -> None:
    out_sa, _ = pair()
    ivs = set()
    for expected_seq in range(1, 50):
        esp = out_sa.encrypt(ipv4_packet())
        assert int.from_bytes(esp[4:8], "big") == expected_seq
        assert int.from_bytes(esp[8:16], "big") == expected_seq  # RFC 4106 sec. 3.1
        ivs.add(esp[8:16])
    assert len(ivs) == 49


def test_encrypt_into_offset_reserves_headers() -> None:
    out_sa, in_sa = pair()
    inner = ipv4_packet(200)
    buf = bytearray(2048)
    n = out_sa.encrypt_into(inner, buf, 28)  # room for IPv4 + UDP
    assert buf[:28] == bytes(28)
    out = bytearray(2048)
    m = in_sa.decrypt_into(memoryview(buf)[28 : 28 + n], out, 10)
    assert bytes(out[10 : 10 + m]) == inner


def test_replay_and_reordering() -> None:
    out_sa, in_sa = pair(replay_window=64)
    packets = [out_sa.encrypt(ipv4_packet()) for _ in range(200)]
    in_sa.decrypt(packets[100])
    in_sa.decrypt(packets[90])  # late but inside the window
    for seq_index in (100, 90):
        with pytest.raises(EspDrop) as err:
            in_sa.decrypt(packets[seq_index])
        assert err.value.reason is DropReason.REPLAY
    with pytest.raises(EspDrop):
        in_sa.decrypt(packets[10])  # left of the window
    in_sa.decrypt(packets[199])
    assert in_sa.replays == 3


def test_bad_icv_does_not_move_the_window() -> None:
    out_sa, in_sa = pair()
    first = out_sa.encrypt(ipv4_packet())
    second = out_sa.encrypt(ipv4_packet())
    forged = bytearray(second)
    forged[-1] ^= 1
    with pytest.raises(EspDrop) as err:
        in_sa.decrypt(forged)
    assert err.value.reason is DropReason.ICV_FAILURE
    assert in_sa.replay.highest == 0
    # A forged packet far ahead must not push the genuine ones out of the window either.
    far = bytearray(second)
    far[4:8] = (10**6).to_bytes(4, "big")
    with pytest.raises(EspDrop):
        in_sa.decrypt(far)
    assert in_sa.decrypt(first) and in_sa.decrypt(second)
    assert in_sa.icv_failures == 2


def test_udp_encapsulation_is_framing_only() -> None:
    out_sa, in_sa = pair()
    inner = ipv6_packet()
    esp = out_sa.encrypt(inner)
    datagram = udp_encap.wrap(esp, 4500, 4500)
    assert datagram[8:] == esp and int.from_bytes(datagram[4:6], "big") == len(esp) + 8
    assert datagram[6:8] == b"\x00\x00"
    assert in_sa.decrypt(udp_encap.unwrap(datagram)) == inner
    with pytest.raises(ValueError):
        udp_encap.unwrap(datagram[:6])
    buf = bytearray(1500)
    n = out_sa.encrypt_into(inner, buf, 8)
    udp_encap.write_udp_header_into(buf, 0, 4500, 4501, n)
    assert in_sa.decrypt(udp_encap.unwrap(buf[: 8 + n])) == inner
