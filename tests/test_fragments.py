"""IKE fragmentation (RFC 7383): sending, reassembly and the bad-inputs.md fragment checks."""

from __future__ import annotations

import random
import struct

import pytest

from ikev2.crypto.sk import make_sk_cipher, sk_key_lengths
from ikev2.enums import (
    CertEncoding,
    EncrId,
    ExchangeType,
    IdType,
    IntegId,
    NotifyType,
    PayloadType,
)
from ikev2.errors import IntegrityError, ProtocolError
from ikev2.fragments import (
    Reassembler,
    fragment_content_size,
    max_ike_message_size,
    serialize_fragments,
)
from ikev2.message import IkeHeader, parse_message
from ikev2.payloads import AuthPayload, CertPayload, IdPayload, SkfPayload

SPI_I, SPI_R = b"\x11" * 8, b"\x22" * 8


def cipher_pair(encr=EncrId.ENCR_AES_GCM_16, bits=256, integ=None):
    encr_len, integ_len = sk_key_lengths(encr, bits, integ)
    sk_e, sk_a = bytes(range(encr_len)), bytes(range(integ_len)) or None
    return make_sk_cipher(encr, bits, integ, sk_e, sk_a), make_sk_cipher(
        encr, bits, integ, sk_e, sk_a
    )


def auth_payloads(cert_size: int = 3000) -> list:
    return [
        IdPayload(PayloadType.IDi, IdType.ID_FQDN, b"carol@strongswan.org"),
        CertPayload(CertEncoding.X509_CERT_SIGNATURE, bytes(i % 251 for i in range(cert_size))),
        AuthPayload(14, bytes(range(256))),
    ]


def header(message_id: int = 1, response: bool = False) -> IkeHeader:
    return IkeHeader(
        spi_i=SPI_I,
        spi_r=SPI_R,
        exchange=ExchangeType.IKE_AUTH,
        initiator=not response,
        response=response,
        message_id=message_id,
    )


def fragments(sender, max_size=500, message_id=1, cert_size=3000, response=False):
    return serialize_fragments(
        header(message_id, response), auth_payloads(cert_size), sender, max_size
    )


@pytest.mark.parametrize(
    "algorithm",
    [
        (EncrId.ENCR_AES_GCM_16, 256, None),
        (EncrId.ENCR_CHACHA20_POLY1305, None, None),
        (EncrId.ENCR_AES_CBC, 128, IntegId.AUTH_HMAC_SHA2_256_128),
    ],
    ids=lambda a: a[0].name,
)
@pytest.mark.parametrize("order", ["in order", "reversed", "shuffled"])
def test_fragment_and_reassemble(algorithm, order: str) -> None:
    sender, receiver = cipher_pair(*algorithm)
    datagrams = fragments(sender, max_size=548)
    assert len(datagrams) > 5
    messages = [parse_message(d) for d in datagrams]
    for number, (datagram, msg) in enumerate(zip(datagrams, messages), start=1):
        assert len(datagram) <= 548
        skf = msg.encrypted_payload
        assert isinstance(skf, SkfPayload)
        assert (skf.fragment_number, skf.total_fragments) == (number, len(datagrams))
        assert skf.first_inner == (PayloadType.IDi if number == 1 else 0)
        assert msg.header.message_id == 1 and msg.header.next_payload == PayloadType.SKF
    if order == "reversed":
        messages.reverse()
    elif order == "shuffled":
        random.Random(7).shuffle(messages)
    reassembler = Reassembler()
    results = [reassembler.add(m, receiver, now=0.0) for m in messages]
    assert results[:-1] == [None] * (len(messages) - 1)
    whole = results[-1]
    assert whole is not None and whole.protected
    assert whole.payloads == auth_payloads()
    assert whole.raw == datagrams[0]
    assert reassembler.stats.completed == 1 and reassembler.pending_octets == 0


def test_fragment_sizes_are_used_fully() -> None:
    sender, _ = cipher_pair(EncrId.ENCR_AES_CBC, 128, IntegId.AUTH_HMAC_SHA1_96)
    for max_size in range(100, 140):
        size = fragment_content_size(sender, max_size)
        assert 36 + sender.sealed_length(size) <= max_size < 36 + sender.sealed_length(size + 16)
    assert max_ike_message_size(1280, ipv6=True) == 1232
    assert max_ike_message_size(576, ipv6=False, non_esp_marker=True) == 544
    with pytest.raises(ValueError):
        fragment_content_size(sender, 60)


def test_aad_covers_fragment_numbers() -> None:
    sender, receiver = cipher_pair()
    datagrams = fragments(sender)
    forged = bytearray(datagrams[1])
    struct.pack_into("!H", forged, 32, 3)  # claim to be fragment 3
    with pytest.raises(IntegrityError):
        Reassembler().add(parse_message(bytes(forged)), receiver, 0.0)


def test_corrupted_fragment_changes_nothing() -> None:
    sender, receiver = cipher_pair()
    datagrams = fragments(sender)
    reassembler = Reassembler()
    reassembler.add(parse_message(datagrams[0]), receiver, 0.0)
    held = reassembler.pending_octets
    corrupted = bytearray(datagrams[1])
    corrupted[-1] ^= 1
    with pytest.raises(IntegrityError):
        reassembler.add(parse_message(bytes(corrupted)), receiver, 0.0)
    assert reassembler.pending_octets == held
    # a forged higher total with a bad ICV must not reset the collection either
    forged = bytearray(datagrams[1])
    struct.pack_into("!H", forged, 34, 200)
    with pytest.raises(ProtocolError):
        reassembler.add(parse_message(bytes(forged)), receiver, 0.0)
    assert reassembler.pending_octets == held
    results = [reassembler.add(parse_message(d), receiver, 0.0) for d in datagrams[1:]]
    assert results[-1] is not None


