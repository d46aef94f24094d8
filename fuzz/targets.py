"""Fuzz targets: one function per component, each taking arbitrary octets.

The invariant every target checks (issue 8, h11's rule): for any input the component either
accepts it or rejects it through its one typed error or defined reaction
(:class:`ikev2.errors.ProtocolError`, :class:`esp.errors.EspDrop`,
:class:`aioipsec.config.ConfigError`); any other exception escapes the target and is a
finding. Targets also check cheap properties that must hold on acceptance (round trips,
bounded reassembly buffers, the replay window untouched by a packet that failed its ICV).

The same functions run under atheris (``python -m fuzz.run``, coverage-guided, long runs)
and under hypothesis (``tests/hardening/test_fuzz_targets.py``, short runs in ``make test``).
Inputs are plain bytes so that libFuzzer's mutations, hypothesis' ``st.binary()`` and the
seed corpus (``fuzz/corpus/<target>/``) share one format; structured targets read their
leading octets as choices (documented on each target).

No target reads a clock, touches the network or writes outside a private temporary
directory (the configuration loaders need a file). Everything a target calls is imported
at the top of this module, so that ``fuzz.run`` instruments it for coverage.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import os
import socket
import struct
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.x509.oid import NameOID

from aioipsec.config import ConfigError, load_configuration, to_engine_configs
from aioipsec.config.swanctl import load_swanctl, parse_settings_text
from aioipsec.updown_env import UpdownCall, build_environment, subnet_of
from aioipsec.vici.codec import FrameBuffer, ViciError, decode_packet, encode_packet
from esp.errors import DropReason, EspDrop
from esp.sa import EspSa
from ikev2.config import AuthConfig, ChildConfig, IkeConfig
from ikev2.cp import ConfigAttributes
from ikev2.crypto.sk import AeadSkCipher, make_sk_cipher
from ikev2.dispatcher import Dispatcher
from ikev2.eap.md5 import Md5Peer, Md5Server
from ikev2.eap.mschapv2 import MsChapV2Peer, MsChapV2Server
from ikev2.eap.packet import EapPacket
from ikev2.eap.session import EapAuthenticator, EapPeer
from ikev2.eap.tls import EapTlsPeer, EapTlsServer, TlsCredentials
from ikev2.eap.ttls import AVP_EAP_MESSAGE, Avp, EapTtlsPeer, EapTtlsServer, eap_from_avps
from ikev2.enums import EapCode, EapType, EncrId, ExchangeType, IntegId, NotifyType, PayloadType
from ikev2.errors import ProtocolError
from ikev2.fragments import Reassembler
from ikev2.message import (
    IKE_HEADER_SIZE,
    IkeHeader,
    decrypt_message,
    parse_message,
    parse_payload_chain,
    serialize_message,
    serialize_payload_chain,
)
from ikev2.payloads import KNOWN_PAYLOAD_TYPES, NotifyPayload, parse_payload_body
from ikev2.redirect import RedirectData, RedirectedFromData
from ikev2.ts_range import TrafficSelectorRange
from nat_t.demux import Udp4500Kind, classify, demux, esp_spi

Target = Callable[[bytes], None]

SPI_I = bytes.fromhex("a1a2a3a4a5a6a7a8")
SPI_R = bytes.fromhex("b1b2b3b4b5b6b7b8")
# Fixed keys: the fuzzer must get past the ICV, so it encrypts with the key it decrypts with.
SK_E_GCM = bytes(range(32)) + b"salt"  # AES-256-GCM-16 key || 4-octet salt
SK_E_CBC = bytes(range(100, 132))  # AES-256-CBC
SK_A_SHA256 = bytes(range(200, 232))  # HMAC-SHA2-256-128
ESP_SPI = 0xC0DE0001
ESP_KEY = bytes(range(64, 96)) + b"\x01\x02\x03\x04"  # RFC 4106: key || 4-octet salt

PAYLOAD_TYPES = sorted(int(t) for t in KNOWN_PAYLOAD_TYPES)
FIRST_INNER_TYPES = [*PAYLOAD_TYPES, 0, 1, 13, 49, 127, 128, 255]


def _u8(data: bytes, index: int) -> int:
    return data[index] if index < len(data) else 0


# --------------------------------------------------------------------------- IKE parsers


def ike_message(data: bytes) -> None:
    """The whole-message parser (``parse_message``), as the daemon calls it on port 500.

    Accepted messages must serialize again without error: a parsed message is something
    the engine will hold and may echo (e.g. in a response cache)."""
    try:
        msg = parse_message(data)
    except ProtocolError:
        return
    assert msg.header.length == len(data)
    if msg.encrypted_payload is None:
        # In clear: our own serializer must be able to write back what we accepted.
        again = parse_message(serialize_message(msg.header, msg.payloads))
        assert again.header.exchange == msg.header.exchange
        assert len(again.payloads) == len(msg.payloads)


def ike_payload(data: bytes) -> None:
    """One payload body: octet 0 picks the payload type (every type we parse), octet 1 the
    Next Payload given to SK/SKF, the rest is the body. An accepted payload re-serializes,
    and parsing that again gives the same payload (``parse . serialize`` is the identity
    on what ``parse`` accepts)."""
    if len(data) < 2:
        return
    payload_type = PAYLOAD_TYPES[data[0] % len(PAYLOAD_TYPES)]
    next_payload = data[1]
    body = data[2:]
    try:
        payload = parse_payload_body(payload_type, body, next_payload)
    except ProtocolError:
        return
    wire = payload.serialize()
    assert parse_payload_body(payload_type, wire, next_payload) == payload, payload


def cp_attributes(data: bytes) -> None:
    """A CP payload body (RFC 7296 sec. 3.15) decoded into typed attributes (``ikev2.cp``),
    as the gateway reads a CFG_REQUEST and the client a CFG_REPLY. What is accepted encodes
    again into something that decodes to the same values, and describes itself for a log."""
    try:
        decoded = ConfigAttributes.parse(data)
    except ProtocolError:
        return
    assert ConfigAttributes.from_payload(decoded.to_payload()) == decoded
    assert len(decoded.describe()) >= len(decoded.requested)


def _records(data: bytes) -> Iterator[bytes]:
    """Length-prefixed records: a 2-octet big-endian length, then that many octets."""
    offset = 0
    while offset + 2 <= len(data):
        (length,) = struct.unpack_from("!H", data, offset)
        yield data[offset + 2 : offset + 2 + length]
        offset += 2 + length


def _fixed_random(n: int) -> bytes:
    return bytes(range(1, n + 1))


EAP_SECRETS = {"carol": "Ar3etTnp"}


def _md5_used(used: list[EapType], factory: Callable[..., Any]) -> Callable[..., Any]:
    """The factory, noting that EAP-MD5 (the one method without an MSK) was chosen."""

    def made(*args: Any) -> Any:
        used.append(EapType.MD5_CHALLENGE)
        return factory(*args)

    return made


def eap_methods(data: bytes) -> None:
    """EAP conversations (RFC 3748, EAP-Identity, Nak, EAP-MSCHAPv2, EAP-MD5) in both roles,
    and EAP-TTLS's AVPs (RFC 5281 sec. 10). Octet 0 modulo 4: 0, the gateway
    (``EapAuthenticator``, MSCHAPv2 proposed, MD5 after a Nak) gets the records as the
    peer's Responses; 2, the same with MD5 proposed first (eap-dynamic's other order); 1,
    the road warrior (``EapPeer``, both methods) gets them as the gateway's Requests; 3,
    the rest is EAP-TTLS phase-2 data, decoded to its EAP-Message AVP. The records are
    2-octet-length-prefixed EAP packets. Any input ends in EapError (a ProtocolError) or a
    next packet; success needs the password, so a success without an MSK only comes after
    EAP-MD5 (whose AUTH is keyed with SK_pi/SK_pr)."""
    if not data:
        return
    records = _records(data[1:])
    used: list[EapType] = []
    mode = data[0] % 4
    if mode in (0, 2):
        mschapv2 = lambda _: MsChapV2Server(EAP_SECRETS.get, random=_fixed_random)  # noqa: E731
        md5 = _md5_used(used, lambda identity: Md5Server(identity, EAP_SECRETS.get, _fixed_random))
        methods: dict[EapType, Callable[[str], Any]] = {
            EapType.MSCHAPV2: mschapv2,
            EapType.MD5_CHALLENGE: md5,
        }
        if mode == 2:
            methods = dict(reversed(methods.items()))
        server = EapAuthenticator(methods, random=_fixed_random)
        server.start()
        try:
            for record in records:
                answer = server.process(record)
                assert answer.serialize()
        except ProtocolError:
            return
        assert server.msk is None or server.succeeded
        assert not server.succeeded or server.msk is not None or used
    elif mode == 1:
        peer = EapPeer(
            "carol",
            {
                EapType.MSCHAPV2: lambda: MsChapV2Peer("carol", "Ar3etTnp", _fixed_random),
                EapType.MD5_CHALLENGE: _md5_used(used, lambda: Md5Peer("Ar3etTnp")),
            },
        )
        try:
            for record in records:
                response = peer.process(record)
                if response is not None:
                    assert response.serialize()
        except ProtocolError:
            return
        assert not peer.succeeded or peer.msk is not None or used
    else:
        try:
            inner = eap_from_avps(data[1:])
        except ProtocolError:
            return
        # What was accepted is carried again in an AVP that decodes to the same packet.
        assert eap_from_avps(Avp(AVP_EAP_MESSAGE, inner).serialize()) == inner


# A fixed instant for certificate validity: a target never reads the clock.
_TLS_NOW = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC).timestamp()


@functools.cache
def _tls_credentials() -> TlsCredentials:
    """One self-signed P-256 certificate (made once; a CA of itself), for both roles."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fuzz.example")])
    start = datetime.datetime(2029, 1, 1, tzinfo=datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("fuzz.example")]), False)
        .sign(key, hashes.SHA256())
    )
    return TlsCredentials([cert], key, [cert])


