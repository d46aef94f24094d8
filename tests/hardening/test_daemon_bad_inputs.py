"""Every class of tests/data/reference/bad-inputs.md sent to the running daemon over a real
socket (UDP 500, UDP 4500, raw ESP), from a hostile host with its own namespace.

For each input the daemon must give the defined reaction (a notify RFC 7296 names, or
silence), keep running, log no internal error, change no state the peer did not
authenticate, and still serve a legitimate peer afterwards. The hostile messages are
built from what our engine sends (so they carry valid keys where the class needs them)
and changed on the way; the reactions are read from the wire and from the daemon's
listings and counters (``stats``).
"""

from __future__ import annotations

import dataclasses
import socket
import struct
import time
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from esp.sa import EspSa
from ikev2.enums import ExchangeType, NotifyType, PayloadType, ProtocolId
from ikev2.message import IkeMessage, decrypt_message, parse_message, serialize_message
from ikev2.payloads import KePayload, NotifyPayload, SaPayload, UnknownPayload
from ikev2.proposals import parse_proposals
from tests.e2e.helpers import assert_ping

from .lab import (
    EVIL_INNER,
    GW_EVIL_SIDE,
    GW_INNER,
    PEER_INNER,
    Hosts,
    Prober,
    daemon_healthy,
    raw_socket,
)

pytestmark = [pytest.mark.netns]

IKE_AUTH = ExchangeType.IKE_AUTH


@pytest.fixture(scope="module")
def gw(module_hosts: Hosts):
    return module_hosts.gw()


@pytest.fixture
def prober(module_hosts: Hosts, gw):
    prober = Prober(module_hosts.evil_ns)
    yield prober
    prober.close()
    # Whatever the test did, the daemon is healthy afterwards.
    daemon_healthy(gw)


def first_request(prober: Prober) -> bytes:
    """The IKE_SA_INIT request our engine would send (not sent)."""
    captured: list[bytes] = []
    prober.hook = lambda data: captured.append(data) or []
    prober.initiate()
    prober.run(lambda: bool(captured), timeout=5)
    prober.hook = None
    return captured[0]


def notify_types(data: bytes, cipher=None) -> set[int]:
    msg = parse_message(data)
    if cipher is not None and msg.encrypted_payload is not None:
        msg = decrypt_message(msg, cipher)
    return {int(n.notify_type) for n in msg.notifies()}


def reply_to(prober: Prober, data: bytes, timeout: float = 1.5) -> list[bytes]:
    """What the daemon sends back: nothing within TIMEOUT (silence), or the first answer
    and whatever follows it within 0.5 s (a responder answers a request once, RFC 7296
    sec. 2.1: a second answer would arrive right behind the first)."""
    prober.send_raw(data)
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        replies = prober.receive(min(remaining, 0.05))
        if replies:
            return replies + prober.receive(0.5)
    return []


def rewrite(data: bytes, change: Callable[[IkeMessage], list]) -> bytes:
    msg = parse_message(data)
    return serialize_message(msg.header, change(msg))


# --------------------------------------------------------------------------- IKE_SA_INIT


def _set_ke(group: int | None = None, data: bytes | None = None):
    def change(msg: IkeMessage) -> list:
        out = []
        for payload in msg.payloads:
            if isinstance(payload, KePayload):
                payload = dataclasses.replace(
                    payload,
                    group=payload.group if group is None else group,
                    data=payload.data if data is None else data,
                )
            out.append(payload)
        return out

    return change


def _weak_proposals(msg: IkeMessage) -> list:
    weak = parse_proposals(["3des-md5-modp1024"], ProtocolId.IKE)
    return [SaPayload(proposals=weak) if isinstance(p, SaPayload) else p for p in msg.payloads]


def _critical_unknown(payload_type: int) -> Callable[[IkeMessage], list]:
    def change(msg: IkeMessage) -> list:
        unknown = UnknownPayload(payload_type=payload_type, critical=True, body=b"abcd")
        return [*msg.payloads, unknown]

    return change


def _raw_length(delta: int) -> Callable[[bytes], bytes]:
    def change(data: bytes) -> bytes:
        return data[:24] + struct.pack("!I", len(data) + delta) + data[28:]

    return change


