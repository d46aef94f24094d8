"""Build the seed corpora (``fuzz/corpus/<target>/``) from real messages.

Sources, all real traffic or real configuration, never hand-made octets:

* an in-memory run of two of our engines (IKE_SA_INIT, IKE_AUTH, CREATE_CHILD_SA for a new
  Child SA, a Child rekey, an IKE rekey, DPD, Delete), recorded on the "wire" and, with the
  keys of that run, decrypted to the inner payload chains;
* captures of our own daemons in ``fuzz/captures`` (two aioipsec daemons in namespaces:
  a whole life with forced UDP encapsulation, ESP included; rekeys under 20 % loss, with
  retransmissions), the captures in ``tests/data/reference/captures`` (Wireshark's and
  scapy's IKEv2/ESP test captures) and any pcap given with ``--pcap`` (e.g. a capture
  from ``tests/e2e`` or the interop harness, ``tcpdump -w`` on the veth);
* the example configurations shipped in ``aioipsec/examples`` and the swanctl.conf blocks
  of ``docs/configuration.md``.

``python -m fuzz.make_corpus [--pcap FILE ...]`` rewrites the corpus directories; file names
are content hashes, so re-running it is idempotent.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fuzz import targets as T
from ikev2.enums import PayloadType
from ikev2.errors import ProtocolError
from ikev2.message import decrypt_message, parse_message, serialize_payload_chain

ROOT = Path(__file__).resolve().parent
REPO = ROOT.parent
CORPUS = ROOT / "corpus"
CAPTURES = REPO / "tests" / "data" / "reference" / "captures"


class Corpus:
    def __init__(self) -> None:
        self.items: dict[str, set[bytes]] = {name: set() for name in T.TARGETS}

    def add(self, target: str, data: bytes) -> None:
        if len(data) <= 8192:
            self.items[target].add(bytes(data))

    def write(self) -> dict[str, int]:
        counts = {}
        for target, items in self.items.items():
            directory = CORPUS / target
            directory.mkdir(parents=True, exist_ok=True)
            for old in directory.iterdir():
                old.unlink()
            for data in items:
                name = hashlib.sha1(data).hexdigest()[:16]
                (directory / name).write_bytes(data)
            counts[target] = len(items)
        return counts


def ike_datagram(corpus: Corpus, data: bytes, keys: list | None = None) -> None:
    """One IKE message as seen on port 500: seeds for every IKE target."""
    corpus.add("ike_message", data)
    corpus.add("udp4500", b"\0\0\0\0" + data)
    try:
        msg = parse_message(data)
    except ProtocolError:
        return
    for payload in msg.payloads:
        kind = int(payload.TYPE)
        if kind in T.PAYLOAD_TYPES:
            corpus.add("ike_payload", bytes([T.PAYLOAD_TYPES.index(kind), 0]) + payload.serialize())
    if msg.encrypted_payload is None or msg.is_fragment:
        return
    for cipher in keys or []:
        try:
            inner = decrypt_message(msg, cipher)
        except ProtocolError:
            continue
        chain = serialize_payload_chain(inner.payloads)
        first = int(inner.payloads[0].TYPE) if inner.payloads else 0
        first_index = T.FIRST_INNER_TYPES.index(first) if first in T.FIRST_INNER_TYPES else 0
        corpus.add("sk_payload", bytes([first_index, 0]) + chain + b"\0")
        corpus.add("sk_payload", bytes([first_index, 1]) + chain)
        if not msg.header.response and msg.header.exchange in T._ENGINE_EXCHANGES:
            exchange_index = T._ENGINE_EXCHANGES.index(msg.header.exchange)
            corpus.add("engine_sk", bytes([exchange_index, first_index, 0]) + chain)
        for payload in inner.payloads:
            kind = int(payload.TYPE)
            if kind in T.PAYLOAD_TYPES:
                body = payload.serialize()
                corpus.add("ike_payload", bytes([T.PAYLOAD_TYPES.index(kind), 0]) + body)
                if kind == PayloadType.CP:
                    corpus.add("cp_attributes", body)
        # The same chain cut in fragments (RFC 7383), as the fragments target encodes them.
        pieces = [chain[i : i + 60] for i in range(0, len(chain), 60)][:255] or [b""]
        records = b""
        for number, piece in enumerate(pieces, 1):
            flags = 16 if first == 35 else 0
            records += struct.pack(
                "!BBBBB", msg.header.message_id & 0xFF, number, len(pieces), flags, len(piece)
            )
            records += piece
        corpus.add("fragments", records)
        break


def engine_run(corpus: Corpus) -> None:
    """Two of our engines through a whole life: every datagram, decrypted with its keys."""
    recorded: list[bytes] = []
    pair_live = T._EnginePair()

    a, b = pair_live.a, pair_live.b
    now = 0.0

    keys: list = []

    def remember_keys() -> None:
        for dispatcher in (a, b):
            for candidate in dispatcher._sas.values():
                if candidate.cipher_in is not None and candidate.cipher_in not in keys:
                    keys.append(candidate.cipher_in)

    def pump() -> None:
        remember_keys()
        for _ in range(50):
            remember_keys()
            moved = False
            for datagram in a.datagrams_to_send(now):
                recorded.append(datagram.data)
                b.receive_datagram(datagram.data, pair_live.addr_a, pair_live.addr_b, now)
                moved = True
            for datagram in b.datagrams_to_send(now):
                recorded.append(datagram.data)
                a.receive_datagram(datagram.data, pair_live.addr_b, pair_live.addr_a, now)
                moved = True
            if not moved:
                return

    # A second IKE SA, recorded from its first message on.
    ike_id = a.initiate("conn", "net", now=now)
    pump()
    sa = a.ike_sa(ike_id)
    while b.next_event() is not None:
        pass
    children = list(sa.children)
    a.create_child(ike_id, "net", now)
    pump()
    if children:
        a.rekey_child(ike_id, children[0], now)
        pump()
    a.send_liveness(ike_id, now)
    pump()
    a.rekey_ike(ike_id, now)
    pump()
    for info in list(a.sas()):
        try:
            a.terminate_ike(info.ike_sa_id, now)
        except KeyError:
            continue
        pump()
    # Old SAs (before the rekey) are gone from the tables: keep the first SA's keys too.
    for datagram in recorded:
        ike_datagram(corpus, datagram, keys)


def capture_datagrams(path: Path) -> list[tuple[int, int, bytes]]:
    """(sport, dport, UDP payload) of every IKE/NAT-T datagram and raw ESP packet."""
    from scapy.all import ESP, IP, UDP, IPv6, rdpcap  # noqa: F401 - scapy's layer registry

    out = []
    for packet in rdpcap(str(path)):
        if UDP in packet and (packet[UDP].sport in (500, 4500) or packet[UDP].dport in (500, 4500)):
            out.append((packet[UDP].sport, packet[UDP].dport, bytes(packet[UDP].payload)))
        elif IP in packet and packet[IP].proto == 50:
            out.append((0, 0, bytes(packet[IP].payload)))
    return out


def captures(corpus: Corpus, paths: list[Path]) -> None:
    for path in paths:
        if not path.exists():
            continue
        for sport, dport, data in capture_datagrams(path):
            if 4500 in (sport, dport):
                corpus.add("udp4500", data)
                if data[:4] == b"\0\0\0\0":
                    ike_datagram(corpus, data[4:])
                elif len(data) > 8:
                    corpus.add("esp_decap", b"\0" + data)
            elif 500 in (sport, dport):
                ike_datagram(corpus, data)
            else:
                corpus.add("esp_decap", b"\0" + data)
                corpus.add("udp4500", data)


def esp_seeds(corpus: Corpus) -> None:
    """Valid packets of the esp_decap target's modes 1/2 around real inner packets."""
    from scapy.all import ICMP, IP, TCP, UDP, IPv6, Raw

    inners = [
        bytes(IP(src="10.1.0.1", dst="10.2.0.1") / ICMP() / Raw(b"ping" * 8)),
        bytes(IP(src="10.1.0.1", dst="10.2.0.1") / TCP(sport=40000, dport=80, flags="S")),
        bytes(IP(src="10.1.0.1", dst="10.2.0.1") / UDP(sport=53, dport=53) / Raw(b"x" * 30)),
        bytes(IPv6(src="fd00::1", dst="fd00::2") / UDP(sport=1, dport=2) / Raw(b"y" * 9)),
    ]
    for index, inner in enumerate(inners):
        next_header = 41 if inner[0] >> 4 == 6 else 4
        pad = (-(len(inner) + 2)) % 4
        for mode in (1, 2):
            seq = struct.pack("!I", index + 1)
            corpus.add(
                "esp_decap",
                bytes([mode]) + seq + bytes([next_header, pad, 0, 9]) + inner,
            )
        corpus.add("esp_decap", bytes([1]) + struct.pack("!I", 7) + bytes([59, 0, 0, 0]))
    corpus.add("udp4500", b"\xff")