def _ttls_phase2() -> dict[EapType, Any]:
    return {EapType.MD5_CHALLENGE: lambda i: Md5Server(i, EAP_SECRETS.get, _fixed_random)}


def eap_tls(data: bytes) -> None:
    """EAP-TLS (RFC 5216) and EAP-TTLS (RFC 5281) in both roles with OpenSSL behind them.
    Octet 0 modulo 4: 0, the EAP-TLS gateway (``EapTlsServer`` after its Start) gets the
    records as EAP-TLS Type-Data of Responses; 1, the EAP-TLS client (``EapTlsPeer``) gets
    them as Requests; 2 and 3, the same for EAP-TTLS (``EapTtlsServer`` with an inner
    EAP-MD5, ``EapTtlsPeer``): the version bits, the tunnel and its AVPs. Records as in
    eap_methods. Any input ends in EapError or a next packet; nothing succeeds without a
    real handshake."""
    if not data:
        return
    credentials = _tls_credentials()
    ttls = data[0] % 4 >= 2
    method = EapType.TTLS if ttls else EapType.TLS
    try:
        if data[0] % 2 == 0:
            server: EapTlsServer | EapTtlsServer = (
                EapTtlsServer(credentials, _TLS_NOW, _ttls_phase2())
                if ttls
                else EapTlsServer("fuzz.example", credentials, _TLS_NOW)
            )
            identifier = server.start(1).identifier
            for record in _records(data[1:]):
                packet = EapPacket(EapCode.RESPONSE, identifier, method, record)
                identifier = (identifier + 1) & 0xFF
                if server.process(packet, identifier) is None:
                    break
            assert server.msk is None or server.succeeded
        else:
            peer: EapTlsPeer | EapTtlsPeer = (
                EapTtlsPeer(
                    credentials, _TLS_NOW, "carol", {EapType.MD5_CHALLENGE: lambda: Md5Peer("x")},
                    "fuzz.example",
                )
                if ttls
                else EapTlsPeer(credentials, _TLS_NOW, "fuzz.example")
            )  # fmt: skip
            for number, record in enumerate(_records(data[1:])):
                packet = EapPacket(EapCode.REQUEST, number & 0xFF, method, record)
                assert peer.process(packet).serialize()
            # EAP-TTLS has its keys once the tunnel is up, before phase 2 is over.
            assert peer.msk is None or (peer.handshake_done if ttls else peer.succeeded)
    except ProtocolError:
        return


