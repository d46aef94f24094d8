"""EAP inside IKE_AUTH (ikev2.eap): packet codec, EAP-Identity, EAP-MSCHAPv2 in both roles,
and the bad input of issue 14 (out of order, repeated, wrong password, hostile identities)."""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ikev2.eap.mschapv2 import MsChapV2Message, MsChapV2Peer, MsChapV2Server, OpCode
from ikev2.eap.packet import EapError, EapPacket, check_identity
from ikev2.eap.session import EapAuthenticator, EapPeer
from ikev2.enums import EapCode, EapType, NotifyType
from ikev2.errors import ProtocolError

SECRETS = {"carol": "Ar3etTnp", "CORP\\dave": "W7R0g3do"}


def counter(seed: int) -> Callable[[int], bytes]:
    """Deterministic 'randomness' for reproducible conversations."""
    state = [seed]

    def draw(n: int) -> bytes:
        state[0] += 1
        return bytes((state[0] + i) & 0xFF for i in range(n))

    return draw


def gateway(eap_id: str | None = None, methods: list[EapType] | None = None) -> EapAuthenticator:
    factories = {
        EapType.MSCHAPV2: lambda identity: MsChapV2Server(SECRETS.get, random=counter(7)),
    }
    if methods is not None:
        factories = {t: factories[t] for t in methods}
    return EapAuthenticator(factories, eap_id=eap_id, random=counter(1))


def client(identity: str, password: str) -> EapPeer:
    return EapPeer(
        identity, {EapType.MSCHAPV2: lambda: MsChapV2Peer(identity, password, counter(3))}
    )


def converse(server: EapAuthenticator, peer: EapPeer) -> list[EapPacket]:
    """Run the conversation as IKE_AUTH would carry it; the packets on the wire."""
    wire = [server.start()]
    while True:
        response = peer.process(wire[-1].serialize())
        if response is None:
            return wire
        wire.append(response)
        wire.append(server.process(response.serialize()))


# --- the codec -------------------------------------------------------------------------


def test_packet_round_trip_and_layout() -> None:
    packet = EapPacket(EapCode.RESPONSE, 7, EapType.IDENTITY, b"carol")
    wire = packet.serialize()
    assert wire == bytes.fromhex("0207000a01") + b"carol"
    assert EapPacket.parse(wire) == packet
    assert EapPacket.parse(bytes.fromhex("03070004")) == EapPacket(EapCode.SUCCESS, 7)
    assert EapPacket.parse(bytes.fromhex("010900060999")) == EapPacket(1, 9, 9, b"\x99")


@pytest.mark.parametrize(
    "wire, words",
    [
        ("0102", "2 octets"),
        ("01020009", "Length 9"),
        ("0102000401", "Length 4 in a 5"),
        ("03010005ff", "SUCCESS with 1 data"),
        ("05010004", "code 5"),
        ("01010004", "without a Type"),
    ],
)
def test_bad_packets(wire: str, words: str) -> None:
    with pytest.raises(EapError, match=words) as caught:
        EapPacket.parse(bytes.fromhex(wire))
    assert caught.value.notify == NotifyType.AUTHENTICATION_FAILED


def test_mschapv2_message_layout() -> None:
    challenge = MsChapV2Message(OpCode.CHALLENGE, 0x42, bytes(range(16)), b"moon")
    wire = challenge.serialize()
    assert wire[:5] == bytes([1, 0x42]) + struct.pack("!H", 25) + bytes([16])
    assert MsChapV2Message.parse(wire) == challenge
    assert MsChapV2Message.parse(b"\x03") == MsChapV2Message(OpCode.SUCCESS, short=True)
    for bad in (
        b"",
        b"\x01\x00",
        b"\x01\x00\x00\x09",
        b"\x02\x01\x00\x06\x10\x00",
        b"\x09\x01\x00\x04",
    ):
        with pytest.raises(EapError):
            MsChapV2Message.parse(bad)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80))
def test_random_packets_only_typed_errors(data: bytes) -> None:
    for parse in (EapPacket.parse, MsChapV2Message.parse):
        try:
            parse(data)
        except ProtocolError:
            pass
    server = gateway()
    server.start()
    try:
        server.process(data)
    except ProtocolError:
        pass


# --- whole conversations ---------------------------------------------------------------


def test_mschapv2_success_both_roles() -> None:
    server, peer = gateway(), client("carol", "Ar3etTnp")
    wire = converse(server, peer)
    kinds = [(p.code, p.type) for p in wire]
    assert kinds == [
        (EapCode.REQUEST, EapType.IDENTITY),
        (EapCode.RESPONSE, EapType.IDENTITY),
        (EapCode.REQUEST, EapType.MSCHAPV2),  # Challenge
        (EapCode.RESPONSE, EapType.MSCHAPV2),  # Response
        (EapCode.REQUEST, EapType.MSCHAPV2),  # Success "S=..."
        (EapCode.RESPONSE, EapType.MSCHAPV2),  # Success ack
        (EapCode.SUCCESS, None),
    ]
    assert server.succeeded and peer.succeeded
    assert server.identity == "carol" and server.method_type == EapType.MSCHAPV2
    assert server.msk is not None and len(server.msk) == 64 and server.msk == peer.msk
    # Identifiers: each Response echoes its Request's
    assert all(wire[i].identifier == wire[i + 1].identifier for i in range(0, 6, 2))


def test_domain_user() -> None:
    server, peer = gateway(), client("CORP\\dave", "W7R0g3do")
    converse(server, peer)
    assert server.succeeded and server.identity == "CORP\\dave"