def updown_seeds(corpus: Corpus) -> None:
    """The policies of the Child SAs our tests negotiate (tests/e2e/test_updown.py, the
    interop rows' subnets in both IP versions, ports and ICMP type/code selectors)."""
    any_port = (0, 65535)
    v4 = ("10.200.0.1", "10.200.0.2")
    cases = [
        (False, ("10.1.0.0", "10.1.0.255", 0, *any_port),
         ("10.2.0.0", "10.2.0.255", 0, *any_port), v4),
        (False, ("10.200.0.1", "10.200.0.1", 6, 80, 80),
         ("10.200.0.2", "10.200.0.2", 6, 1024, 65535), v4),
        (False, ("10.1.0.1", "10.1.0.9", 1, 0x0800, 0x0800),
         ("10.2.0.0", "10.2.255.255", 1, 0, 0), ("192.168.100.1", "10.200.0.2")),
        (True, ("fd00:1::", "fd00:1::ffff:ffff:ffff:ffff", 0, *any_port),
         ("fd00:2::", "fd00:2::ffff:ffff:ffff:ffff", 58, 0x8000, 0x80FF),
         ("fd00:200::1", "fd00:200::2")),
    ]  # fmt: skip
    texts = ("net", "C=CH, O=strongSwan, CN=moon", "carol@strongswan.org")
    for ipv6, my, peer, (me, them) in cases:
        for up in (True, False):
            octets = T.updown_call_octets(
                up=up, ipv6=ipv6, my=my, peer=peer, me=me, them=them, texts=texts,
                udp_encap=up, host_access=not up,
            )  # fmt: skip
            corpus.add("updown_environment", octets)