# --------------------------------------------------------------------------- SK with keys


def _gcm_cipher() -> AeadSkCipher:
    cipher = make_sk_cipher(EncrId.ENCR_AES_GCM_16, 256, None, SK_E_GCM, None)
    assert isinstance(cipher, AeadSkCipher)
    return cipher


def _cbc_cipher() -> Any:
    return make_sk_cipher(
        EncrId.ENCR_AES_CBC, 256, IntegId.AUTH_HMAC_SHA2_256_128, SK_E_CBC, SK_A_SHA256
    )


def _header(exchange: int, message_id: int, next_payload: int, length: int) -> bytes:
    header = IkeHeader(
        spi_i=SPI_I,
        spi_r=SPI_R,
        next_payload=next_payload,
        exchange=exchange,
        initiator=True,
        message_id=message_id,
        length=length,
    )
    return header.serialize()


def sk_payload(data: bytes) -> None:
    """SK decryption and the inner payload chain, with valid keys (past the ICV).

    Octet 0: the first inner payload type; octet 1: the cipher (even: AES-GCM-16 with the
    fuzzer's own padding, so Pad Length may exceed the plaintext; odd: AES-CBC +
    HMAC-SHA2-256, padded by us); octets 2..: the plaintext. The message is sealed
    exactly as a peer would, then parsed and decrypted as the engine does; a wrong key
    must fail with the silent-drop error, never decrypt."""
    first_inner = FIRST_INNER_TYPES[_u8(data, 0) % len(FIRST_INNER_TYPES)]
    use_cbc = _u8(data, 1) & 1
    plaintext = data[2:]
    cipher = _cbc_cipher() if use_cbc else _gcm_cipher()
    iv = bytes(cipher.iv_size)
    if use_cbc:
        sealed_length = cipher.sealed_length(len(plaintext))
    else:
        # Our plaintext carries its own Pad Length octet (RFC 7296 sec. 3.14).
        sealed_length = cipher.iv_size + len(plaintext) + cipher.icv_size
    sk_length = 4 + sealed_length
    if IKE_HEADER_SIZE + sk_length > 0xFFFF:
        return
    aad = _header(ExchangeType.IKE_AUTH, 1, PayloadType.SK, IKE_HEADER_SIZE + sk_length)
    aad += struct.pack("!BBH", first_inner, 0, sk_length)
    if use_cbc:
        wire = aad + cipher.seal(aad, plaintext, iv)
    else:
        wire = aad + iv + cipher.encrypt(iv, plaintext, aad)
    try:
        msg = parse_message(wire)
    except ProtocolError:
        return
    assert msg.encrypted_payload is not None and not msg.is_fragment
    try:
        inner = decrypt_message(msg, cipher)
    except ProtocolError as error:
        # Only an AEAD body with no room for the Pad Length octet may fail as "integrity".
        assert error.notify is not None or not plaintext, f"valid ICV failed: {error}"
        return
    assert inner.protected
    # The inner chain round-trips through our serializer.
    chain = serialize_payload_chain(inner.payloads)
    first = int(inner.payloads[0].TYPE) if inner.payloads else 0
    again, _ = parse_payload_chain(chain, first, inside_sk=True)
    assert len(again) == len(inner.payloads)
    # The same message under another key is an integrity failure (silent drop).
    other = _gcm_cipher() if use_cbc else _cbc_cipher()
    with contextlib.suppress(ProtocolError):
        decrypt_message(msg, other)
        raise AssertionError("decrypted under the wrong key")


