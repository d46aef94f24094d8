"""Every ESP class of tests/data/reference/bad-inputs.md: a defined drop with a counter,
never an unhandled exception, never a window update before the ICV verified."""

from __future__ import annotations

import os
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from esp.errors import DropReason, EspDrop
from esp.events import SaExpired
from esp.sa import EspSa
from esp.sad import Sad
from ikev2.enums import EncrId, IntegId
from tests.esp.helpers import ipv4_packet

SPI = 0x4242
SUITES = {
    "gcm16": (EncrId.ENCR_AES_GCM_16, 20, IntegId.NONE, 0),
    "gcm8": (EncrId.ENCR_AES_GCM_8, 20, IntegId.NONE, 0),
    "ccm12": (EncrId.ENCR_AES_CCM_12, 19, IntegId.NONE, 0),
    "chacha": (EncrId.ENCR_CHACHA20_POLY1305, 36, IntegId.NONE, 0),
    "gmac": (EncrId.ENCR_NULL_AUTH_AES_GMAC, 20, IntegId.NONE, 0),
    "cbc-sha256": (EncrId.ENCR_AES_CBC, 16, IntegId.AUTH_HMAC_SHA2_256_128, 32),
    "ctr-sha1": (EncrId.ENCR_AES_CTR, 20, IntegId.AUTH_HMAC_SHA1_96, 20),
    "null-sha512": (EncrId.ENCR_NULL, 0, IntegId.AUTH_HMAC_SHA2_512_256, 64),
}


def pair(suite: str = "gcm16", **kw):
    encr, klen, integ, ilen = SUITES[suite]
    key, ikey = os.urandom(klen), os.urandom(ilen)
    extra = dict(allow_null=encr == EncrId.ENCR_NULL, **kw)
    return (
        EspSa(SPI, "out", encr, key, integ, ikey, **extra),
        EspSa(SPI, "in", encr, key, integ, ikey, **extra),
    )


def seal_raw(sa: EspSa, plaintext: bytes, seq: int) -> bytes:
    """An ESP packet with an arbitrary (correctly authenticated) plaintext, to build
    trailers no honest sender produces."""
    transform = sa._transform
    out = bytearray(8 + transform.iv_size + len(plaintext) + transform.icv_size)
    struct.pack_into("!II", out, 0, sa.spi, seq & 0xFFFFFFFF)
    transform.seal(memoryview(out), 0, memoryview(plaintext), seq, sa.esn)
    return bytes(out)


def drop_reason(sa: EspSa, packet: bytes) -> DropReason:
    with pytest.raises(EspDrop) as err:
        sa.decrypt(packet)
    return err.value.reason


@pytest.mark.parametrize("suite", sorted(SUITES))
def test_too_short_packets(suite: str) -> None:
    out_sa, in_sa = pair(suite)
    good = out_sa.encrypt(ipv4_packet())
    minimum = 8 + in_sa._transform.iv_size + in_sa.icv_size + 2
    for length in range(minimum):
        assert drop_reason(in_sa, good[:length]) is DropReason.MALFORMED
    assert in_sa.malformed == minimum
    assert in_sa.replay.highest == 0
    assert in_sa.decrypt(good)


def test_unknown_spi_counted_and_rate_limited() -> None:
    sad = Sad()
    for i in range(100):
        assert sad.lookup_inbound(0x1000 + i, now=i * 0.01) is None
    assert sad.unknown_spi == 100
    events = []
    while (event := sad.next_event()) is not None:
        events.append(event)
    assert len(events) == 1  # at most one INVALID_SPI trigger per second