def redirect_seeds(corpus: Corpus) -> None:
    """REDIRECT and REDIRECTED_FROM data for each gateway identity type (RFC 5685 sec. 8),
    with and without a nonce, as codec inputs and as INFORMATIONAL requests (bit 1)."""
    from ikev2.redirect import GatewayIdentity, RedirectData, RedirectedFromData

    for text in ("192.0.2.3", "2001:db8::3", "gw3.example.net"):
        gateway = GatewayIdentity.from_text(text)
        for mode in (0, 2):
            corpus.add("redirect_notify", bytes([mode]) + RedirectData(gateway).serialize())
            with_nonce = RedirectData(gateway, bytes(range(32))).serialize()
            corpus.add("redirect_notify", bytes([mode]) + with_nonce)
        corpus.add("redirect_notify", b"\x01" + RedirectedFromData(gateway).serialize())


def configurations(corpus: Corpus) -> None:
    for path in sorted((REPO / "aioipsec" / "examples").glob("*.toml")):
        corpus.add("toml_config", path.read_bytes())
    for path in sorted((REPO / "tests").rglob("*.toml")):
        corpus.add("toml_config", path.read_bytes())
    docs = (REPO / "docs" / "configuration.md").read_text()
    for block in re.findall(r"```[a-z]*\n(.*?)```", docs, flags=re.S):
        if "connections {" in block or "secrets {" in block:
            corpus.add("swanctl_conf", block.encode())
        elif "[connections." in block or "[daemon]" in block:
            corpus.add("toml_config", block.encode())
    for path in sorted(REPO.rglob("swanctl*.conf")):
        if ".venv" not in path.parts:
            corpus.add("swanctl_conf", path.read_bytes())
    # The swanctl.conf files the interop harness gives strongSwan and our daemon.
    from aioipsec.interop.matrix import MATRIX
    from aioipsec.interop.peers import swanctl_conf
    from aioipsec.interop.scenario import Topology

    for scenario in MATRIX:
        topology = Topology(scenario, None, None, None, "10.200.0.1", "10.200.0.2", "10.200.0.1")
        for side in ("initiator", "responder"):
            try:
                text = swanctl_conf(scenario, topology, side, "peer.pem")
            except Exception:  # a row this offline writer cannot render: skip it
                continue
            corpus.add("swanctl_conf", text.encode())