# --------------------------------------------------------------------------- fragments

_FRAGMENT_HEADER = struct.Struct("!BBBBB")
_MAX_FRAGMENT_RECORDS = 64


def _fragment_records(data: bytes) -> Iterator[tuple[int, int, int, int, bytes]]:
    offset = 0
    for _ in range(_MAX_FRAGMENT_RECORDS):
        if offset + _FRAGMENT_HEADER.size > len(data):
            return
        msgid, number, total, flags, size = _FRAGMENT_HEADER.unpack_from(data, offset)
        offset += _FRAGMENT_HEADER.size
        chunk = data[offset : offset + size]
        offset += size
        yield msgid, number, total, flags, chunk


def fragments(data: bytes) -> None:
    """IKE fragment reassembly (RFC 7383) with valid keys.

    The input is a sequence of 5-octet records ``message id, fragment number, total,
    flags, length`` each followed by ``length`` octets of fragment content. Flags: bit 0
    response, bit 1 advance the clock by 40 s (past the reassembly timeout), bit 2
    INFORMATIONAL instead of IKE_AUTH, bit 3 corrupt the ICV, bit 4 first inner = IDi.
    Every record becomes a real SKF message sealed with the peer's key; the reassembler
    must accept, wait, drop or refuse it, hold at most its configured bytes per direction,
    and give back exactly the chunks it was given once a message completes."""
    cipher = _gcm_cipher()
    reassembler = Reassembler()
    now = 0.0
    for msgid, number, total, flags, chunk in _fragment_records(data):
        response = bool(flags & 1)
        if flags & 2:
            now += 40.0
        exchange = ExchangeType.INFORMATIONAL if flags & 4 else ExchangeType.IKE_AUTH
        first_inner = PayloadType.IDi if flags & 16 else PayloadType.NOTIFY
        sealed = cipher.sealed_length(len(chunk))
        skf_length = 4 + 4 + sealed
        header = IkeHeader(
            spi_i=SPI_I,
            spi_r=SPI_R,
            next_payload=PayloadType.SKF,
            exchange=exchange,
            initiator=not response,
            response=response,
            message_id=msgid,
            length=IKE_HEADER_SIZE + skf_length,
        ).serialize()
        aad = header + struct.pack(
            "!BBHHH", first_inner if number == 1 else 0, 0, skf_length, number, total
        )
        body = cipher.seal(aad, chunk)
        if flags & 8:
            body = body[:-1] + bytes([body[-1] ^ 0x80])
        try:
            msg = parse_message(aad + body)
        except ProtocolError:
            continue
        try:
            complete = reassembler.add(msg, cipher, now)
        except ProtocolError:
            continue
        finally:
            assert reassembler.pending_octets <= 2 * reassembler.max_bytes
        if complete is not None:
            assert complete.protected
            assert complete.header.message_id == msgid