@pytest.mark.parametrize("suite", sorted(SUITES))
def test_bad_icv_counted_window_untouched(suite: str) -> None:
    out_sa, in_sa = pair(suite)
    packets = [out_sa.encrypt(ipv4_packet()) for _ in range(3)]
    for position in (-1, 8, len(packets[2]) // 2, 4):  # ICV, IV, body, sequence number
        forged = bytearray(packets[2])
        forged[position] ^= 0x80
        assert drop_reason(in_sa, bytes(forged)) is DropReason.ICV_FAILURE
    assert in_sa.icv_failures == 4
    assert in_sa.replay.highest == 0  # RFC 4303 sec. 3.4.3: no update before the ICV
    for packet in packets:
        assert in_sa.decrypt(packet)


def test_replays_old_and_zero_sequence_numbers() -> None:
    out_sa, in_sa = pair(replay_window=32)
    packets = [out_sa.encrypt(ipv4_packet()) for _ in range(100)]
    in_sa.decrypt(packets[99])
    assert drop_reason(in_sa, packets[99]) is DropReason.REPLAY  # duplicate
    assert drop_reason(in_sa, packets[10]) is DropReason.REPLAY  # very old
    assert in_sa.decrypt(packets[80])  # late but inside the 32-packet window
    assert drop_reason(in_sa, packets[80]) is DropReason.REPLAY
    zero = seal_raw(out_sa, ipv4_packet() + b"\x01\x02\x02\x04", 0)
    assert drop_reason(in_sa, zero) is DropReason.REPLAY  # sequence number 0 never valid
    assert in_sa.replays == 4


@pytest.mark.parametrize("window", [1, 64, 1024, 4096])
def test_window_sizes(window: int) -> None:
    out_sa, in_sa = pair(replay_window=window)
    packets = [out_sa.encrypt(ipv4_packet()) for _ in range(window + 20)]
    in_sa.decrypt(packets[-1])
    highest = window + 20
    for index in range(len(packets) - 1):
        seq = index + 1
        if highest - seq < window:
            assert in_sa.decrypt(packets[index])
        else:
            assert drop_reason(in_sa, packets[index]) is DropReason.REPLAY


def test_esn_wrap_around() -> None:
    out_sa, in_sa = pair(esn=True, replay_window=64)
    out_sa.seq = 0xFFFFFFFF - 3
    packets = [out_sa.encrypt(ipv4_packet()) for _ in range(8)]  # crosses 2**32
    assert [int.from_bytes(p[4:8], "big") for p in packets] == [
        0xFFFFFFFD, 0xFFFFFFFE, 0xFFFFFFFF, 0, 1, 2, 3, 4,
    ]  # fmt: skip
    in_sa.replay.highest = 0xFFFFFFFF - 10
    for index in (0, 4, 2, 7, 1):  # out of order across the wrap
        assert in_sa.decrypt(packets[index])
    assert in_sa.replay.highest == (1 << 32) + 4
    assert drop_reason(in_sa, packets[4]) is DropReason.REPLAY
    assert drop_reason(in_sa, packets[2]) is DropReason.REPLAY


@pytest.mark.parametrize("suite", ["gcm16", "cbc-sha256", "chacha"])
def test_padding_checks(suite: str) -> None:
    out_sa, in_sa = pair(suite, mode="transport")
    align = max(4, in_sa._transform.block_size)
    body = b"A" * (align * 2 - 2 - 6)  # room for 6 padding octets

    def trailer(padding: bytes, next_header: int = 17) -> bytes:
        return body + padding + bytes((len(padding), next_header))

    assert in_sa.decrypt(seal_raw(out_sa, trailer(bytes(range(1, 7))), 1)) == body
    bad_pad = seal_raw(out_sa, trailer(b"\x01\x02\x03\x00\x05\x06"), 2)
    assert drop_reason(in_sa, bad_pad) is DropReason.MALFORMED
    too_long = seal_raw(out_sa, body[: align - 2] + bytes((200, 17)), 3)
    assert drop_reason(in_sa, too_long) is DropReason.MALFORMED
    dummy = seal_raw(out_sa, trailer(bytes(range(1, 7)), next_header=59), 4)
    with pytest.raises(EspDrop) as err:
        in_sa.decrypt(dummy)
    assert err.value.reason is DropReason.DUMMY and err.value.silent
    assert in_sa.malformed == 2 and in_sa.dummy == 1 and in_sa.packets_in == 1


def test_dummy_packets_from_the_api_are_dropped_silently() -> None:
    out_sa, in_sa = pair(tfc_pad_to=0)
    with pytest.raises(EspDrop) as err:
        in_sa.decrypt(out_sa.encrypt_dummy(100))
    assert err.value.silent and in_sa.dummy == 1


def test_tunnel_inner_packet_lies_about_its_length() -> None:
    out_sa, in_sa = pair()
    inner = bytearray(ipv4_packet(100))
    inner[2:4] = (500).to_bytes(2, "big")  # total length beyond the payload
    assert drop_reason(in_sa, out_sa.encrypt(bytes(inner))) is DropReason.MALFORMED
    assert drop_reason(in_sa, out_sa.encrypt(b"\x45" * 10)) is DropReason.MALFORMED


def test_outbound_counter_never_wraps() -> None:
    sad = Sad()
    out_sa, _ = pair()
    sad.add(out_sa)
    out_sa.seq = out_sa.seq_soft_limit - 2  # the soft limit is 2**32 - 1 - 2**24
    out_sa.encrypt(ipv4_packet())
    assert sad.next_event() is None
    out_sa.encrypt(ipv4_packet())
    assert sad.next_event() == SaExpired("esp", SPI, "out", 0, hard=False, reason="sequence")
    out_sa.seq = 0xFFFFFFFF - 1
    last = out_sa.encrypt(ipv4_packet())
    assert last[4:8] == b"\xff\xff\xff\xff"
    for _ in range(3):
        with pytest.raises(EspDrop) as err:
            out_sa.encrypt(ipv4_packet())
        assert err.value.reason is DropReason.EXPIRED
    assert out_sa.seq == 0xFFFFFFFF  # nothing reused, nothing sent
    assert sad.next_event() == SaExpired("esp", SPI, "out", 0, hard=True, reason="sequence")


@pytest.mark.parametrize("suite", ["gcm16", "cbc-sha256", "gmac", "ccm12"])
@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=200))
def test_random_bytes_only_ever_drop(suite: str, data: bytes) -> None:
    _, in_sa = pair(suite)
    packet = SPI.to_bytes(4, "big") + data
    with pytest.raises(EspDrop):
        in_sa.decrypt(packet)
    assert in_sa.replay.highest == 0