def vici_seeds(corpus: Corpus) -> None:
    """What swanctl sends (src/swanctl/commands/*.c), encoded by the `vici` package, the
    Python client strongSwan ships: registrations, commands with their arguments, and a
    load-conn / load-shared built from a swanctl.conf of the interop harness."""
    from vici.protocol import Message, Packet

    from aioipsec.config.swanctl import parse_settings_text, section_to_data

    def segment(packet: bytes) -> bytes:
        return struct.pack("!I", len(packet)) + packet

    requests: list[tuple[str, dict]] = [
        ("version", {}), ("stats", {}), ("reload-settings", {}),
        ("list-sas", {"noblock": "yes", "ike": "site", "ike-id": "1"}),
        ("list-conns", {}), ("list-policies", {"drop": "yes", "pass": "yes", "trap": "yes"}),
        ("list-certs", {"type": "ANY", "flag": "ANY"}), ("list-authorities", {}),
        ("get-conns", {}), ("get-algorithms", {}), ("get-counters", {"all": "yes"}),
        ("initiate", {"child": "net", "ike": "site", "timeout": "10000", "loglevel": "1"}),
        ("terminate", {"ike": "site", "force": "yes", "loglevel": "1"}),
        ("rekey", {"child-id": "3", "reauth": "yes"}),
        ("unload-conn", {"name": "site"}), ("unload-shared", {"id": "ike-site"}),
        ("load-shared", {"id": "ike-site", "type": "IKE", "data": b"0123456789",
                         "owners": ["left.example", "right.example"]}),
    ]  # fmt: skip
    from aioipsec.interop.matrix import MATRIX
    from aioipsec.interop.peers import swanctl_conf
    from aioipsec.interop.scenario import Topology

    topology = Topology(MATRIX[0], None, None, None, "10.200.0.1", "10.200.0.2", "10.200.0.1")
    text = swanctl_conf(MATRIX[0], topology, "initiator", "peer.pem")
    data, _ = section_to_data(parse_settings_text(text))

    def present(tree: dict) -> dict:
        return {k: present(v) if isinstance(v, dict) else v for k, v in tree.items() if v}

    for name, conn in data.get("connections", {}).items():
        requests.append(("load-conn", {name: present(conn)}))
    for event in ("control-log", "list-sa", "list-conn", "log", "ike-updown", "child-rekey"):
        stream = segment(Packet.register_event(event))
        corpus.add("vici_stream", stream)
        corpus.add("vici_stream", stream + segment(Packet.unregister_event(event)))
    for command, message in requests:
        packet = segment(Packet.request(command, Message.serialize(message)))
        corpus.add("vici_stream", packet)
        corpus.add("vici_stream", segment(Packet.register_event("control-log")) + packet)