def test_wrong_password_names_the_identity() -> None:
    server, peer = gateway(), client("carol", "not-her-password")
    wire = converse(server, peer)
    assert wire[-1].code == EapCode.FAILURE
    assert not server.succeeded and server.msk is None
    assert server.failure_reason == "wrong MS-CHAPv2 password for 'carol'"
    assert peer.finished and not peer.succeeded and peer.msk is None
    assert peer.failure_reason == "the gateway refused our MS-CHAPv2 password (E=691)"


def test_unknown_user() -> None:
    server, peer = gateway(), client("mallory", "x")
    converse(server, peer)
    assert server.failure_reason == "no EAP secret for 'mallory'"


def test_eap_id_must_match() -> None:
    server, peer = gateway(eap_id="carol"), client("dave", "x")
    wire = converse(server, peer)
    assert wire[-1].code == EapCode.FAILURE
    assert "is not the configured 'carol'" in (server.failure_reason or "")


def test_gateway_that_does_not_know_the_password_is_refused() -> None:
    """Mutual authentication: a forged Success (wrong S=) ends the peer's conversation."""
    peer = client("carol", "Ar3etTnp")
    server = gateway()
    challenge = peer.process(server.start().serialize())
    assert challenge is not None
    request = server.process(challenge.serialize())
    response = peer.process(request.serialize())
    assert response is not None
    success = server.process(response.serialize())
    message = MsChapV2Message.parse(success.data)
    message.name = b"S=" + b"0" * 40 + b" M=Welcome"
    forged = EapPacket(EapCode.REQUEST, success.identifier, EapType.MSCHAPV2, message.serialize())
    with pytest.raises(EapError, match="authenticator response is wrong"):
        peer.process(forged.serialize())
    assert peer.msk is None


def test_eap_success_before_the_method_is_refused() -> None:
    peer = client("carol", "Ar3etTnp")
    peer.process(EapPacket(EapCode.REQUEST, 1, EapType.IDENTITY).serialize())
    with pytest.raises(EapError, match="before the method"):
        peer.process(EapPacket(EapCode.SUCCESS, 1).serialize())


def test_nak_to_an_unsupported_method() -> None:
    peer = client("carol", "x")
    answer = peer.process(
        EapPacket(EapCode.REQUEST, 5, EapType.MD5_CHALLENGE, b"\x10" + bytes(16)).serialize()
    )
    assert answer == EapPacket(EapCode.RESPONSE, 5, EapType.NAK, bytes([EapType.MSCHAPV2]))
    # the gateway with only MSCHAPv2 answers a Nak asking for TLS with a Failure
    server = gateway()
    identity = client("carol", "x").process(server.start().serialize())
    assert identity is not None
    request = server.process(identity.serialize())
    refusal = EapPacket(EapCode.RESPONSE, request.identifier, EapType.NAK, bytes([EapType.TLS]))
    assert server.process(refusal.serialize()).code == EapCode.FAILURE
    assert server.failure_reason == "the peer refused MSCHAPV2 and wants only [TLS]"


# --- bad input: order, repeats, identities ---------------------------------------------


def test_out_of_order_and_repeated_responses() -> None:
    server, peer = gateway(), client("carol", "Ar3etTnp")
    request = server.start()
    identity = peer.process(request.serialize())
    assert identity is not None
    challenge = server.process(identity.serialize())
    with pytest.raises(EapError, match="out of order or repeated"):
        server.process(identity.serialize())  # the identity again
    response = peer.process(challenge.serialize())
    assert response is not None
    wrong_id = EapPacket(
        response.code, (response.identifier + 1) & 0xFF, response.type, response.data
    )
    with pytest.raises(EapError, match="expected Identifier"):
        server.process(wrong_id.serialize())
    with pytest.raises(EapError, match="repeated"):
        peer.process(challenge.serialize())  # the gateway's Challenge again


def test_request_from_the_peer_and_messages_after_the_end() -> None:
    server = gateway()
    with pytest.raises(EapError, match="outside"):
        server.process(EapPacket(EapCode.RESPONSE, 0, EapType.IDENTITY, b"x").serialize())
    server.start()
    with pytest.raises(EapError, match="only Responses"):
        server.process(EapPacket(EapCode.REQUEST, 2, EapType.IDENTITY).serialize())
    server, peer = gateway(), client("carol", "Ar3etTnp")
    wire = converse(server, peer)
    with pytest.raises(EapError, match="outside"):
        server.process(wire[-2].serialize())
    with pytest.raises(EapError, match="ended"):
        peer.process(wire[-1].serialize())


@pytest.mark.parametrize(
    "identity, words",
    [
        (b"carol\nFAKE LOG LINE", "control characters"),
        (b"carol\x00", "control characters"),
        (b"\x1b[31mred", "control characters"),
        (b"x" * 65000, "65000 octets"),
        (b"\xff\xfe", "not UTF-8"),
        (b"", "empty"),
    ],
)
def test_hostile_identities_are_refused(identity: bytes, words: str) -> None:
    server = gateway()
    request = server.start()
    response = EapPacket(EapCode.RESPONSE, request.identifier, EapType.IDENTITY, identity)
    with pytest.raises(EapError, match=words) as caught:
        server.process(response.serialize())
    assert caught.value.notify == NotifyType.AUTHENTICATION_FAILED
    assert server.msk is None and not server.succeeded
    assert check_identity("Zoë@example.org".encode()) == "Zoë@example.org"