# --------------------------------------------------------------------------- ESP


def _esp_sa() -> EspSa:
    return EspSa(ESP_SPI, "in", EncrId.ENCR_AES_GCM_16, ESP_KEY, replay_window=64)


def _esp_gcm_packet(seq: int, plaintext: bytes, iv: bytes) -> bytes:
    """RFC 4106 by hand (an encoder that is not ours): SPI || Seq || IV || C || ICV."""
    head = struct.pack("!II", ESP_SPI, seq)
    nonce = ESP_KEY[32:] + iv
    return head + iv + AESGCM(ESP_KEY[:32]).encrypt(nonce, plaintext, head)


def esp_decap(data: bytes) -> None:
    """The inbound ESP path (``EspSa.decrypt_into``, as the daemon's data path calls it).

    Octet 0 picks the mode: 0 raw octets as a packet; 1 a packet encrypted with the SA's
    key from octets 1-4 (sequence number), 5 (next header), 6 (pad length), 7 (bit 0:
    padding 1, 2, 3... or the fuzzer's octets) and the payload after them, so the trailer
    checks (RFC 4303 sec. 2.4-2.6) see every pad length and next header; 2 such a packet
    with one octet changed (octet 8 chooses which): it must be dropped and must not move
    the replay window (sec. 3.4.3)."""
    if not data:
        return
    mode = data[0] % 3
    sa = _esp_sa()
    out = bytearray(len(data) + 64)
    if mode == 0:
        packet = data[1:]
        try:
            length = sa.decrypt_into(packet, out)
        except EspDrop:
            return
        raise AssertionError(f"random octets decrypted ({length} octets)")
    seq = int.from_bytes(data[1:5].ljust(4, b"\0"), "big")
    next_header, pad_len, style = _u8(data, 5), _u8(data, 6), _u8(data, 7)
    where = _u8(data, 8)
    payload = data[9:]
    pad = bytes(range(1, pad_len + 1)) if style & 1 == 0 else payload[:pad_len].ljust(pad_len)
    plaintext = payload + pad + bytes((pad_len, next_header))
    packet = bytearray(_esp_gcm_packet(seq, plaintext, data[1:9].ljust(8, b"\0")))
    highest = sa.replay.highest
    if mode == 2:
        # Not the SPI: the data path chose this SA by it, and the SA authenticates its own.
        packet[4 + where % (len(packet) - 4)] ^= 0x01
        try:
            sa.decrypt_into(packet, out)
        except EspDrop:
            assert sa.replay.highest == highest, "replay window moved before the ICV check"
            return
        raise AssertionError("a changed packet was accepted")
    try:
        length = sa.decrypt_into(packet, out)
    except EspDrop as drop:
        assert drop.reason is not DropReason.ICV_FAILURE, "our own packet failed its ICV"
        return
    assert 0 <= length <= len(payload)
    assert sa.packets_in == 1


# --------------------------------------------------------------------------- port 4500


def udp4500(data: bytes) -> None:
    """The port-4500 demultiplexer (RFC 3948 sec. 2.2) and what follows it: IKE behind the
    non-ESP marker to the message parser, ESP to the SA lookup and decryption, keepalives
    counted. Checks the classification against the RFC's rules written out here."""
    kind = classify(data)
    same_kind, rest = demux(data)
    assert same_kind is kind
    if len(data) > 4 and data[:4] == b"\0\0\0\0":
        expected = Udp4500Kind.IKE
    elif data == b"\xff":
        expected = Udp4500Kind.KEEPALIVE
    elif len(data) >= 8 and data[:4] != b"\0\0\0\0":
        expected = Udp4500Kind.ESP
    else:
        expected = Udp4500Kind.INVALID
    assert kind is expected, (kind, expected)
    if kind is Udp4500Kind.IKE:
        assert bytes(rest) == data[4:]
        with contextlib.suppress(ProtocolError):
            parse_message(rest)
    elif kind is Udp4500Kind.ESP:
        assert bytes(rest) == data
        if esp_spi(rest) == ESP_SPI:
            with contextlib.suppress(EspDrop):
                _esp_sa().decrypt_into(rest, bytearray(len(data)))
    else:
        assert len(rest) == 0