def cp_seeds(corpus: Corpus) -> None:
    """CP payloads built by scapy (an encoder that is not ours): the requests strongSwan
    and Windows clients send and a gateway's reply with every attribute we decode."""
    try:
        from scapy.contrib.ikev2 import ConfigurationAttribute as A
        from scapy.contrib.ikev2 import IKEv2_CP
    except ImportError:  # scapy is a test extra; the engine run still gives CP seeds
        return
    requests = [
        [A(type=1, length=0), A(type=3, length=0), A(type=8, length=0), A(type=10, length=0)],
        [A(type=t, length=0) for t in (1, 3, 4, 7, 14, 25, 13)],
        [A(type=1, length=4, value="10.3.0.9")],
    ]
    reply = [
        A(type=1, length=4, value="10.3.0.1"),
        A(type=2, length=4, value="255.255.255.0"),
        A(type=3, length=4, value="10.3.0.53"),
        A(type=8, value=bytes.fromhex("fd00000000000000000000000000000180")),
        A(type=10, length=16, value="fd00::53"),
        A(type=13, value=bytes([10, 1, 0, 0, 255, 255, 0, 0])),
        A(type=15, value=bytes.fromhex("fd010000000000000000000000000000") + bytes([48])),
        A(type=25, value=b"corp.example.com"),
        A(type=14, value=bytes.fromhex("000100030019")),
        A(type=28675, value=b"\x01\x02"),
    ]
    for cfg_type, attributes in [(1, a) for a in requests] + [(2, reply)]:
        corpus.add("cp_attributes", bytes(IKEv2_CP(CFGType=cfg_type, attributes=attributes))[4:])


def eap_seeds(corpus: Corpus) -> None:
    """Whole EAP-MSCHAPv2 conversations of our two ends (right and wrong password), as the
    eap_methods target reads them: the Responses for the gateway, the Requests for the peer."""
    from ikev2.eap.mschapv2 import MsChapV2Peer, MsChapV2Server
    from ikev2.eap.session import EapAuthenticator, EapPeer
    from ikev2.enums import EapType

    def record(packets: list[bytes]) -> bytes:
        return b"".join(struct.pack("!H", len(p)) + p for p in packets)

    for password in ("Ar3etTnp", "wrong"):
        server = EapAuthenticator(
            {EapType.MSCHAPV2: lambda _: MsChapV2Server(T.EAP_SECRETS.get, random=T._fixed_random)},
            random=T._fixed_random,
        )
        peer = EapPeer(
            "carol",
            {EapType.MSCHAPV2: lambda pw=password: MsChapV2Peer("carol", pw, T._fixed_random)},
        )
        requests, responses = [server.start().serialize()], []
        while (answer := peer.process(requests[-1])) is not None:
            responses.append(answer.serialize())
            requests.append(server.process(responses[-1]).serialize())
        corpus.add("eap_methods", b"\x00" + record(responses))
        corpus.add("eap_methods", b"\x01" + record(requests))
    eap_md5_seeds(corpus, record)


def eap_md5_seeds(corpus: Corpus, record: Callable[[list[bytes]], bytes]) -> None:
    """EAP-MD5 conversations (right and wrong secret), one after a Nak of MS-CHAPv2 (mode
    0) and one proposed first (mode 2), the peer's side (mode 1), and the EAP-Message
    AVPs EAP-TTLS would carry them in (mode 3)."""
    from ikev2.eap.md5 import Md5Peer, Md5Server
    from ikev2.eap.mschapv2 import MsChapV2Server
    from ikev2.eap.session import EapAuthenticator, EapPeer
    from ikev2.eap.ttls import avp_for
    from ikev2.enums import EapType

    for password, mode in (("Ar3etTnp", 0), ("wrong", 0), ("Ar3etTnp", 2)):
        md5 = {EapType.MD5_CHALLENGE: lambda i: Md5Server(i, T.EAP_SECRETS.get, T._fixed_random)}
        mschapv2 = {EapType.MSCHAPV2: lambda _: MsChapV2Server(T.EAP_SECRETS.get)}
        server = EapAuthenticator(
            (md5 | mschapv2) if mode == 2 else (mschapv2 | md5), random=T._fixed_random
        )
        peer = EapPeer("carol", {EapType.MD5_CHALLENGE: lambda pw=password: Md5Peer(pw)})
        requests, responses = [server.start()], []
        while (answer := peer.process(requests[-1].serialize())) is not None:
            responses.append(answer)
            requests.append(server.process(responses[-1].serialize()))
        corpus.add("eap_methods", bytes((mode,)) + record([p.serialize() for p in responses]))
        corpus.add("eap_methods", b"\x01" + record([p.serialize() for p in requests]))
        for packet in requests + responses:
            if packet.type is not None:
                corpus.add("eap_methods", b"\x03" + avp_for(packet))


