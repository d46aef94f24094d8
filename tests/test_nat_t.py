"""nat_t/: port-4500 demultiplexing against a real NAT-T capture, NAT-D hashes against a real
IKE_SA_INIT exchange, keepalive timing and peer address updates."""

from __future__ import annotations

import pytest
from scapy.contrib.ikev2 import IKEv2, IKEv2_Notify
from scapy.layers.inet import IP, UDP
from scapy.layers.ipsec import ESP
from scapy.packet import NoPayload
from scapy.utils import rdpcap

from nat_t import (
    NAT_KEEPALIVE,
    KeepaliveTimer,
    PeerAddressTracker,
    Udp4500Kind,
    add_non_esp_marker,
    classify,
    demux,
    detect_nat,
    esp_spi,
    ike_datagram,
    natd_hash,
)
from tests.reference_data import CAPTURES

NAT_T_CAPTURE = CAPTURES / "scapy_ikev2_nat_t.pcapng"
INIT_CAPTURE = CAPTURES / "wireshark_ikev2-decrypt-aes128ccm12_4frames_from_scapy.pcap"

NAT_DETECTION_SOURCE_IP = 16388
NAT_DETECTION_DESTINATION_IP = 16389


# --- demultiplexing ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("datagram", "kind"),
    [
        (b"", Udp4500Kind.INVALID),
        (b"\xff", Udp4500Kind.KEEPALIVE),
        (b"\x00", Udp4500Kind.INVALID),
        (b"\xfe", Udp4500Kind.INVALID),
        (b"\xff\xff", Udp4500Kind.INVALID),
        (b"\x00\x00\x00\x00", Udp4500Kind.INVALID),  # a marker with no IKE message
        (b"\x00\x00\x00\x00" + b"\x01", Udp4500Kind.IKE),
        (b"\x00\x00\x00\x01\x00\x00\x00", Udp4500Kind.INVALID),  # ESP shorter than SPI+seq
        (b"\x00\x00\x00\x01\x00\x00\x00\x01", Udp4500Kind.ESP),
        (b"\x00\x00\x01\x00" + b"\0" * 40, Udp4500Kind.ESP),  # a zero byte is not the marker
        (b"\xff" * 8, Udp4500Kind.ESP),
    ],
)
def test_classify(datagram, kind):
    assert classify(datagram) is kind
    assert classify(bytearray(datagram)) is kind
    assert classify(memoryview(datagram)) is kind


def test_demux_views_and_marker_round_trip():
    ike = bytes(range(1, 29))
    kind, payload = demux(add_non_esp_marker(ike))
    assert kind is Udp4500Kind.IKE and bytes(payload) == ike
    assert ike_datagram(ike, on_nat_t_port=True) == b"\0\0\0\0" + ike
    assert ike_datagram(ike, on_nat_t_port=False) == ike
    buffer = bytearray(b"\x12\x34\x56\x78\x00\x00\x00\x07payload")
    kind, payload = demux(buffer)
    assert kind is Udp4500Kind.ESP and payload.obj is buffer  # no copy
    assert esp_spi(payload) == 0x12345678
    assert demux(NAT_KEEPALIVE)[0] is Udp4500Kind.KEEPALIVE
    assert len(demux(b"\x01")[1]) == 0


def test_every_frame_of_the_nat_t_capture():
    """captures/README.txt: 54 frames, all on UDP 4500, IKE (IKE_SA_INIT / IKE_AUTH /
    INFORMATIONAL) behind the marker and ESP-in-UDP with SPIs ac0faf03/c1a9656b,
    958a753b/78bd5377, b6b5f296/c1d717e8, sequence numbers 1..4. scapy dissects each frame
    independently as our oracle."""
    frames = rdpcap(str(NAT_T_CAPTURE))
    assert len(frames) == 54
    kinds = {Udp4500Kind.IKE: 0, Udp4500Kind.ESP: 0}
    exchanges = set()
    spis = set()
    for frame in frames:
        udp = frame[UDP]
        assert 4500 in (udp.sport, udp.dport)
        datagram = bytes(udp.payload)
        kind, payload = demux(datagram)
        assert kind in kinds, frame.summary()
        kinds[kind] += 1
        if kind is Udp4500Kind.IKE:
            ike = IKEv2(bytes(payload))
            assert ike.version == 0x20
            assert ike.length == len(payload)
            exchanges.add(ike.exch_type)
        else:
            esp = ESP(bytes(payload))
            assert esp.spi == esp_spi(payload) != 0
            assert 1 <= esp.seq <= 4
            spis.add(esp.spi)
    assert kinds == {Udp4500Kind.IKE: 30, Udp4500Kind.ESP: 24}
    assert exchanges == {34, 35, 37}  # IKE_SA_INIT, IKE_AUTH, INFORMATIONAL
    assert {f"{spi:08x}" for spi in spis} == {
        "ac0faf03",
        "c1a9656b",
        "958a753b",
        "78bd5377",
        "b6b5f296",
        "c1d717e8",
    }


# --- NAT detection ----------------------------------------------------------------------------


def _notifies(ike) -> dict[int, list[bytes]]:
    found: dict[int, list[bytes]] = {}
    layer = ike.payload
    while layer is not None and not isinstance(layer, NoPayload):
        if isinstance(layer, IKEv2_Notify):
            found.setdefault(layer.type, []).append(bytes(layer.notify))
        layer = layer.payload
    return found