# --------------------------------------------------------------------------- the engine


class _EnginePair:
    """Two real dispatchers with an established IKE SA (in memory, fixed randomness);
    the fuzzer speaks as A with A's keys, B must answer or drop."""

    def __init__(self) -> None:
        import random

        def config(local: str, remote: str, me: str, peer: str, mine: str, theirs: str):
            return IkeConfig(
                name="conn",
                local_addrs=[local],
                remote_addrs=[remote],
                local=AuthConfig(auth="psk", id=me),
                remote=AuthConfig(auth="psk", id=peer),
                children=[ChildConfig(name="net", local_ts=[mine], remote_ts=[theirs])],
            )

        psk = b"fuzzing pre-shared key, longer than twenty octets"
        self.addr_a, self.addr_b = ("192.0.2.1", 500), ("192.0.2.2", 500)
        rng_a, rng_b = random.Random(1), random.Random(2)
        self.a = Dispatcher(
            [config("192.0.2.1", "192.0.2.2", "a.example", "b.example", "10.1.0.0/16",
                    "10.2.0.0/16")],
            lambda local, remote: psk,
            rng=rng_a.randbytes,
        )  # fmt: skip
        self.b = Dispatcher(
            [config("192.0.2.2", "192.0.2.1", "b.example", "a.example", "10.2.0.0/16",
                    "10.1.0.0/16")],
            lambda local, remote: psk,
            rng=rng_b.randbytes,
        )  # fmt: skip
        self.now = 0.0
        self.ike_sa_id = self.a.initiate("conn", "net", now=self.now)
        for _ in range(20):
            moved = False
            for datagram in self.a.datagrams_to_send(self.now):
                self.b.receive_datagram(datagram.data, self.addr_a, self.addr_b, self.now)
                moved = True
            for datagram in self.b.datagrams_to_send(self.now):
                self.a.receive_datagram(datagram.data, self.addr_b, self.addr_a, self.now)
                moved = True
            if not moved:
                break
        self.sa_a = self.a.ike_sa(self.ike_sa_id)
        assert self.sa_a.cipher_out is not None, "the fuzzing pair did not establish"
        self.uses = 0


_engine: _EnginePair | None = None
_ENGINE_EXCHANGES = [
    ExchangeType.CREATE_CHILD_SA,
    ExchangeType.INFORMATIONAL,
    ExchangeType.IKE_AUTH,
    ExchangeType.IKE_SA_INIT,
    ExchangeType.IKE_INTERMEDIATE,
]


def engine_sk(data: bytes) -> None:
    """An established responder receiving authenticated requests with fuzzed content.

    Octet 0 picks the exchange, octet 1 the first inner payload type, octet 2 bit 0 sends
    it as a response instead; the rest is the inner payload chain, sealed with the peer's
    real SK keys and the next Message ID, so it reaches the exchange handlers. The engine
    must never let another exception out (its ``internal_error`` counter stays 0). The
    pair is rebuilt every 200 inputs to keep its state (and memory) bounded."""
    global _engine
    if _engine is None or _engine.uses >= 200:
        _engine = _EnginePair()
    pair = _engine
    pair.uses += 1
    exchange = _ENGINE_EXCHANGES[_u8(data, 0) % len(_ENGINE_EXCHANGES)]
    first_inner = FIRST_INNER_TYPES[_u8(data, 1) % len(FIRST_INNER_TYPES)]
    response = bool(_u8(data, 2) & 1)
    _send_sealed(pair, exchange, first_inner, data[3:], response=response)
    assert pair.b.counters.get("internal_error", 0) == 0, "the engine raised on peer input"


def _send_sealed(
    pair: _EnginePair, exchange: int, first_inner: int, inner: bytes, *, response: bool
) -> None:
    """``inner`` sealed with A's real SK keys under the next Message ID, delivered to B
    (whose output and events are then drained)."""
    sa = pair.sa_a
    cipher = sa.cipher_out
    assert cipher is not None
    sk_length = 4 + cipher.sealed_length(len(inner))
    if IKE_HEADER_SIZE + sk_length > 0xFFFF:
        return
    header = IkeHeader(
        spi_i=sa.spi_i,
        spi_r=sa.spi_r,
        next_payload=PayloadType.SK,
        exchange=exchange,
        initiator=True,
        response=response,
        message_id=sa.next_request_id,
        length=IKE_HEADER_SIZE + sk_length,
    ).serialize()
    aad = header + struct.pack("!BBH", first_inner, 0, sk_length)
    pair.b.receive_datagram(aad + cipher.seal(aad, inner), pair.addr_a, pair.addr_b, pair.now)
    if not response:
        sa.next_request_id += 1
    pair.b.datagrams_to_send(pair.now)
    while pair.b.next_event() is not None:
        pass