def _first_payload_length(delta: int) -> Callable[[bytes], bytes]:
    def change(data: bytes) -> bytes:
        (length,) = struct.unpack_from("!H", data, 30)
        return data[:30] + struct.pack("!H", (length + delta) & 0xFFFF) + data[32:]

    return change


SILENT = "silent"
INIT_CASES: list[tuple[str, Callable[[bytes], bytes], set]] = [
    # Message length shorter/longer than the datagram: not an IKE message, drop.
    ("length-short", _raw_length(-1), {SILENT}),
    ("length-long", _raw_length(+1), {SILENT}),
    ("payload-length-short", _first_payload_length(-3), {SILENT, NotifyType.INVALID_SYNTAX}),
    ("payload-length-long", _first_payload_length(+400), {SILENT, NotifyType.INVALID_SYNTAX}),
    ("zero-spi-i", lambda d: bytes(8) + d[8:], {SILENT}),
    (
        "ikev1-major",
        lambda d: d[:17] + b"\x10" + d[18:],
        {SILENT, NotifyType.INVALID_MAJOR_VERSION},
    ),
    (
        "critical-unknown-payload",
        lambda d: rewrite(d, _critical_unknown(200)),
        {NotifyType.UNSUPPORTED_CRITICAL_PAYLOAD},
    ),
    (
        "ikev1-payload-type-critical",  # strongSwan CVE-2015-3991: type 1 (IKEv1 SA)
        lambda d: rewrite(d, _critical_unknown(1)),
        {NotifyType.UNSUPPORTED_CRITICAL_PAYLOAD},
    ),
    ("ke-group-1025", lambda d: rewrite(d, _set_ke(group=1025)), {NotifyType.INVALID_KE_PAYLOAD}),
    (
        "ke-wrong-length",
        lambda d: rewrite(d, _set_ke(data=bytes(range(31)))),
        {NotifyType.INVALID_SYNTAX, NotifyType.INVALID_KE_PAYLOAD, NotifyType.NO_PROPOSAL_CHOSEN},
    ),
    (
        "ke-identity-point",  # x25519 all-zero public value: an all-zero shared secret
        lambda d: rewrite(d, _set_ke(data=bytes(32))),
        {
            SILENT,
            NotifyType.INVALID_SYNTAX,
            NotifyType.INVALID_KE_PAYLOAD,
            NotifyType.NO_PROPOSAL_CHOSEN,
        },
    ),
    ("weak-only-proposals", lambda d: rewrite(d, _weak_proposals), {NotifyType.NO_PROPOSAL_CHOSEN}),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name,change,allowed", INIT_CASES, ids=[c[0] for c in INIT_CASES])
def test_bad_ike_sa_init(gw, prober: Prober, name, change, allowed) -> None:
    """Bad IKE_SA_INIT requests get the RFC's notify or silence, never an SA."""
    sas_before = gw.call("sas")
    replies = reply_to(prober, change(first_request(prober)))
    if not replies:
        assert SILENT in allowed, f"{name}: no answer, expected one of {allowed}"
    for data in replies:
        msg = parse_message(data)
        assert msg.header.response and msg.header.exchange == ExchangeType.IKE_SA_INIT
        assert msg.get(PayloadType.SA) is None, f"{name}: the daemon accepted it"
        kinds = notify_types(data)
        assert kinds & {int(k) for k in allowed if k != SILENT}, (name, kinds)
        if name == "ke-group-1025":
            (notify,) = msg.notifies(NotifyType.INVALID_KE_PAYLOAD)
            assert int.from_bytes(notify.data, "big") == 31  # the group we proposed
    # Stateless: no half-open SA is listed for a refused request.
    assert gw.call("sas") == sas_before


def _reserved_bits_everywhere(data: bytes) -> bytes:
    """Set the 7 RESERVED bits of every generic payload header (RFC 7296 sec. 3.2: "MUST be
    ignored on receipt"), walking the chain by its own lengths."""
    out = bytearray(data)
    offset = 28
    next_payload = out[16]
    while next_payload and offset + 4 <= len(out):
        out[offset + 1] |= 0x7F
        (length,) = struct.unpack_from("!H", out, offset + 2)
        next_payload = out[offset]
        offset += length
    return bytes(out)


@pytest.mark.timeout(60)
def test_nonzero_reserved_fields_are_ignored(gw, prober: Prober) -> None:
    replies = reply_to(prober, _reserved_bits_everywhere(first_request(prober)))
    assert len(replies) == 1
    msg = parse_message(replies[0])
    assert msg.get(PayloadType.SA) is not None and msg.get(PayloadType.KE) is not None, (
        f"RESERVED bits made the daemon refuse: {notify_types(replies[0])}"
    )


@pytest.mark.timeout(60)
def test_weak_only_proposal_is_explained(gw, prober: Prober) -> None:
    replies = reply_to(prober, rewrite(first_request(prober), _weak_proposals))
    assert replies and NotifyType.NO_PROPOSAL_CHOSEN in notify_types(replies[0])
    explained = [
        e for e in gw.log_events()
        if e.get("notify") == "NO_PROPOSAL_CHOSEN" and "3des" in e.get("reason", "")
    ]  # fmt: skip
    assert explained and "refused by our policy" in explained[-1]["reason"], gw.log_tail()


@pytest.mark.timeout(60)
def test_responder_never_retransmits_on_its_own(prober: Prober) -> None:
    """libreswan CVE-2016-5361: one request, one response; then silence (6 s, longer than
    any retransmission timer) even though we never continue with IKE_AUTH."""
    replies = reply_to(prober, first_request(prober), timeout=1.0)
    assert len(replies) == 1
    assert prober.receive(6.0) == []


# --------------------------------------------------------------------------- with keys


def _until_keys(prober: Prober, hold: list[bytes]) -> int:
    """Run IKE_SA_INIT for real; hold back (do not send) everything after it."""

    def hook(data: bytes) -> list[bytes]:
        if data[18] == ExchangeType.IKE_SA_INIT:
            return [data]
        hold.append(data)
        return []

    prober.hook = hook
    ike_sa_id = prober.initiate()
    assert prober.run(lambda: bool(hold), timeout=10), "no IKE_AUTH request"
    prober.hook = None
    return ike_sa_id


def _encrypted(prober: Prober, ike_sa_id: int, exchange, payloads, message_id=None) -> bytes:
    sa = prober.dispatcher.ike_sa(ike_sa_id)
    (data,) = sa._encode(exchange, False, sa.next_request_id if message_id is None else
                         message_id, payloads)  # fmt: skip
    return data


@pytest.mark.timeout(60)
def test_corrupted_and_truncated_sk_are_dropped(gw, prober: Prober) -> None:
    hold: list[bytes] = []
    ike_sa_id = _until_keys(prober, hold)
    (auth,) = hold
    corrupted = auth[:-1] + bytes([auth[-1] ^ 1])
    assert reply_to(prober, corrupted) == [], "an ICV failure was answered"
    # Truncated SK payload, lengths made consistent (so only the SK check can refuse it).
    cut = auth[:-20]
    cut = cut[:24] + struct.pack("!I", len(cut)) + cut[28:]
    sk_at = 28
    (sk_length,) = struct.unpack_from("!H", cut, sk_at + 2)
    cut = cut[: sk_at + 2] + struct.pack("!H", sk_length - 20) + cut[sk_at + 4 :]
    assert reply_to(prober, cut) == [], "a truncated SK payload was answered"
    # The genuine request still works: nothing above changed the SA's state.
    replies = reply_to(prober, auth, timeout=3.0)
    assert replies
    sa = prober.dispatcher.ike_sa(ike_sa_id)
    inner = decrypt_message(parse_message(replies[0]), sa.cipher_in)
    assert inner.get(PayloadType.AUTH) is not None


@pytest.mark.timeout(60)
def test_pre_auth_exchanges_change_nothing(gw, prober: Prober) -> None:
    """CREATE_CHILD_SA / INFORMATIONAL / IKE rekey before IKE_AUTH completed (libreswan
    CVE-2019-12312, strongSwan CVE-2014-2338) are refused; no SA comes out of them."""
    from ikev2.payloads import DeletePayload, NoncePayload

    hold: list[bytes] = []
    ike_sa_id = _until_keys(prober, hold)
    sa = prober.dispatcher.ike_sa(ike_sa_id)
    spi = sa.spi_i
    rekey_ike = [
        NoncePayload(nonce=bytes(range(32))),
        NotifyPayload(notify_type=NotifyType.REKEY_SA, protocol=ProtocolId.ESP, spi=b"\1\2\3\4"),
    ]
    requests = [
        _encrypted(prober, ike_sa_id, ExchangeType.INFORMATIONAL,
                   [DeletePayload(protocol=ProtocolId.IKE, spis=[])], message_id=1),
        _encrypted(prober, ike_sa_id, ExchangeType.CREATE_CHILD_SA, rekey_ike, message_id=1),
        _encrypted(prober, ike_sa_id, ExchangeType.INFORMATIONAL, [], message_id=2),
    ]  # fmt: skip
    for request in requests:
        for reply in reply_to(prober, request):
            kinds = notify_types(reply, sa.cipher_in)
            assert kinds, "a pre-auth request was answered without an error notify"
            assert max(kinds) < 16384, kinds  # only error notifies
    listing = gw.call("sas")
    for entry in listing:
        for ike in entry.values():
            if ike.get("initiator-spi") == spi.hex():
                assert ike["state"] != "ESTABLISHED" and not ike.get("child-sas"), ike


@pytest.mark.timeout(60)
def test_duplicates_answered_from_the_cache(gw, prober: Prober) -> None:
    """Every message sent twice: the daemon answers each copy of a request with the same
    octets (its response cache, RFC 7296 sec. 2.1) and creates one SA, not two."""
    sent: list[bytes] = []

    def twice(data: bytes) -> list[bytes]:
        sent.append(data)
        return [data, data]

    prober.hook = twice
    prober.establish()
    prober.hook = None
    prober.receive(1.0)
    # Keyed by the responder's SPI too: a stateless COOKIE answer (SPI 0) and the answer to
    # the request with the cookie share exchange and Message ID.
    responses: dict[tuple[int, int, bytes], set[bytes]] = {}
    count = 0
    for data in prober.received:
        header = parse_message(data).header
        if header.response:
            count += 1
            key = (header.exchange, header.message_id, header.spi_r)
            responses.setdefault(key, set()).add(data)
    assert count >= 4, "the duplicated requests were not answered twice"
    assert all(len(v) == 1 for v in responses.values()), "a duplicate got a different answer"
    assert len(gw.sas().get("probe", {}).get("child-sas") or {}) == 1
    # The IKE_AUTH request replayed later: the same octets as the first answer.
    auth = next(d for d in sent if d[18] == IKE_AUTH)
    (cached,) = next(v for k, v in responses.items() if k[:2] == (IKE_AUTH, 1))
    assert reply_to(prober, auth) == [cached]
    assert len(gw.sas().get("probe", {}).get("child-sas") or {}) == 1


@pytest.mark.timeout(60)
def test_stray_responses_and_bad_rekey_sa(gw, prober: Prober) -> None:
    from ikev2.tasks.child_rekey import ChildRekeyTask

    ike_sa_id, child = prober.establish()
    sa = prober.dispatcher.ike_sa(ike_sa_id)
    # A response to a request the daemon never sent (unexpected Message ID): dropped.
    header_only = sa._encode(ExchangeType.INFORMATIONAL, True, 77, [])[0]
    assert reply_to(prober, header_only) == []
    # REKEY_SA with protocol 0 / 1 (libreswan CVE-2023-38710) or an unknown SPI.
    template = ChildRekeyTask(sa.children[child.child_sa_id]).build(sa, time.monotonic())
    assert template is not None
    for protocol, spi, expected in (
        (0, child.spi_out.to_bytes(4, "big"), NotifyType.INVALID_SYNTAX),
        (1, child.spi_out.to_bytes(4, "big"), NotifyType.INVALID_SYNTAX),
        (ProtocolId.ESP, b"\xde\xad\xbe\xef", NotifyType.CHILD_SA_NOT_FOUND),
        (ProtocolId.ESP, b"\x01\x02", NotifyType.INVALID_SYNTAX),
    ):
        changed = []
        for payload in template:
            if isinstance(payload, NotifyPayload) and payload.notify_type == NotifyType.REKEY_SA:
                payload = dataclasses.replace(payload, protocol=protocol, spi=spi)
            changed.append(payload)
        message_id = sa.next_request_id
        request = _encrypted(prober, ike_sa_id, ExchangeType.CREATE_CHILD_SA, changed, message_id)
        sa.next_request_id += 1
        replies = reply_to(prober, request, timeout=2.0)
        assert replies, f"no answer to REKEY_SA protocol {protocol}"
        kinds = notify_types(replies[0], sa.cipher_in)
        assert int(expected) in kinds or kinds & {
            int(NotifyType.INVALID_SYNTAX),
            int(NotifyType.CHILD_SA_NOT_FOUND),
        }, (protocol, spi, kinds)
    # The Child SA is still the one we made: no rekey happened.
    ike = gw.sas().get("probe", {})
    spis_in = {c["spi-in"] for c in (ike.get("child-sas") or {}).values()}
    assert f"{child.spi_out:08x}" in spis_in, ike


@pytest.mark.timeout(60)
def test_fragment_attacks(gw, prober: Prober) -> None:
    """RFC 7383 fragments with number 0, beyond the total, a changing total, duplicates:
    dropped without harm; the genuine fragments then complete IKE_AUTH."""
    prober.config.fragmentation = "force"
    prober.config.fragment_size = 200
    hold: list[bytes] = []
    ike_sa_id = _until_keys(prober, hold)
    assert len(hold) >= 2, "IKE_AUTH was not fragmented"
    sa = prober.dispatcher.ike_sa(ike_sa_id)

    def skf(data: bytes, number: int, total: int) -> bytes:
        # Number and total sit right after the SKF generic header; the ICV covers them,
        # so these copies also fail integrity: both checks must hold.
        return data[:32] + struct.pack("!HH", number, total) + data[36:]

    first = hold[0]
    (_, total) = struct.unpack_from("!HH", first, 32)
    for bad in (skf(first, 0, total), skf(first, total + 1, total), skf(first, 1, total + 5)):
        assert reply_to(prober, bad, timeout=0.5) == []
    # Duplicates of genuine fragments, then all of them: one answer, the SA comes up.
    for data in hold[:1] * 3:
        prober.send_raw(data)
    for data in hold:
        prober.send_raw(data)
    replies = prober.receive(3.0)
    assert replies
    for reply in replies:
        prober.dispatcher.receive_datagram(reply, (GW_EVIL_SIDE, 500), prober.local,
                                           time.monotonic())  # fmt: skip
    assert prober.run(prober.established, timeout=10)
    assert sa.ike_sa_id == ike_sa_id


# --------------------------------------------------------------------------- ESP


def _gcm_packet(spi: int, seq: int, key: bytes, plaintext: bytes) -> bytes:
    """RFC 4106 by hand (not our encoder): SPI || Seq || IV || ciphertext || ICV."""
    head = struct.pack("!II", spi, seq)
    iv = struct.pack("!Q", seq or 0xFFFF)
    return head + iv + AESGCM(key[:-4]).encrypt(key[-4:] + iv, plaintext, head)


def _icmp_echo(source: str, destination: str, ident: int) -> bytes:
    from scapy.all import ICMP, IP, Raw

    return bytes(IP(src=source, dst=destination) / ICMP(id=ident) / Raw(b"hardening" * 4))


def _esp_counters(gw) -> dict:
    return gw.call("stats")["esp"]


@pytest.mark.timeout(90)
def test_esp_bad_inputs_over_raw_esp(module_hosts: Hosts, gw, prober: Prober) -> None:
    """Short packets, unknown SPI, bad ICV, replays, sequence 0, bad padding, pad length
    beyond the payload, next header 59: each dropped and counted under its own name; a
    good packet still gets through (the daemon answers the ping inside it)."""
    _, child = prober.establish()
    key = child.encr_key_out
    spi = child.spi_out
    out_sa = EspSa(spi, "out", child.encr, key)
    esp = raw_socket(module_hosts.evil_ns, socket.IPPROTO_ESP)
    try:

        def send(packet: bytes) -> None:
            esp.sendto(packet, (GW_EVIL_SIDE, 0))

        before = _esp_counters(gw)
        inner = _icmp_echo(EVIL_INNER, GW_INNER, 1)
        pad = (-(len(inner) + 2)) % 4
        good_pad = bytes(range(1, pad + 1))
        # Too short for SPI + sequence number: over raw ESP the socket counts and drops it,
        # over UDP 4500 the demultiplexer does (RFC 3948 sec. 2.2).
        sockets_before = gw.call("stats")["sockets"]["esp-v4"]["datagrams-in"]
        send(b"\x00\x00\x00\x01\x00\x00")
        with module_hosts.evil_ns.entered():
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            udp.sendto(b"\x00\x00\x00\x01\x00\x00", (GW_EVIL_SIDE, 4500))
        finally:
            udp.close()
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            stats = gw.call("stats")
            if stats["esp"]["esp_drops"] > before["esp_drops"]:
                break
            time.sleep(0.05)
        assert stats["esp"]["esp_drops"] == before["esp_drops"] + 1
        assert stats["sockets"]["esp-v4"]["datagrams-in"] == sockets_before + 1
        before = stats["esp"]
        cases = {
            "unknown-spi": (_gcm_packet(0x0BADBAD0, 1, key, inner + good_pad + bytes([pad, 4])),
                            "unknown_spi"),
            "bad-icv": (out_sa.encrypt(inner)[:-1] + b"\x00", "icv_failures"),
            "seq-0": (_gcm_packet(spi, 0, key, inner + good_pad + bytes([pad, 4])), "replays"),
            "bad-padding": (_gcm_packet(spi, 1000, key, inner + b"\x09" * pad + bytes([pad, 4])),
                            "malformed"),
            "pad-beyond-payload": (_gcm_packet(spi, 1001, key, b"\x01\x02" + bytes([200, 4])),
                                   "malformed"),
            "next-header-59": (_gcm_packet(spi, 1002, key, b"\x00" * 6 + bytes([0, 59])),
                               "dummy"),
        }  # fmt: skip
        if pad == 0:
            del cases["bad-padding"]
        for name, (packet, counter) in cases.items():
            send(packet)
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                after = _esp_counters(gw)
                if after.get(counter, 0) > before.get(counter, 0):
                    break
                time.sleep(0.05)
            assert after.get(counter, 0) == before.get(counter, 0) + 1, (name, before, after)
            before = after
        # Replay: the same good packet twice, one delivered, one counted.
        good = out_sa.encrypt(_icmp_echo(EVIL_INNER, GW_INNER, 2))
        send(good)
        send(good)
        time.sleep(0.5)
        after = _esp_counters(gw)
        assert after["replays"] == before["replays"] + 1, (before, after)
        assert after["packets_in"] == before.get("packets_in", 0) + 1, (before, after)
        before = after
        # Far ahead, then far behind the window (RFC 4303 sec. 3.4.3): one accepted, one a
        # replay drop.
        echo = _icmp_echo(EVIL_INNER, GW_INNER, 3)
        echo_pad = (-(len(echo) + 2)) % 4
        trailer = bytes(range(1, echo_pad + 1)) + bytes([echo_pad, 4])
        send(_gcm_packet(spi, 100000, key, echo + trailer))
        send(_gcm_packet(spi, 1003, key, echo + trailer))
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            after = _esp_counters(gw)
            if after["replays"] > before["replays"]:
                break
            time.sleep(0.05)
        assert after["replays"] == before["replays"] + 1, (before, after)
        assert after["packets_in"] == before.get("packets_in", 0) + 1, (before, after)
        before = after
    finally:
        esp.close()
    # No per-packet log lines for drops (rate-limited at most).
    drops = [e for e in gw.log_events() if "drop" in str(e.get("event", "")).lower()]
    assert len(drops) <= 5, drops[:10]


# --------------------------------------------------------------------------- and after all that


@pytest.mark.timeout(90)
def test_legitimate_peer_still_served(module_hosts: Hosts, gw) -> None:
    peer = module_hosts.peer()
    peer.call("initiate", child="net", timeout=30)
    peer.wait_for_child("legit")
    assert_ping(module_hosts.peer_ns, PEER_INNER, GW_INNER, count=3)
    daemon_healthy(gw)