def test_natd_hashes_of_a_real_ike_sa_init():
    """The IKE_SA_INIT request and response of the Wireshark capture carry NAT-D notifies
    computed by another implementation; ours must reproduce them (no NAT on that path)."""
    request_frame, response_frame = rdpcap(str(INIT_CAPTURE))[:2]
    request = IKEv2(bytes(request_frame[UDP].payload))
    response = IKEv2(bytes(response_frame[UDP].payload))
    spi_i, spi_r = request.init_SPI, response.resp_SPI
    assert request.resp_SPI == b"\0" * 8
    initiator = (request_frame[IP].src, request_frame[UDP].sport)
    responder = (request_frame[IP].dst, request_frame[UDP].dport)

    sent = _notifies(request)
    # In the request, SPIr is zero.
    assert sent[NAT_DETECTION_SOURCE_IP] == [natd_hash(spi_i, b"\0" * 8, *initiator)]
    assert sent[NAT_DETECTION_DESTINATION_IP] == [natd_hash(spi_i, b"\0" * 8, *responder)]
    answered = _notifies(response)
    assert answered[NAT_DETECTION_SOURCE_IP] == [natd_hash(spi_i, spi_r, *responder)]
    assert answered[NAT_DETECTION_DESTINATION_IP] == [natd_hash(spi_i, spi_r, *initiator)]

    # The initiator evaluating the response: nobody is behind a NAT.
    result = detect_nat(
        spi_i,
        spi_r,
        local=initiator,
        remote=responder,
        received_source_hashes=answered[NAT_DETECTION_SOURCE_IP],
        received_destination_hashes=answered[NAT_DETECTION_DESTINATION_IP],
    )
    assert not result.local_behind_nat and not result.remote_behind_nat
    assert not result.nat_detected
    # Seen from a translated address/port, each side of the NAT is detected separately.
    behind = detect_nat(
        spi_i,
        spi_r,
        local=("10.0.0.5", 500),
        remote=responder,
        received_source_hashes=answered[NAT_DETECTION_SOURCE_IP],
        received_destination_hashes=answered[NAT_DETECTION_DESTINATION_IP],
    )
    assert behind.local_behind_nat and not behind.remote_behind_nat and behind.nat_detected
    remote_nat = detect_nat(
        spi_i,
        spi_r,
        local=initiator,
        remote=(responder[0], 4500),
        received_source_hashes=answered[NAT_DETECTION_SOURCE_IP],
        received_destination_hashes=answered[NAT_DETECTION_DESTINATION_IP],
    )
    assert remote_nat.remote_behind_nat and not remote_nat.local_behind_nat


def test_natd_hash_ipv6_and_input_checks():
    import hashlib

    spi_i, spi_r = bytes(range(8)), bytes(range(8, 16))
    expected = hashlib.sha1(
        spi_i + spi_r + bytes.fromhex("20010db8000000000000000000000001") + b"\x11\x94"
    ).digest()
    assert natd_hash(spi_i, spi_r, "2001:db8::1", 4500) == expected
    with pytest.raises(ValueError):
        natd_hash(b"short", spi_r, "192.0.2.1", 500)


# --- keepalives and peer address --------------------------------------------------------------


def test_keepalive_timer():
    timer = KeepaliveTimer(now=100.0)
    assert timer.next_due() == 120.0
    assert timer.poll(119.9) is None
    timer.packet_sent(110.0)  # ESP traffic keeps the mapping alive: no keepalive needed
    assert timer.poll(120.0) is None
    assert timer.poll(130.0) == b"\xff"
    assert timer.next_due() == 150.0 and timer.keepalives_sent == 1
    assert timer.poll(149.0) is None
    timer.packet_sent(90.0)  # out-of-order report does not move the timer back
    assert timer.next_due() == 150.0
    quick = KeepaliveTimer(now=0.0, interval=5.0)
    assert quick.poll(5.0) == NAT_KEEPALIVE
    timer.enabled = False
    assert timer.next_due() is None and timer.poll(1000.0) is None
    with pytest.raises(ValueError):
        KeepaliveTimer(now=0.0, interval=0)


def test_peer_address_tracker():
    tracker = PeerAddressTracker(("198.51.100.7", 4500))
    assert not tracker.authenticated_packet_from(("198.51.100.7", 4500), new=True)
    # A replayed (old) packet from elsewhere must not move us.
    assert not tracker.authenticated_packet_from(("198.51.100.7", 31000), new=False)
    assert tracker.address == ("198.51.100.7", 4500)
    # The NAT in front of the peer rebuilt its mapping with another port.
    assert tracker.authenticated_packet_from(("198.51.100.7", 31000), new=True)
    assert tracker.address == ("198.51.100.7", 31000) and tracker.updates == 1
    # Behind a NAT ourselves: no dynamic update (RFC 7296 sec. 2.23).
    behind = PeerAddressTracker(("203.0.113.1", 4500), local_behind_nat=True)
    assert not behind.authenticated_packet_from(("203.0.113.9", 4500), new=True)
    assert behind.address == ("203.0.113.1", 4500)