def redirect_notify(data: bytes) -> None:
    """REDIRECT / REDIRECTED_FROM notify data (RFC 5685 sec. 8) and the client's handling.

    Octet 0 bit 0 picks the codec (REDIRECT with optional Nonce Data, REDIRECTED_FROM);
    an accepted value round-trips (``parse . serialize`` is the identity on it). With bit 1
    set the rest is also sent, as the data of a REDIRECT notify in an authenticated
    INFORMATIONAL request, to the established engine of :func:`engine_sk`: whatever it
    names, the engine answers or logs, never raises, and the IKE SA it arrived on stays
    (a redirect is followed make-before-break; the new SA never comes up here)."""
    if not data:
        return
    body = data[1:]
    codec = RedirectedFromData if data[0] & 1 else RedirectData
    try:
        parsed = codec.parse(body)
    except ProtocolError:
        pass
    else:
        assert codec.parse(parsed.serialize()) == parsed
        assert len(parsed.gateway.encode()) <= 2 + 255
    if not data[0] & 2:
        return
    global _engine
    if _engine is None or _engine.uses >= 200:
        _engine = _EnginePair()
    pair = _engine
    pair.uses += 1
    inner = serialize_payload_chain([NotifyPayload(notify_type=NotifyType.REDIRECT, data=body)])
    _send_sealed(pair, ExchangeType.INFORMATIONAL, PayloadType.NOTIFY, inner, response=False)
    assert pair.b.counters.get("internal_error", 0) == 0, "the engine raised on a REDIRECT"
    assert any(info.state == "ESTABLISHED" for info in pair.b.sas()), "the tunnel went away"


# --------------------------------------------------------------------------- configuration

_scratch: Path | None = None


def _scratch_file(name: str, text: str) -> Path:
    global _scratch
    if _scratch is None:
        _scratch = Path(tempfile.mkdtemp(prefix="aioipsec-fuzz-"))
    path = _scratch / name
    path.write_text(text, encoding="utf-8")
    os.chmod(path, 0o600)
    return path


@contextlib.contextmanager
def _no_name_resolution() -> Iterator[None]:
    """Configurations may name hosts; a fuzzer must not wait for DNS."""

    def refuse(*args: object, **kwargs: object) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "name resolution disabled while fuzzing")

    original = socket.getaddrinfo
    socket.getaddrinfo = refuse
    try:
        yield
    finally:
        socket.getaddrinfo = original


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace").replace("\0", "")


def swanctl_conf(data: bytes) -> None:
    """strongSwan's swanctl.conf syntax (``parse_settings_text``) and the whole loader
    (``load_swanctl``: sections, references, includes, connection checks): a ``ConfigError``
    naming the file or nothing."""
    text = _text(data)
    try:
        parse_settings_text(text, "fuzz.conf")
    except ConfigError:
        pass
    path = _scratch_file("swanctl.conf", text)
    with _no_name_resolution():
        try:
            load_swanctl(path)
        except ConfigError as error:
            assert str(error)


def toml_config(data: bytes) -> None:
    """The TOML loader (``load_configuration``) and the translation into engine configs:
    a ``ConfigError`` naming the file/key or a configuration the engine accepts."""
    path = _scratch_file("aioipsec.toml", _text(data))
    with _no_name_resolution():
        try:
            configuration = load_configuration(toml_path=path)
            to_engine_configs(configuration)
        except ConfigError as error:
            assert str(error)


def updown_call_octets(
    *,
    up: bool,
    ipv6: bool,
    my: tuple[str, str, int, int, int],
    peer: tuple[str, str, int, int, int],
    me: str,
    them: str,
    texts: tuple[str, str, str] = ("net", "a.example", "b.example"),
    udp_encap: bool = False,
    host_access: bool = False,
) -> bytes:
    """The input of :func:`updown_environment` for one call (make_corpus' seeds)."""
    import ipaddress

    flags = up | ipv6 << 1 | udp_encap << 2 | host_access << 3
    out = bytes([flags, my[2], peer[2]])
    for address in (my[0], my[1], peer[0], peer[1], me, them):
        out += ipaddress.ip_address(address).packed
    out += struct.pack("!4H", my[3], my[4], peer[3], peer[4])
    return out + "\0".join(texts).encode()