@settings(max_examples=300, deadline=None)
@given(
    family=st.sampled_from([4, 6]),
    next_header=st.sampled_from([51, 0, 60, 43, 44]),
    body=st.binary(max_size=120),
    ihl_words=st.integers(0, 15),
)
def test_random_whole_packets_only_ever_drop(
    family: int, next_header: int, body: bytes, ihl_words: int
) -> None:
    """AH and transport/tunnel ESP on whole IP packets: garbage after a plausible IP header
    (bad IHL, extension header chains, truncated AH) is a counted drop, nothing else."""
    from esp.ah import AhSa

    if family == 4:
        header = bytearray(20)
        header[0] = 0x40 | ihl_words
        header[9] = 51 if next_header == 51 else 50
    else:
        header = bytearray(40)
        header[0] = 0x60
        header[6] = next_header
    packet = bytes(header) + body
    key = bytes(32)
    for sa in (
        AhSa(SPI, "in", IntegId.AUTH_HMAC_SHA2_256_128, key, mode="transport"),
        AhSa(SPI, "in", IntegId.AUTH_HMAC_SHA2_256_128, key, mode="tunnel"),
    ):
        with pytest.raises(EspDrop):
            sa.unprotect(packet)
    _, in_sa = pair(mode="transport")
    with pytest.raises(EspDrop):
        in_sa.unprotect_transport(packet)
    _, in_sa = pair()
    with pytest.raises(EspDrop):
        in_sa.decapsulate(packet)


