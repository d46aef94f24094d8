"""Cross-checks against an implementation we did not write: scapy.contrib.ikev2.

Both directions: scapy dissects what we serialize into the same field values, and we
parse what scapy builds (and re-serialize it byte for byte). Also real captures: the
NAT-T capture (behind the non-ESP marker), the REDIRECT capture and the IKE_SA_INIT
frames of the Wireshark AES-CCM capture parse without error and re-serialize exactly.
And tshark: Wireshark's dissector decrypts our SK/SKF payloads (GCM, CCM, CBC + HMAC),
verifies their ICVs, flags our corrupted ones and reassembles our fragments.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from scapy.all import UDP, rdpcap
from scapy.contrib.ikev2 import (
    ConfigurationAttribute as ScapyCpAttribute,
)
from scapy.contrib.ikev2 import (
    IKEv2,
    IKEv2_AUTH,
    IKEv2_CERT,
    IKEv2_CERTREQ,
    IKEv2_CP,
    IKEv2_Delete,
    IKEv2_Encrypted,
    IKEv2_Encrypted_Fragment,
    IKEv2_IDi,
    IKEv2_IDr,
    IKEv2_KE,
    IKEv2_Nonce,
    IKEv2_Notify,
    IKEv2_Proposal,
    IKEv2_SA,
    IKEv2_Transform,
    IKEv2_TSi,
    IKEv2_TSr,
    IKEv2_VendorID,
)
from scapy.contrib.ikev2 import (
    IPv4TrafficSelector as ScapyTs4,
)
from scapy.contrib.ikev2 import (
    IPv6TrafficSelector as ScapyTs6,
)
from scapy.packet import NoPayload

from ikev2.enums import (
    AuthMethod,
    CertEncoding,
    CfgType,
    CpAttributeType,
    EncrId,
    ExchangeType,
    IdType,
    IntegId,
    KeId,
    NotifyType,
    PayloadType,
    PrfId,
    ProtocolId,
    TransformType,
    TsType,
)
from ikev2.fragments import serialize_fragments
from ikev2.message import IkeHeader, parse_message, serialize_message
from ikev2.payloads import (
    AuthPayload,
    CertPayload,
    CertReqPayload,
    CpAttribute,
    CpPayload,
    DeletePayload,
    IdPayload,
    KePayload,
    NoncePayload,
    NotifyPayload,
    Proposal,
    SaPayload,
    SkfPayload,
    SkPayload,
    TrafficSelector,
    Transform,
    TsPayload,
    VendorIdPayload,
)
from tests.components import require_component
from tests.reference_data import CAPTURES

SPI_I, SPI_R = bytes.fromhex("a1a2a3a4a5a6a7a8"), bytes.fromhex("b1b2b3b4b5b6b7b8")


def scapy_payloads(packet) -> list:
    """The chain of payload layers after the IKE header."""
    layers = []
    layer = packet.payload
    while layer is not None and not isinstance(layer, NoPayload):
        layers.append(layer)
        layer = layer.payload
    return layers


def scapy_transforms(proposal) -> list:
    transforms = []
    layer = proposal.trans
    while isinstance(layer, IKEv2_Transform):
        transforms.append(layer)
        layer = layer.payload
    return transforms


def scapy_proposals(sa) -> list:
    proposals = []
    layer = sa.prop
    while isinstance(layer, IKEv2_Proposal):
        proposals.append(layer)
        layer = layer.payload
    return proposals


# --------------------------------------------------------------------------------------
# We serialize, scapy dissects
# --------------------------------------------------------------------------------------


def sa_init_payloads() -> list:
    return [
        SaPayload(
            [
                Proposal(
                    1,
                    ProtocolId.IKE,
                    transforms=[
                        Transform(TransformType.ENCR, EncrId.ENCR_AES_GCM_16, key_length=256),
                        Transform(TransformType.ENCR, EncrId.ENCR_AES_GCM_16, key_length=128),
                        Transform(TransformType.PRF, PrfId.PRF_HMAC_SHA2_384),
                        Transform(TransformType.KE, KeId.CURVE25519),
                    ],
                ),
                Proposal(
                    2,
                    ProtocolId.IKE,
                    transforms=[
                        Transform(TransformType.ENCR, EncrId.ENCR_AES_CBC, key_length=128),
                        Transform(TransformType.INTEG, IntegId.AUTH_HMAC_SHA2_256_128),
                        Transform(TransformType.PRF, PrfId.PRF_HMAC_SHA2_256),
                        Transform(TransformType.KE, KeId.MODP_2048),
                    ],
                ),
            ]
        ),
        KePayload(KeId.CURVE25519, bytes(range(32))),
        NoncePayload(bytes(range(100, 132))),
        NotifyPayload(NotifyType.NAT_DETECTION_SOURCE_IP, data=b"\x01" * 20),
        NotifyPayload(NotifyType.SIGNATURE_HASH_ALGORITHMS, data=bytes.fromhex("00020003")),
        CertReqPayload(CertEncoding.X509_CERT_SIGNATURE, b"\xaa" * 20 + b"\xbb" * 20),
        VendorIdPayload(b"aioipsec"),
    ]


def test_scapy_dissects_our_ike_sa_init() -> None:
    header = IkeHeader(spi_i=SPI_I, exchange=ExchangeType.IKE_SA_INIT, initiator=True, message_id=0)
    wire = serialize_message(header, sa_init_payloads())
    packet = IKEv2(wire)
    assert packet.init_SPI == SPI_I and packet.resp_SPI == bytes(8)
    assert packet.exch_type == 34 and packet.version == 0x20 and packet.id == 0
    assert int(packet.flags) == 0x08 and packet.length == len(wire)
    layers = scapy_payloads(packet)
    assert [type(layer) for layer in layers] == [
        IKEv2_SA,
        IKEv2_KE,
        IKEv2_Nonce,
        IKEv2_Notify,
        IKEv2_Notify,
        IKEv2_CERTREQ,
        IKEv2_VendorID,
    ]
    sa, ke, nonce, natd, sigs, certreq, vendor = layers
    proposals = scapy_proposals(sa)
    assert [(p.proposal, p.proto, p.SPIsize, p.trans_nb) for p in proposals] == [
        (1, 1, 0, 4),
        (2, 1, 0, 4),
    ]
    assert [
        (t.transform_type, t.transform_id, t.key_length if t.length > 8 else None)
        for t in scapy_transforms(proposals[0])
    ] == [(1, 20, 256), (1, 20, 128), (2, 6, None), (4, 31, None)]
    assert [(t.transform_type, t.transform_id) for t in scapy_transforms(proposals[1])] == [
        (1, 12),
        (3, 12),
        (2, 5),
        (4, 14),
    ]
    assert (ke.group, ke.ke) == (31, bytes(range(32)))
    assert nonce.nonce == bytes(range(100, 132))
    assert (natd.type, natd.proto, natd.SPIsize, natd.notify) == (16388, 0, 0, b"\x01" * 20)
    assert (sigs.type, sigs.notify) == (16431, bytes.fromhex("00020003"))
    assert (certreq.cert_encoding, certreq.cert_authority) == (4, b"\xaa" * 20 + b"\xbb" * 20)
    assert vendor.vendorID == b"aioipsec"
    # every generic header length agrees with scapy's view
    assert sum(layer.length for layer in layers) == len(wire) - 28


def auth_plain_payloads() -> list:
    return [
        IdPayload(PayloadType.IDi, IdType.ID_FQDN, b"carol@strongswan.org"),
        CertPayload(CertEncoding.X509_CERT_SIGNATURE, b"\x30\x82" + bytes(30)),
        IdPayload(PayloadType.IDr, IdType.ID_IPV4_ADDR, bytes([192, 0, 2, 7])),
        AuthPayload(AuthMethod.SHARED_KEY_MESSAGE_INTEGRITY_CODE, bytes(range(32))),
        CpPayload(
            CfgType.CFG_REQUEST,
            [
                CpAttribute(CpAttributeType.INTERNAL_IP4_ADDRESS),
                CpAttribute(CpAttributeType.INTERNAL_IP4_DNS, bytes([10, 0, 0, 53])),
            ],
        ),
        SaPayload(
            [
                Proposal(
                    1,
                    ProtocolId.ESP,
                    spi=bytes.fromhex("c1a9656b"),
                    transforms=[
                        Transform(TransformType.ENCR, EncrId.ENCR_AES_GCM_16, key_length=256),
                        Transform(TransformType.ESN, 0),
                    ],
                )
            ]
        ),
        TsPayload(
            PayloadType.TSi,
            [
                TrafficSelector(
                    TsType.TS_IPV4_ADDR_RANGE,
                    6,
                    80,
                    443,
                    bytes([10, 1, 0, 0]),
                    bytes([10, 1, 0, 255]),
                ),
                TrafficSelector(
                    TsType.TS_IPV6_ADDR_RANGE,
                    0,
                    0,
                    65535,
                    ipaddress.IPv6Address("2001:db8::").packed,
                    ipaddress.IPv6Address("2001:db8::ffff").packed,
                ),
            ],
        ),
        TsPayload(
            PayloadType.TSr,
            [TrafficSelector(TsType.TS_IPV4_ADDR_RANGE, 0, 0, 65535, bytes(4), b"\xff" * 4)],
        ),
        NotifyPayload(NotifyType.REKEY_SA, ProtocolId.ESP, spi=bytes.fromhex("0a0b0c0d")),
        DeletePayload(ProtocolId.ESP, [bytes.fromhex("01020304"), bytes.fromhex("05060708")]),
    ]


def test_scapy_dissects_our_auth_payloads() -> None:
    header = IkeHeader(
        spi_i=SPI_I, spi_r=SPI_R, exchange=ExchangeType.IKE_AUTH, initiator=True, message_id=1
    )
    wire = serialize_message(header, auth_plain_payloads())
    packet = IKEv2(wire)
    layers = scapy_payloads(packet)
    assert [type(layer) for layer in layers] == [
        IKEv2_IDi,
        IKEv2_CERT,
        IKEv2_IDr,
        IKEv2_AUTH,
        IKEv2_CP,
        IKEv2_SA,
        IKEv2_TSi,
        IKEv2_TSr,
        IKEv2_Notify,
        IKEv2_Delete,
    ]
    idi, cert, idr, auth, cp, sa, tsi, tsr, rekey, delete = layers
    assert (idi.IDtype, idi.ID) == (2, b"carol@strongswan.org")
    assert (cert.cert_encoding, bytes(cert.cert_data)) == (4, b"\x30\x82" + bytes(30))
    assert (idr.IDtype, idr.ID) == (1, "192.0.2.7")
    assert (auth.auth_type, auth.load) == (2, bytes(range(32)))
    assert cp.CFGType == 1
    assert [(a.type, a.length) for a in cp.attributes] == [(1, 0), (3, 4)]
    assert cp.attributes[1].value == "10.0.0.53"
    proposal = scapy_proposals(sa)[0]
    assert (proposal.proto, proposal.SPIsize, proposal.SPI) == (3, 4, bytes.fromhex("c1a9656b"))
    assert [(t.transform_type, t.transform_id) for t in scapy_transforms(proposal)] == [
        (1, 20),
        (5, 0),
    ]
    assert tsi.number_of_TSs == 2
    ts4, ts6 = tsi.traffic_selector
    assert isinstance(ts4, ScapyTs4) and isinstance(ts6, ScapyTs6)
    assert (ts4.IP_protocol_ID, ts4.start_port, ts4.end_port) == (6, 80, 443)
    assert (ts4.starting_address_v4, ts4.ending_address_v4) == ("10.1.0.0", "10.1.0.255")
    assert (ts6.length, ts6.starting_address_v6, ts6.ending_address_v6) == (
        40,
        "2001:db8::",
        "2001:db8::ffff",
    )
    assert tsr.traffic_selector[0].ending_address_v4 == "255.255.255.255"
    assert (rekey.type, rekey.proto, rekey.SPIsize, rekey.SPI) == (
        16393,
        3,
        4,
        bytes.fromhex("0a0b0c0d"),
    )
    assert (delete.proto, delete.SPIsize, delete.SPInum) == (3, 4, 2)


def test_scapy_dissects_our_sk_and_skf() -> None:
    from ikev2.crypto.sk import make_sk_cipher

    cipher = make_sk_cipher(EncrId.ENCR_AES_GCM_16, 128, None, bytes(20), None)
    header = IkeHeader(spi_i=SPI_I, spi_r=SPI_R, exchange=ExchangeType.IKE_AUTH, message_id=1)
    wire = serialize_message(header, auth_plain_payloads(), cipher)
    sk = scapy_payloads(IKEv2(wire))[0]
    assert isinstance(sk, IKEv2_Encrypted)
    assert sk.next_payload == PayloadType.IDi and sk.length == len(wire) - 28
    for number, datagram in enumerate(
        serialize_fragments(header, auth_plain_payloads(), cipher, 200), start=1
    ):
        skf = scapy_payloads(IKEv2(datagram))[0]
        assert isinstance(skf, IKEv2_Encrypted_Fragment)
        assert skf.frag_number == number and skf.length == len(datagram) - 28
        assert skf.next_payload == (PayloadType.IDi if number == 1 else 0)


# --------------------------------------------------------------------------------------
# Scapy builds, we parse
# --------------------------------------------------------------------------------------


def test_we_parse_what_scapy_builds() -> None:
    transforms = (
        IKEv2_Transform(
            next_payload=3, transform_type=1, transform_id=12, length=12, key_length=256
        )
        / IKEv2_Transform(next_payload=3, transform_type=3, transform_id=12)
        / IKEv2_Transform(next_payload=3, transform_type=2, transform_id=5)
        / IKEv2_Transform(transform_type=4, transform_id=19)
    )
    packet = (
        IKEv2(init_SPI=SPI_I, resp_SPI=bytes(8), exch_type=34, flags="Initiator", id=0)
        / IKEv2_SA(prop=IKEv2_Proposal(proposal=1, proto=1, trans_nb=4, trans=transforms))
        / IKEv2_KE(group=19, ke=bytes(range(64)))
        / IKEv2_Nonce(nonce=b"\x07" * 32)
        / IKEv2_Notify(type=16389, notify=b"\x02" * 20)
        / IKEv2_Notify(proto=3, SPI=b"\x00\x00\x00\x2a", type=16393)
        / IKEv2_IDi(IDtype=1, ID="198.51.100.1")
        / IKEv2_IDr(IDtype=2, ID=b"moon.strongswan.org")
        / IKEv2_AUTH(auth_type=2, load=b"\x33" * 32)
        / IKEv2_CERT(cert_encoding=4, cert_data=b"\x30\x03\x02\x01\x00")
        / IKEv2_CERTREQ(cert_encoding=4, cert_authority=b"\x44" * 20)
        / IKEv2_TSi(
            traffic_selector=[
                ScapyTs4(
                    IP_protocol_ID=17,
                    start_port=500,
                    end_port=4500,
                    starting_address_v4="10.0.0.1",
                    ending_address_v4="10.0.0.9",
                )
            ]
        )
        / IKEv2_TSr(
            # scapy's default IPv6 selector length (20) is wrong: RFC 7296 says 40
            traffic_selector=[
                ScapyTs6(
                    length=40,
                    IP_protocol_ID=0,
                    starting_address_v6="fd00::1",
                    ending_address_v6="fd00::ff",
                )
            ]
        )
        / IKEv2_CP(
            CFGType=2,
            # scapy picks the address field type from the length: give it
            attributes=[
                ScapyCpAttribute(type=1, length=4, value="10.3.0.1"),
                ScapyCpAttribute(type=10, length=16, value="fd00::53"),
            ],
        )
        / IKEv2_Delete(
            # scapy would put the total SPI octets in SPIsize and 0 in SPInum: set them
            proto=3,
            SPIsize=4,
            SPInum=2,
            SPI=[bytes.fromhex("01020304"), bytes.fromhex("0a0b0c0d")],
        )
        / IKEv2_VendorID(vendorID=b"scapy")
    )
    raw = bytes(packet)
    msg = parse_message(raw)
    assert msg.header.spi_i == SPI_I and msg.header.initiator and not msg.header.response
    assert msg.header.exchange == ExchangeType.IKE_SA_INIT
    assert msg.payloads == [
        SaPayload(
            [
                Proposal(
                    1,
                    ProtocolId.IKE,
                    transforms=[
                        Transform(TransformType.ENCR, EncrId.ENCR_AES_CBC, 256),
                        Transform(TransformType.INTEG, IntegId.AUTH_HMAC_SHA2_256_128),
                        Transform(TransformType.PRF, PrfId.PRF_HMAC_SHA2_256),
                        Transform(TransformType.KE, KeId.ECP_256),
                    ],
                )
            ]
        ),
        KePayload(KeId.ECP_256, bytes(range(64))),
        NoncePayload(b"\x07" * 32),
        NotifyPayload(NotifyType.NAT_DETECTION_DESTINATION_IP, data=b"\x02" * 20),
        NotifyPayload(NotifyType.REKEY_SA, ProtocolId.ESP, spi=b"\x00\x00\x00\x2a"),
        IdPayload(PayloadType.IDi, IdType.ID_IPV4_ADDR, bytes([198, 51, 100, 1])),
        IdPayload(PayloadType.IDr, IdType.ID_FQDN, b"moon.strongswan.org"),
        AuthPayload(AuthMethod.SHARED_KEY_MESSAGE_INTEGRITY_CODE, b"\x33" * 32),
        CertPayload(CertEncoding.X509_CERT_SIGNATURE, b"\x30\x03\x02\x01\x00"),
        CertReqPayload(CertEncoding.X509_CERT_SIGNATURE, b"\x44" * 20),
        TsPayload(
            PayloadType.TSi,
            [
                TrafficSelector(
                    TsType.TS_IPV4_ADDR_RANGE,
                    17,
                    500,
                    4500,
                    bytes([10, 0, 0, 1]),
                    bytes([10, 0, 0, 9]),
                )
            ],
        ),
        TsPayload(
            PayloadType.TSr,
            [
                TrafficSelector(
                    TsType.TS_IPV6_ADDR_RANGE,
                    0,
                    0,
                    65535,
                    ipaddress.IPv6Address("fd00::1").packed,
                    ipaddress.IPv6Address("fd00::ff").packed,
                )
            ],
        ),
        CpPayload(
            CfgType.CFG_REPLY,
            [
                CpAttribute(CpAttributeType.INTERNAL_IP4_ADDRESS, bytes([10, 3, 0, 1])),
                CpAttribute(
                    CpAttributeType.INTERNAL_IP6_DNS, ipaddress.IPv6Address("fd00::53").packed
                ),
            ],
        ),
        DeletePayload(ProtocolId.ESP, [bytes.fromhex("01020304"), bytes.fromhex("0a0b0c0d")]),
        VendorIdPayload(b"scapy"),
    ]
    assert serialize_message(msg.header, msg.payloads) == raw


def test_scapy_encrypted_fragment_parses() -> None:
    packet = IKEv2(
        init_SPI=SPI_I, resp_SPI=SPI_R, exch_type=35, flags="Response", id=1
    ) / IKEv2_Encrypted_Fragment(next_payload=36, frag_number=1, frag_total=2, load=bytes(40))
    raw = bytes(packet)
    msg = parse_message(raw)
    assert msg.payloads == [SkfPayload(PayloadType.IDr, 1, 2, bytes(40))]
    assert msg.associated_data == raw[:36]
    assert serialize_message(msg.header, msg.payloads) == raw


# --------------------------------------------------------------------------------------
# Real captures
# --------------------------------------------------------------------------------------


def udp_payloads(name: str) -> list[bytes]:
    path = CAPTURES / name
    return [bytes(packet[UDP].payload) for packet in rdpcap(str(path)) if UDP in packet]


def test_nat_t_capture_frames_parse() -> None:
    ike = [p[4:] for p in udp_payloads("scapy_ikev2_nat_t.pcapng") if p[:4] == bytes(4)]
    assert len(ike) == 30  # 3 sessions: IKE_SA_INIT, IKE_AUTH, INFORMATIONAL exchanges
    exchanges = []
    for data in ike:
        msg = parse_message(data)
        exchanges.append(msg.header.exchange)
        assert serialize_message(msg.header, msg.payloads) == data
        if msg.header.exchange == ExchangeType.IKE_SA_INIT:
            assert msg.get(PayloadType.SA) is not None and msg.get(PayloadType.NONCE) is not None
            assert msg.encrypted_payload is None
            # our dissection agrees with scapy's on the payload sequence
            packet = IKEv2(data)
            layers = scapy_payloads(packet)
            theirs = [packet.next_payload] + [layer.next_payload for layer in layers[:-1]]
            assert [int(p.TYPE) for p in msg.payloads] == theirs
            assert [layer.length - 4 for layer in layers] == [
                len(p.serialize()) for p in msg.payloads
            ]
        else:
            assert isinstance(msg.encrypted_payload, SkPayload)
    assert exchanges.count(ExchangeType.IKE_SA_INIT) == 6
    assert exchanges.count(ExchangeType.IKE_AUTH) == 6


def test_nat_t_capture_matches_scapy_field_by_field() -> None:
    data = next(p[4:] for p in udp_payloads("scapy_ikev2_nat_t.pcapng") if p[:4] == bytes(4))
    msg = parse_message(data)
    packet = IKEv2(data)
    assert (packet.init_SPI, packet.resp_SPI, packet.id) == (
        msg.header.spi_i,
        msg.header.spi_r,
        msg.header.message_id,
    )
    sa = msg.get(PayloadType.SA)
    scapy_sa = packet[IKEv2_SA]
    for ours, theirs in zip(sa.proposals, scapy_proposals(scapy_sa), strict=True):
        assert (ours.number, ours.protocol, ours.spi) == (theirs.proposal, theirs.proto, theirs.SPI)
        assert [(t.type, t.id, t.key_length) for t in ours.transforms] == [
            (t.transform_type, t.transform_id, t.key_length if t.length > 8 else None)
            for t in scapy_transforms(theirs)
        ]
    assert msg.get(PayloadType.KE).data == packet[IKEv2_KE].ke
    assert msg.get(PayloadType.NONCE).nonce == packet[IKEv2_Nonce].nonce


def test_redirect_capture_parses() -> None:
    messages = [parse_message(data) for data in udp_payloads("scapy_ikev2_notify_redirect.pcap")]
    assert any(m.notify(NotifyType.REDIRECT) for m in messages)
    assert any(m.notify(NotifyType.REDIRECT_SUPPORTED) for m in messages)
    for msg in messages:
        assert serialize_message(msg.header, msg.payloads) == msg.raw


def test_ccm_capture_ike_sa_init_frames_parse() -> None:
    frames = udp_payloads("wireshark_ikev2-decrypt-aes128ccm12_4frames_from_scapy.pcap")
    request, response = (parse_message(data) for data in frames[:2])
    assert request.header.spi_i == bytes.fromhex("ea684d21597afd36")
    assert response.header.spi_r == bytes.fromhex("d9fe2ab22dac23ac")
    assert request.get(PayloadType.KE).group == KeId.ECP_256
    chosen = response.get(PayloadType.SA).proposals
    assert len(chosen) == 1
    assert chosen[0].transforms_of(TransformType.ENCR) == [
        Transform(TransformType.ENCR, EncrId.ENCR_AES_CCM_12, 128)
    ]
    assert len(request.notifies(NotifyType.NAT_DETECTION_SOURCE_IP)) == 1
    for msg, data in zip((request, response), frames[:2]):
        assert serialize_message(msg.header, msg.payloads) == data


# --------------------------------------------------------------------------------------
# tshark (Wireshark's ISAKMP dissector) as a second oracle: it decrypts our SK payloads
# with the keys, checks their ICVs, and reassembles our SKF fragments
# --------------------------------------------------------------------------------------

TSHARK_ALGORITHMS = [
    # (encr, key bits, integ, Wireshark's name for encr, Wireshark's name for integ)
    (EncrId.ENCR_AES_GCM_8, 128, None, "AES-GCM-128 with 8 octet ICV [RFC5282]", None),
    (EncrId.ENCR_AES_GCM_12, 192, None, "AES-GCM-192 with 12 octet ICV [RFC5282]", None),
    (EncrId.ENCR_AES_GCM_16, 256, None, "AES-GCM-256 with 16 octet ICV [RFC5282]", None),
    (EncrId.ENCR_AES_CCM_8, 256, None, "AES-CCM-256 with 8 octet ICV [RFC5282]", None),
    (EncrId.ENCR_AES_CCM_12, 128, None, "AES-CCM-128 with 12 octet ICV [RFC5282]", None),
    (EncrId.ENCR_AES_CCM_16, 192, None, "AES-CCM-192 with 16 octet ICV [RFC5282]", None),
    (
        EncrId.ENCR_AES_CBC,
        128,
        IntegId.AUTH_HMAC_SHA1_96,
        "AES-CBC-128 [RFC3602]",
        "HMAC_SHA1_96 [RFC2404]",
    ),
    (
        EncrId.ENCR_AES_CBC,
        192,
        IntegId.AUTH_HMAC_SHA2_384_192,
        "AES-CBC-192 [RFC3602]",
        "HMAC_SHA2_384_192 [RFC4868]",
    ),
    (
        EncrId.ENCR_AES_CBC,
        256,
        IntegId.AUTH_HMAC_SHA2_512_256,
        "AES-CBC-256 [RFC3602]",
        "HMAC_SHA2_512_256 [RFC4868]",
    ),
]


@pytest.mark.timeout(120)
def test_tshark_decrypts_and_verifies_our_sk_and_skf(tmp_path: Path) -> None:
    import subprocess

    from scapy.all import IP, Ether, Raw, wrpcap

    from ikev2.crypto.sk import make_sk_cipher, sk_key_lengths

    require_component("tshark")
    frames: list[bytes] = []
    expected: list[str] = []  # per frame: "ok", "bad" (ICV must fail) or "fragment"
    table: list[str] = []
    for index, (encr, bits, integ, encr_name, integ_name) in enumerate(TSHARK_ALGORITHMS, 1):
        spi_i, spi_r = bytes([index]) * 8, bytes([0x80 | index]) * 8
        encr_len, integ_len = sk_key_lengths(encr, bits, integ)
        sk_ei = bytes((index * 7 + i) % 256 for i in range(encr_len))
        sk_ai = bytes((index * 11 + i) % 256 for i in range(integ_len))
        cipher = make_sk_cipher(encr, bits, integ, sk_ei, sk_ai or None)
        table.append(
            f"uat:ikev2_decryption_table:{spi_i.hex()},{spi_r.hex()},{sk_ei.hex()},{sk_ei.hex()},"
            f'"{encr_name}",{sk_ai.hex()},{sk_ai.hex()},"{integ_name or "NONE [RFC4306]"}"'
        )
        header = IkeHeader(
            spi_i=spi_i, spi_r=spi_r, exchange=ExchangeType.IKE_AUTH, initiator=True, message_id=1
        )
        wire = serialize_message(header, auth_plain_payloads(), cipher)
        corrupted = bytearray(wire)
        corrupted[-1] ^= 0x01
        frames += [wire, bytes(corrupted)]
        expected += ["ok", "bad"]
        header.message_id = 2
        fragments = serialize_fragments(header, auth_plain_payloads(), cipher, 160)
        frames += fragments
        expected += ["fragment"] * (len(fragments) - 1) + ["reassembled"]
    pcap = tmp_path / "ours.pcap"
    wrpcap(
        str(pcap),
        [
            # explicit MACs: scapy would otherwise ARP for the destination
            Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
            / IP(src="192.0.2.1", dst="192.0.2.2")
            / UDP(sport=500, dport=500)
            / Raw(f)
            for f in frames
        ],
    )
    command = ["tshark", "-n", "-r", str(pcap)]
    for row in table:
        command += ["-o", row]
    command += ["-T", "fields", "-E", "separator=|", "-e", "frame.number"]
    command += ["-e", "isakmp.id.data.fqdn", "-e", "isakmp.auth.data", "-e", "_ws.expert.message"]
    output = subprocess.run(command, capture_output=True, text=True, timeout=100, check=True)
    rows = [line.split("|") for line in output.stdout.splitlines() if line]
    assert len(rows) == len(frames)
    auth_data = bytes(range(32)).hex()
    for (number, fqdn, auth, expert), kind in zip(rows, expected, strict=True):
        context = f"frame {number} ({kind}): {fqdn!r} {expert!r}"
        if kind == "ok":
            assert fqdn == "carol@strongswan.org" and auth == auth_data and not expert, context
        elif kind == "bad":
            assert "Integrity Checksum Data is incorrect" in expert, context
        elif kind == "reassembled":
            assert fqdn == "carol@strongswan.org" and auth == auth_data, context
            assert "incorrect" not in expert, context
        else:
            assert "incorrect" not in expert, context