def updown_environment(data: bytes) -> None:
    """The updown script's environment (``aioipsec.updown_env.build_environment``) for any
    Child SA the engine could report. Octet 0: flags (1 up, 2 IPv6, 4 UDP encapsulation,
    8 hostaccess, 16 IPComp, 32 AH); octets 1-2: the two selectors' protocols; then six
    addresses (my range, the peer's range, me, the peer; each range put in order), four
    ports (each range in order) and NUL-separated texts (child name, my ID, the peer's ID,
    DNS servers as text that may not be addresses). Nothing but a dict of printable
    strings may come back; MY_CLIENT must hold my selector."""
    import ipaddress

    flags = _u8(data, 0)
    size = 16 if flags & 2 else 4
    body = data[3:]
    need = 6 * size + 8
    body = body + bytes(max(0, need - len(body)))
    raw = [body[i * size : (i + 1) * size] for i in range(6)]
    addresses = [str(ipaddress.ip_address(octets)) for octets in raw]
    ports = struct.unpack("!4H", body[6 * size : 6 * size + 8])
    texts = _text(body[need:]).split("\0")
    texts += [""] * (3 - len(texts))

    def ordered(a: str, b: str) -> tuple[str, str]:
        pair = sorted((ipaddress.ip_address(a), ipaddress.ip_address(b)))
        return str(pair[0]), str(pair[1])

    my_start, my_end = ordered(addresses[0], addresses[1])
    peer_start, peer_end = ordered(addresses[2], addresses[3])
    my_ts = TrafficSelectorRange(my_start, my_end, _u8(data, 1), *sorted(ports[:2]))
    peer_ts = TrafficSelectorRange(peer_start, peer_end, _u8(data, 2), *sorted(ports[2:]))
    dns = []
    for text in texts[3:]:
        with contextlib.suppress(ValueError):
            dns.append(str(ipaddress.ip_address(text)))
    call = UpdownCall(
        up=bool(flags & 1),
        connection=texts[0],
        interface="ipsec0",
        reqid=1,
        protocol="ah" if flags & 32 else "esp",
        unique_id=1,
        me=addresses[4],
        my_id=texts[1],
        peer=addresses[5],
        peer_id=texts[2],
        my_ts=my_ts,
        peer_ts=peer_ts,
        udp_encap_port=4500 if flags & 4 else None,
        ipcomp=bool(flags & 16),
        host_access=bool(flags & 8),
        dns=tuple(dns),
    )
    env = build_environment(call, "/usr/bin:/bin")
    for key, value in env.items():
        assert isinstance(value, str) and value.isprintable(), (key, value)
    assert env["PLUTO_VERB"].split("-")[0] == ("up" if flags & 1 else "down")
    network = ipaddress.ip_network(env["PLUTO_MY_CLIENT"])
    assert env["PLUTO_MY_CLIENT"] == subnet_of(my_ts)
    assert ipaddress.ip_address(my_start) in network and ipaddress.ip_address(my_end) in network


def vici_stream(data: bytes) -> None:
    """What a VICI client sends on the socket (``aioipsec.vici``): the transport framing,
    then each segment's packet and message, as the server reads them. Every input is
    accepted or refused with ``ViciError``; an accepted packet re-encodes to a segment that
    decodes to the same packet (names and values survive the round trip)."""
    frames = FrameBuffer()
    frames.feed(data)
    try:
        for segment in frames:
            try:
                packet = decode_packet(segment)
            except ViciError as error:
                assert str(error)
                continue
            again = encode_packet(packet.type, packet.name, packet.message)
            assert decode_packet(again[4:]) == packet
    except ViciError as error:  # a segment longer than the limit: the stream is dropped
        assert str(error)


TARGETS: dict[str, Target] = {
    "ike_message": ike_message,
    "ike_payload": ike_payload,
    "cp_attributes": cp_attributes,
    "eap_methods": eap_methods,
    "eap_tls": eap_tls,
    "sk_payload": sk_payload,
    "engine_sk": engine_sk,
    "redirect_notify": redirect_notify,
    "fragments": fragments,
    "esp_decap": esp_decap,
    "udp4500": udp4500,
    "swanctl_conf": swanctl_conf,
    "toml_config": toml_config,
    "updown_environment": updown_environment,
    "vici_stream": vici_stream,
}