def test_duplicates_ignored() -> None:
    sender, receiver = cipher_pair()
    datagrams = fragments(sender)
    reassembler = Reassembler()
    assert reassembler.add(parse_message(datagrams[0]), receiver, 0.0) is None
    assert reassembler.add(parse_message(datagrams[0]), receiver, 0.0) is None
    assert reassembler.stats.duplicates == 1
    results = [reassembler.add(parse_message(d), receiver, 0.0) for d in datagrams[1:]]
    assert results[-1] is not None and results[-1].payloads == auth_payloads()


@pytest.mark.parametrize("number,total", [(0, 3), (4, 3), (1, 0)])
def test_fragment_numbering_out_of_range(number: int, total: int) -> None:
    sender, receiver = cipher_pair()
    datagram = bytearray(fragments(sender)[0])
    struct.pack_into("!HH", datagram, 32, number, total)
    with pytest.raises(ProtocolError) as info:
        parse_message(bytes(datagram))
    assert info.value.notify == NotifyType.INVALID_SYNTAX
    # and the reassembler refuses them on its own too (silently: notify None)
    msg = parse_message(fragments(sender)[0])
    msg.payloads[-1] = SkfPayload(PayloadType.IDi, number, total, b"")
    with pytest.raises(ProtocolError) as info:
        Reassembler().add(msg, receiver, 0.0)
    assert info.value.notify is None


def test_higher_total_restarts_lower_total_ignored() -> None:
    sender, receiver = cipher_pair()
    coarse = fragments(sender, max_size=1200)  # 3 fragments
    fine = fragments(sender, max_size=500)  # more fragments of the same message
    assert len(fine) > len(coarse)
    reassembler = Reassembler()
    for datagram in coarse[:-1]:
        assert reassembler.add(parse_message(datagram), receiver, 0.0) is None
    # the sender lowered its fragment size (RFC 7383 sec. 2.6.1): start again
    assert reassembler.add(parse_message(fine[0]), receiver, 0.0) is None
    assert reassembler.stats.restarted == 1
    # the last coarse fragment (a lower total) is ignored now
    with pytest.raises(ProtocolError) as info:
        reassembler.add(parse_message(coarse[-1]), receiver, 0.0)
    assert info.value.notify is None
    results = [reassembler.add(parse_message(d), receiver, 0.0) for d in fine[1:]]
    assert results[-1] is not None and results[-1].payloads == auth_payloads()


def test_too_many_fragments_refused() -> None:
    sender, receiver = cipher_pair()
    datagrams = fragments(sender, max_size=100, cert_size=4000)
    assert len(datagrams) > 64
    with pytest.raises(ProtocolError) as info:
        Reassembler(max_fragments=64).add(parse_message(datagrams[0]), receiver, 0.0)
    assert info.value.notify is None


def test_memory_bound() -> None:
    sender, receiver = cipher_pair()
    datagrams = fragments(sender, max_size=500, cert_size=3000)
    reassembler = Reassembler(max_bytes=1000)
    with pytest.raises(ProtocolError):
        for datagram in datagrams:
            reassembler.add(parse_message(datagram), receiver, 0.0)
    assert reassembler.pending_octets == 0
    assert reassembler.stats.refused == 1


def test_timeout_drops_partial_message() -> None:
    sender, receiver = cipher_pair()
    datagrams = fragments(sender)
    reassembler = Reassembler(timeout=30.0)
    reassembler.add(parse_message(datagrams[0]), receiver, now=0.0)
    assert reassembler.expire(now=10.0) == 0
    assert reassembler.expire(now=30.5) == 1
    assert reassembler.pending_octets == 0
    # fragment 1 is gone: the rest alone never completes
    results = [reassembler.add(parse_message(d), receiver, now=31.0) for d in datagrams[1:]]
    assert results == [None] * (len(datagrams) - 1)


def test_message_ids_and_directions() -> None:
    sender, receiver = cipher_pair()
    old, new = fragments(sender, message_id=1), fragments(sender, message_id=2)
    response = fragments(sender, message_id=7, response=True)
    reassembler = Reassembler()
    reassembler.add(parse_message(old[0]), receiver, 0.0)
    reassembler.add(parse_message(new[0]), receiver, 0.0)  # newer Message ID replaces
    with pytest.raises(ProtocolError):
        reassembler.add(parse_message(old[1]), receiver, 0.0)
    # a response is collected at the same time as a request
    for datagram in response[:-1]:
        assert reassembler.add(parse_message(datagram), receiver, 0.0) is None
    results = [reassembler.add(parse_message(d), receiver, 0.0) for d in new[1:]]
    assert results[-1] is not None and results[-1].header.message_id == 2
    whole = reassembler.add(parse_message(response[-1]), receiver, 0.0)
    assert whole is not None and whole.header.response and whole.header.message_id == 7


def test_fragments_use_distinct_ivs_and_explicit_ivs() -> None:
    sender, _ = cipher_pair()
    datagrams = fragments(sender)
    ivs = {d[36:44] for d in datagrams}
    assert len(ivs) == len(datagrams)
    sender2, _ = cipher_pair()
    explicit = [i.to_bytes(8, "big") for i in range(100, 100 + len(datagrams))]
    again = serialize_fragments(header(), auth_payloads(), sender2, 500, ivs=explicit)
    assert [d[36:44] for d in again] == explicit
    with pytest.raises(ValueError):
        serialize_fragments(header(), auth_payloads(), sender2, 500, ivs=explicit[:1])