def _tls_type_data(server: Any, peer: Any, method: int) -> tuple[list[bytes], list[bytes]]:
    """Run an EAP-TLS-framed method between our two ends: the Type-Data of the gateway's
    Requests and of the peer's Responses."""
    from ikev2.eap.packet import EapPacket
    from ikev2.enums import EapCode

    request: EapPacket | None = server.start(1)
    requests, responses = [], []
    while request is not None and request.code == EapCode.REQUEST:
        requests.append(request.data)
        response = peer.process(request)
        responses.append(response.data)
        request = server.process(
            EapPacket(EapCode.RESPONSE, request.identifier, method, response.data),
            (request.identifier + 1) & 0xFF,
        )
    assert server.succeeded, server.failure_reason
    return requests, responses


def eap_tls_seeds(corpus: Corpus) -> None:
    """One EAP-TLS handshake between our two ends (the target's credentials): the peer's
    Type-Data for the gateway role, the gateway's for the peer role; then one EAP-TTLS run
    with an inner EAP-MD5 (modes 2 and 3 of the target: the handshake, then phase 2)."""
    from ikev2.eap.md5 import Md5Peer
    from ikev2.eap.tls import EapTlsPeer, EapTlsServer
    from ikev2.eap.ttls import EapTtlsPeer, EapTtlsServer
    from ikev2.enums import EapType

    def record(items: list[bytes]) -> bytes:
        return b"".join(struct.pack("!H", len(p)) + p for p in items)

    credentials = T._tls_credentials()
    server = EapTlsServer("fuzz.example", credentials, T._TLS_NOW)
    peer = EapTlsPeer(credentials, T._TLS_NOW, "fuzz.example")
    requests, responses = _tls_type_data(server, peer, EapType.TLS)
    corpus.add("eap_tls", b"\x00" + record(responses))
    corpus.add("eap_tls", b"\x01" + record(requests))
    ttls_server = EapTtlsServer(credentials, T._TLS_NOW, T._ttls_phase2())
    ttls_peer = EapTtlsPeer(
        credentials, T._TLS_NOW, "carol", {EapType.MD5_CHALLENGE: lambda: Md5Peer("Ar3etTnp")},
        "fuzz.example",
    )  # fmt: skip
    requests, responses = _tls_type_data(ttls_server, ttls_peer, EapType.TTLS)
    corpus.add("eap_tls", b"\x02" + record(responses))
    corpus.add("eap_tls", b"\x03" + record(requests))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fuzz.make_corpus")
    parser.add_argument("--pcap", type=Path, action="append", default=[])
    args = parser.parse_args(argv)
    corpus = Corpus()
    engine_run(corpus)
    ours = sorted((ROOT / "captures").glob("*.pcap*"))
    captures(corpus, ours + sorted(CAPTURES.glob("*.pcap*")) + args.pcap)
    esp_seeds(corpus)
    updown_seeds(corpus)
    redirect_seeds(corpus)
    cp_seeds(corpus)
    eap_seeds(corpus)
    eap_tls_seeds(corpus)
    configurations(corpus)
    vici_seeds(corpus)
    counts = corpus.write()
    for target, count in counts.items():
        print(f"{target:14} {count:4} seeds")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