@settings(max_examples=300, deadline=None)
@given(options=st.binary(min_size=6, max_size=6 + 8 * 3), ipv4_options=st.binary(max_size=40))
def test_garbage_options_before_a_valid_ah_header(options: bytes, ipv4_options: bytes) -> None:
    """The mutable-field zeroing walks IPv4 options and IPv6 hop-by-hop options of packets
    that reach the ICV check (right SPI): malformed options are drops, never crashes."""
    from esp.ah import AhSa

    sa6 = AhSa(SPI, "in", IntegId.AUTH_HMAC_SHA2_256_128, bytes(32), mode="transport")
    length = len(options) + 2
    options += bytes(-length % 8)
    hop_by_hop = bytes((51, (len(options) + 2) // 8 - 1)) + options
    ah = struct.pack("!BBHII", 17, 6, 0, SPI, 1) + bytes(16)  # 12 + 16 octets = 7 words
    header = bytearray(40)
    header[0] = 0x60
    header[6] = 0  # hop-by-hop first
    packet = bytearray(header + hop_by_hop + ah + b"udp")
    struct.pack_into("!H", packet, 4, len(packet) - 40)
    with pytest.raises(EspDrop) as err:
        sa6.unprotect(bytes(packet))
    assert err.value.reason in (DropReason.ICV_FAILURE, DropReason.MALFORMED)

    sa4 = AhSa(SPI, "in", IntegId.AUTH_HMAC_SHA2_256_128, bytes(32), mode="transport")
    opts = ipv4_options + bytes(-len(ipv4_options) % 4)
    v4 = bytearray(20 + len(opts))
    v4[0] = 0x40 | (len(v4) // 4)
    v4[9] = 51
    v4[20:] = opts
    with pytest.raises(EspDrop) as err:
        sa4.unprotect(bytes(v4 + ah + b"udp"))
    assert err.value.reason in (DropReason.ICV_FAILURE, DropReason.MALFORMED)


@pytest.mark.parametrize("suite", ["gcm16", "cbc-sha256"])
def test_esn_outbound_counter_stops_at_2_64(suite: str) -> None:
    out_sa, in_sa = pair(suite, esn=True)
    out_sa.seq = (1 << 64) - 2
    last = out_sa.encrypt(ipv4_packet())
    assert last[4:8] == b"\xff\xff\xff\xff"
    with pytest.raises(EspDrop) as err:
        out_sa.encrypt(ipv4_packet())
    assert err.value.reason is DropReason.EXPIRED and out_sa.seq == (1 << 64) - 1
    in_sa.replay.highest = (1 << 64) - 2
    assert in_sa.decrypt(last)


@pytest.mark.parametrize("suite", sorted(SUITES))
def test_all_api_forms_agree(suite: str) -> None:
    """encrypt / encrypt_into / encrypt_parts and decrypt / decrypt_into / decrypt_view,
    on the AEAD fast paths and the generic ones alike."""
    out_sa, in_sa = pair(suite)
    inner = ipv4_packet(300)
    buf = bytearray(1000)
    n = out_sa.encrypt_into(memoryview(inner), buf, 12)
    header, body = out_sa.encrypt_parts(inner)
    parts = bytes(header) + body  # the header view is valid until the next call
    packets = [out_sa.encrypt(inner), bytes(buf[12 : 12 + n]), parts]
    assert [int.from_bytes(p[4:8], "big") for p in packets] == [3, 1, 2]
    out = bytearray(1000)
    assert in_sa.decrypt(packets[0]) == inner
    assert bytes(in_sa.decrypt_view(packets[1])) == inner
    m = in_sa.decrypt_into(memoryview(packets[2]), out, 5)
    assert bytes(out[5 : 5 + m]) == inner
    with pytest.raises(ValueError):
        in_sa.encrypt(inner)
    with pytest.raises(ValueError):
        out_sa.decrypt(packets[0])
