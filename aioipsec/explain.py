"""``aioipsec explain``: one IKEv2 negotiation between two in-memory peers, told byte by byte.

Two real engines (``ikev2.dispatcher.Dispatcher``, the daemon's own) talk through a list
in memory with a virtual clock: IKE_SA_INIT, IKE_AUTH (with the first Child SA),
CREATE_CHILD_SA (rekeying that Child SA), INFORMATIONAL (the Delete of the old Child SA),
with ``--rekey-ike`` a CREATE_CHILD_SA rekeying the IKE SA (sec. 2.18) and the Delete of
the old one, and INFORMATIONAL (the Delete of the IKE SA). Every message is printed as a ladder
diagram with each payload's fields; ``--keys`` adds every key derivation step with its
inputs and outputs and the RFC section that defines it:

* g^ir (RFC 7296 sec. 2.14, RFC 8031 for Curve25519/Curve448);
* SKEYSEED and the seven SK_* keys (sec. 2.13 prf+, sec. 2.14);
* the SK payload protection of each message (sec. 3.14, RFC 5282 sec. 5.1);
* the AUTH octets of both sides (sec. 2.15);
* each Child SA's KEYMAT and its split (sec. 2.17).

Nothing is taken on trust from the engine: the explanation re-derives every key from the
bytes on the wire (and the two key-exchange private values), decrypts the engine's SK
payloads with them, recomputes both AUTH payloads and compares the Child SA keys with the
ones the engines installed. A mismatch is printed as ``MISMATCH`` (exit status 1).

Deterministic with ``--seed N``: nonces, SPIs, IVs and the X25519/X448 private values all
come from the engines' injectable ``rng`` (seeded per side), so a class can reproduce the
same bytes; ``--export-vector FILE`` writes them as a JSON test vector. Reproducibility
needs a Curve25519/Curve448 key exchange (the engine draws ECP/MODP/ML-KEM private values
from the OS) and an AEAD cipher (AES-CBC IVs come from ``os.urandom``, sec. 3.14).

``--follow`` watches a live daemon instead: it subscribes on the control socket
(``--socket``, the ``subscribe`` command) and prints the same ladder, live, for every IKE
message the daemon sends or receives (exchange, Message ID, direction, payload names
decoded by the daemon with our parser; encrypted messages stay encrypted, their SK payload
names the first payload inside) and a line per engine event (IKE SA established, Child SA
installed, deleted, ...). No keys travel on the stream; a daemon started with
``--save-keys`` names its key files once at the top. ``--count N`` stops after N messages.

``--state-diagram OUT.png`` draws the IKE SA and Child SA state machines from
``ikev2.states`` (needs matplotlib, the ``docs`` extra).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aioipsec.decode import describe_payload, payload_name, short_name
from ikev2.config import AuthConfig, ChildConfig, IkeConfig
from ikev2.crypto.auth import KEY_PAD, signed_octets
from ikev2.crypto.keys import (
    compute_rekey_skeyseed,
    compute_skeyseed,
    derive_child_keymat,
    derive_ike_keys,
    derive_rekeyed_ike_keys,
    split_child_keymat,
)
from ikev2.crypto.prf import Prf
from ikev2.crypto.sk import is_aead, make_sk_cipher, sk_key_lengths
from ikev2.dispatcher import Dispatcher
from ikev2.enums import (
    EncrId,
    ExchangeType,
    IntegId,
    KeId,
    NotifyType,
    PayloadType,
    PrfId,
    ProtocolId,
    TransformType,
)
from ikev2.events import (
    ChildSaEstablished,
    ChildSaRekeyed,
    Event,
    IkeSaEstablished,
    IkeSaRekeyed,
)
from ikev2.message import IkeMessage, decrypt_message, parse_message
from ikev2.payloads import (
    AuthPayload,
    IdPayload,
    KePayload,
    Proposal,
    SaPayload,
)
from ikev2.proposals import chosen_transform, parse_proposals, to_strongswan

INITIATOR_ADDR = "192.0.2.1"
RESPONDER_ADDR = "192.0.2.2"
INITIATOR_ID = "initiator.example"
RESPONDER_ID = "responder.example"
DEMO_PSK = "aioipsec explain: a demo pre-shared key, never use it"
WIDTH = 78
VECTOR_FORMAT = "aioipsec-explain-vector/1"

_X_CURVES = {KeId.CURVE25519: 32, KeId.CURVE448: 56}


class ExplainError(Exception):
    """Options that cannot be explained (reason for people)."""


# ------------------------------------------------------------------------- the run


class RecordingRng:
    """A seeded ``rng(n)`` that remembers what it handed out (to find the KE private
    values among its outputs by their public values: no guessing of call order)."""

    def __init__(self, seed: str | None) -> None:
        self._random = random.Random(seed) if seed is not None else None
        self.outputs: list[bytes] = []

    def __call__(self, size: int) -> bytes:
        data = self._random.randbytes(size) if self._random is not None else os.urandom(size)
        self.outputs.append(data)
        return data


@dataclass
class WireMessage:
    """One datagram between the peers, as parsed (and decrypted, once keys are known)."""

    number: int
    time: float
    from_initiator: bool  # sent by the side that initiated the IKE SA
    source: tuple[str, int]
    destination: tuple[str, int]
    data: bytes
    message: IkeMessage
    inner: IkeMessage | None = None
    sk_keys: str = ""  # which SK_e/SK_a protected it


@dataclass
class Run:
    """Everything one in-memory negotiation produced."""

    seed: int | None
    ike_proposal: str
    esp_proposal: str
    psk: bytes
    encap: bool
    messages: list[WireMessage] = field(default_factory=list)
    rekey_ike: bool = False
    events_i: list[Event] = field(default_factory=list)
    events_r: list[Event] = field(default_factory=list)
    rng_i: RecordingRng = field(default_factory=lambda: RecordingRng(None))
    rng_r: RecordingRng = field(default_factory=lambda: RecordingRng(None))


def _configs(ike: str, esp: str, encap: bool) -> tuple[IkeConfig, IkeConfig]:
    def config(local: str, remote: str, local_id: str, remote_id: str, ts: tuple[str, str]):
        return IkeConfig(
            name="explain",
            local_addrs=[local],
            remote_addrs=[remote],
            proposals=[ike],
            encap=encap,
            local=AuthConfig(auth="psk", id=local_id),
            remote=AuthConfig(auth="psk", id=remote_id),
            children=[
                ChildConfig(name="net", local_ts=[ts[0]], remote_ts=[ts[1]], esp_proposals=[esp])
            ],
        )

    return (
        config(INITIATOR_ADDR, RESPONDER_ADDR, INITIATOR_ID, RESPONDER_ID,
               ("10.1.0.0/16", "10.2.0.0/16")),
        config(RESPONDER_ADDR, INITIATOR_ADDR, RESPONDER_ID, INITIATOR_ID,
               ("10.2.0.0/16", "10.1.0.0/16")),
    )  # fmt: skip


def check_options(ike: str, esp: str, seed: int | None) -> None:
    """Refuse what cannot be explained (or not reproducibly), saying why."""
    try:
        ike_proposals = parse_proposals([ike], ProtocolId.IKE)
        esp_proposals = parse_proposals([esp], ProtocolId.ESP)
    except ValueError as error:
        raise ExplainError(f"proposal: {error}") from None
    if len(ike_proposals) != 1 or len(esp_proposals) != 1:
        raise ExplainError("give exactly one IKE and one ESP proposal (no 'default')")
    for proposal in (*ike_proposals, *esp_proposals):
        for transform in proposal.transforms:
            ttype = int(transform.type)
            if ttype == TransformType.KE and int(transform.id) not in (0, *_X_CURVES):
                raise ExplainError(
                    f"{to_strongswan(proposal)}: explain needs x25519 or x448 as key exchange "
                    "(the engine draws ECP, MODP and ML-KEM private values from the OS, so "
                    "their g^ir cannot be shown or reproduced)"
                )
            if ttype > TransformType.ESN:
                raise ExplainError("additional key exchanges (RFC 9370) are not explained")
    encr = chosen_transform(ike_proposals[0], TransformType.ENCR)
    if seed is not None and encr is not None and not is_aead(int(encr.id)):
        raise ExplainError(
            "--seed needs an AEAD IKE cipher (aes*gcm*, aes*ccm*, chacha20poly1305): "
            "AES-CBC IVs come from os.urandom (RFC 7296 sec. 3.14 wants them unpredictable)"
        )


def run_negotiation(
    seed: int | None = None,
    ike: str = "aes256gcm16-prfsha256-x25519",
    esp: str = "aes256gcm16",
    psk: str = DEMO_PSK,
    encap: bool = False,
    rekey_ike: bool = False,
) -> Run:
    """Run the exchanges between two engines (see the module docstring); ``rekey_ike``
    adds a rekey of the IKE SA (CREATE_CHILD_SA, RFC 7296 sec. 2.18) before the end."""
    check_options(ike, esp, seed)
    run = Run(seed, ike, esp, psk.encode(), encap, rekey_ike=rekey_ike)
    run.rng_i = RecordingRng(None if seed is None else f"{seed}/initiator")
    run.rng_r = RecordingRng(None if seed is None else f"{seed}/responder")
    config_i, config_r = _configs(ike, esp, encap)
    lookup: Callable[[str, str], bytes | None] = lambda local, remote: run.psk  # noqa: E731
    initiator = Dispatcher([config_i], lookup, rng=run.rng_i)
    responder = Dispatcher([config_r], lookup, rng=run.rng_r)
    now = 0.0

    def pump() -> None:
        for _ in range(100):
            batch = [(True, d) for d in initiator.datagrams_to_send(now)]
            batch += [(False, d) for d in responder.datagrams_to_send(now)]
            if not batch:
                break
            for from_initiator, datagram in batch:
                target = responder if from_initiator else initiator
                run.messages.append(
                    WireMessage(
                        number=len(run.messages) + 1,
                        time=now,
                        from_initiator=from_initiator,
                        source=datagram.local_addr,
                        destination=datagram.remote_addr,
                        data=datagram.data,
                        message=parse_message(datagram.data),
                    )
                )
                target.receive_datagram(datagram.data, datagram.local_addr,
                                        datagram.remote_addr, now)  # fmt: skip
        else:
            raise ExplainError("the engines did not go quiet")
        while (event := initiator.next_event()) is not None:
            run.events_i.append(event)
        while (event := responder.next_event()) is not None:
            run.events_r.append(event)

    ike_sa_id = initiator.initiate("explain", "net", now=now)
    pump()
    first = [e for e in run.events_i if isinstance(e, ChildSaEstablished)]
    if not first or not any(isinstance(e, IkeSaEstablished) for e in run.events_r):
        raise ExplainError(f"the negotiation failed: {run.events_i + run.events_r}")
    now = 60.0
    initiator.rekey_child(ike_sa_id, first[0].child_sa_id, now)
    pump()
    if rekey_ike:
        now = 90.0
        initiator.rekey_ike(ike_sa_id, now)
        pump()
        rekeyed = [e for e in run.events_i if isinstance(e, IkeSaRekeyed)]
        if not rekeyed:
            raise ExplainError("the IKE SA rekey failed")
        ike_sa_id = rekeyed[-1].ike_sa_id
    now = 120.0
    initiator.terminate_ike(ike_sa_id, now)
    pump()
    return run


# ------------------------------------------------------------------------- derivations


@dataclass
class Step:
    """One derivation: ``title`` (the formula), ``section`` (where it is defined),
    ``inputs``/``outputs`` as (name, value) pairs, ``check`` (what it was compared with)."""

    title: str
    section: str
    inputs: list[tuple[str, bytes | str]]
    outputs: list[tuple[str, bytes]]
    check: str = ""
    ok: bool = True
    key: str = ""  # the vector key

    def as_vector(self) -> dict[str, Any]:
        def value(v: bytes | str) -> str:
            return v.hex() if isinstance(v, bytes) else v

        return {
            "step": self.key,
            "title": self.title,
            "section": self.section,
            "inputs": {k: value(v) for k, v in self.inputs},
            "outputs": {k: value(v) for k, v in self.outputs},
        }


@dataclass
class Explanation:
    run: Run
    steps_after: dict[int, list[Step]]  # message number -> steps shown after it
    steps: list[Step]

    @property
    def ok(self) -> bool:
        return all(step.ok for step in self.steps)


@dataclass
class _IkeSaKeys:
    """What decrypting and deriving under one IKE SA needs; ``label`` names a rekeyed SA."""

    prf: Prf
    keys: Any
    cipher_i: Any
    cipher_r: Any
    label: str


def _x_private(rng: RecordingRng, method: KeId, public: bytes) -> bytes:
    """The rng output whose X25519/X448 public value is ``public``."""
    from cryptography.hazmat.primitives.asymmetric import x448, x25519
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    size = _X_CURVES[method]
    cls = x25519.X25519PrivateKey if method == KeId.CURVE25519 else x448.X448PrivateKey
    for candidate in rng.outputs:
        if len(candidate) != size:
            continue
        key = cls.from_private_bytes(candidate)
        if key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw) == public:
            return candidate
    raise ExplainError("key exchange private value not found among the rng outputs")


def x_shared(method: KeId, private: bytes, peer_public: bytes) -> bytes:
    """X25519/X448 (RFC 7748 sec. 5, RFC 8031 sec. 2) through ``cryptography``."""
    from cryptography.hazmat.primitives.asymmetric import x448, x25519

    if method == KeId.CURVE25519:
        return x25519.X25519PrivateKey.from_private_bytes(private).exchange(
            x25519.X25519PublicKey.from_public_bytes(peer_public)
        )
    return x448.X448PrivateKey.from_private_bytes(private).exchange(
        x448.X448PublicKey.from_public_bytes(peer_public)
    )


def _selected(msg: IkeMessage) -> Proposal:
    sa = msg.get(PayloadType.SA)
    assert isinstance(sa, SaPayload) and len(sa.proposals) == 1
    return sa.proposals[0]


def _payload(msg: IkeMessage, ptype: PayloadType) -> Any:
    payload = msg.get(ptype)
    if payload is None:
        raise ExplainError(f"message without {ptype.name}")
    return payload


def _id_body(payload: IdPayload) -> bytes:
    return payload.body_for_auth()


class _Deriver:
    def __init__(self, run: Run) -> None:
        self.run = run
        self.steps: list[Step] = []
        self.after: dict[int, list[Step]] = {}

    def add(self, number: int, step: Step) -> Step:
        self.steps.append(step)
        self.after.setdefault(number, []).append(step)
        return step

    def explain(self) -> Explanation:
        messages = self.run.messages
        init_req, init_resp = messages[0], messages[1]
        if init_resp.message.header.exchange != ExchangeType.IKE_SA_INIT:
            raise ExplainError("IKE_SA_INIT was not answered with an IKE_SA_INIT response")
        self._ike_sa_init(init_req, init_resp)
        requests: dict[tuple[bytes, bytes, int], WireMessage] = {}
        for wire in messages[2:]:
            # in wire order: a rekeyed IKE SA's keys exist before its first message
            self._decrypt(wire)
            header = wire.message.header
            key = (header.spi_i, header.spi_r, header.message_id)
            if not header.response:
                requests[key] = wire
                continue
            request = requests.get(key)
            if request is None:
                continue
            if header.exchange == ExchangeType.IKE_AUTH:
                self._auth(request, init_req, init_resp, initiator=True)
                self._auth(wire, init_req, init_resp, initiator=False)
                self._first_child(wire)
            elif header.exchange == ExchangeType.CREATE_CHILD_SA:
                self._create_child(request, wire)
        return Explanation(self.run, self.after, self.steps)

    # ---- IKE_SA_INIT -----------------------------------------------------------------

    def _ike_sa_init(self, request: WireMessage, response: WireMessage) -> None:
        req, resp = request.message, response.message
        chosen = _selected(resp)
        self.chosen = chosen
        prf_t = chosen_transform(chosen, TransformType.PRF)
        encr_t = chosen_transform(chosen, TransformType.ENCR)
        integ_t = chosen_transform(chosen, TransformType.INTEG)
        assert prf_t is not None and encr_t is not None
        self.prf = Prf(PrfId(prf_t.id))
        self.encr = EncrId(encr_t.id)
        self.encr_bits = encr_t.key_length
        self.integ = IntegId(integ_t.id) if integ_t is not None and integ_t.id else None
        ke_i: KePayload = _payload(req, PayloadType.KE)
        ke_r: KePayload = _payload(resp, PayloadType.KE)
        method = KeId(ke_i.group)
        self.ni = bytes(_payload(req, PayloadType.NONCE).nonce)
        self.nr = bytes(_payload(resp, PayloadType.NONCE).nonce)
        self.spi_i, self.spi_r = resp.header.spi_i, resp.header.spi_r
        number = response.number

        for wire in (request, response):
            self._natd(wire)

        private_i = _x_private(self.run.rng_i, method, bytes(ke_i.data))
        private_r = _x_private(self.run.rng_r, method, bytes(ke_r.data))
        g_ir = x_shared(method, private_i, bytes(ke_r.data))
        g_ri = x_shared(method, private_r, bytes(ke_i.data))
        self.add(number, Step(
            f"g^ir = {method.name}(initiator's private value, KEr)",
            "RFC 7296 sec. 1.2 and 2.14; RFC 8031 sec. 2 (RFC 7748 sec. 5)",
            [("initiator private", private_i), ("KEi (public)", bytes(ke_i.data)),
             ("responder private", private_r), ("KEr (public)", bytes(ke_r.data))],
            [("g^ir", g_ir)],
            check="the responder's X(private_r, KEi) gives the same value",
            ok=g_ir == g_ri, key="g_ir",
        ))  # fmt: skip
        skeyseed = compute_skeyseed(self.prf, g_ir, self.ni, self.nr)
        self.add(number, Step(
            "SKEYSEED = prf(Ni | Nr, g^ir)",
            "RFC 7296 sec. 2.14",
            [("prf", PrfId(prf_t.id).name), ("Ni | Nr (prf key)", self.ni + self.nr),
             ("g^ir (data)", g_ir)],
            [("SKEYSEED", skeyseed)], key="skeyseed",
        ))  # fmt: skip
        encr_len, integ_len = sk_key_lengths(self.encr, self.encr_bits, self.integ)
        keys = derive_ike_keys(self.prf, g_ir, self.ni, self.nr, self.spi_i, self.spi_r,
                               encr_len, integ_len)  # fmt: skip
        self.keys = keys
        size = self.prf.output_size
        total = 3 * size + 2 * integ_len + 2 * encr_len
        salt = (
            " (the last 4/3 octets are the AEAD salt, RFC 5282 sec. 7.1)" if not integ_len else ""
        )
        self.add(number, Step(
            "{SK_d | SK_ai | SK_ar | SK_ei | SK_er | SK_pi | SK_pr} = "
            "prf+(SKEYSEED, Ni | Nr | SPIi | SPIr)",
            "RFC 7296 sec. 2.14 (prf+ is sec. 2.13: T1 = prf(K, S | 0x01), "
            "Tn = prf(K, Tn-1 | S | n))",
            [("SKEYSEED (prf+ key)", skeyseed),
             ("Ni | Nr | SPIi | SPIr (seed)", self.ni + self.nr + self.spi_i + self.spi_r),
             ("octets taken", f"{total} = 3 x {size} (SK_d, SK_pi, SK_pr) + 2 x {integ_len} "
                              f"(SK_a) + 2 x {encr_len} (SK_e){salt}")],
            [("SK_d", keys.sk_d), ("SK_ai", keys.sk_ai), ("SK_ar", keys.sk_ar),
             ("SK_ei", keys.sk_ei), ("SK_er", keys.sk_er), ("SK_pi", keys.sk_pi),
             ("SK_pr", keys.sk_pr)],
            check="every SK payload below decrypts with these keys",
            key="ike_keys",
        ))  # fmt: skip
        self.cipher_i = make_sk_cipher(self.encr, self.encr_bits, self.integ, keys.sk_ei,
                                       keys.sk_ai or None)  # fmt: skip
        self.cipher_r = make_sk_cipher(self.encr, self.encr_bits, self.integ, keys.sk_er,
                                       keys.sk_ar or None)  # fmt: skip
        self.ike_sas = {
            (self.spi_i, self.spi_r): _IkeSaKeys(self.prf, keys, self.cipher_i, self.cipher_r, "")
        }

    def _natd(self, wire: WireMessage) -> None:
        msg = wire.message
        for notify in msg.notifies():
            if notify.notify_type == NotifyType.NAT_DETECTION_SOURCE_IP:
                address = wire.source
                name = "source"
            elif notify.notify_type == NotifyType.NAT_DETECTION_DESTINATION_IP:
                address = wire.destination
                name = "destination"
            else:
                continue
            import ipaddress

            packed = ipaddress.ip_address(address[0]).packed + address[1].to_bytes(2, "big")
            expected = hashlib.sha1(msg.header.spi_i + msg.header.spi_r + packed).digest()
            faked = self.run.encap and name == "source"
            check = (
                "encap=yes: the notify carries a random value instead, so the peer "
                "detects a NAT and both move to port 4500"
                if faked
                else "the notify carries this hash"
            )
            self.add(wire.number, Step(
                f"NAT_DETECTION_{name.upper()}_IP = SHA-1(SPIi | SPIr | IP | port)",
                "RFC 7296 sec. 2.23",
                [("SPIi | SPIr", msg.header.spi_i + msg.header.spi_r),
                 (f"{name} IP | port", packed)],
                [("hash", expected)],
                check=check,
                ok=(bytes(notify.data) == expected) != faked,
                key=f"natd_{name}_{wire.number}",
            ))  # fmt: skip

    # ---- SK payloads ------------------------------------------------------------------

    def _decrypt(self, wire: WireMessage) -> None:
        msg = wire.message
        if msg.encrypted_payload is None:
            return
        header = msg.header
        sa = self.ike_sas.get((header.spi_i, header.spi_r))
        if sa is None:
            wire.sk_keys = "no keys for these SPIs"
            self.add(wire.number, Step(f"SK payload of message {wire.number}",
                                       "RFC 7296 sec. 3.14", [], [], ok=False,
                                       key=f"sk_{wire.number}"))  # fmt: skip
            return
        # The I flag says who sent it: the original initiator of *this* IKE SA (sec. 3.1)
        cipher = sa.cipher_i if header.initiator else sa.cipher_r
        wire.sk_keys = ("SK_ei/SK_ai" if header.initiator else "SK_er/SK_ar") + sa.label
        ok = True
        try:
            wire.inner = decrypt_message(msg, cipher)
        except Exception as error:  # any failure here is a mismatch to report
            ok = False
            wire.sk_keys += f" -- does not decrypt: {error}"
        body = msg.encrypted_body
        iv_size, icv_size = cipher.iv_size, cipher.icv_size
        inputs: list[tuple[str, bytes | str]] = [
            ("keys", wire.sk_keys.split(" --")[0]),
            ("associated data (IKE header | SK header)", msg.associated_data),
            ("IV", body[:iv_size]),
            ("ciphertext", body[iv_size : len(body) - icv_size]),
            ("ICV", body[len(body) - icv_size :]),
        ]
        section = ("RFC 7296 sec. 3.14; RFC 5282 sec. 5.1 (AEAD: nonce = salt | IV)"
                   if is_aead(self.encr) else "RFC 7296 sec. 3.14 (encrypt-then-MAC)")  # fmt: skip
        plaintext = b""
        if wire.inner is not None:
            from ikev2.message import serialize_payload_chain

            plaintext = serialize_payload_chain(wire.inner.payloads)
        self.add(wire.number, Step(
            f"SK payload of message {wire.number} opened",
            section,
            inputs,
            [("inner payloads (before padding)", plaintext)],
            check="ICV verified",
            ok=ok,
            key=f"sk_{wire.number}",
        ))  # fmt: skip

    # ---- AUTH -------------------------------------------------------------------------

    def _auth(
        self, wire: WireMessage, init_req: WireMessage, init_resp: WireMessage, *, initiator: bool
    ) -> None:
        if wire.inner is None:
            raise ExplainError(f"message {wire.number} could not be decrypted")
        id_payload: IdPayload = _payload(
            wire.inner, PayloadType.IDi if initiator else PayloadType.IDr
        )
        auth: AuthPayload = _payload(wire.inner, PayloadType.AUTH)
        real_message = (init_req if initiator else init_resp).data
        peer_nonce = self.nr if initiator else self.ni
        sk_p = self.keys.sk_pi if initiator else self.keys.sk_pr
        who, i_or_r, nonce_name = ("Initiator", "I", "NonceRData") if initiator else (
            "Responder", "R", "NonceIData")  # fmt: skip
        maced_id = self.prf(sk_p, _id_body(id_payload))
        octets = signed_octets(real_message, peer_nonce, self.prf, sk_p, _id_body(id_payload))
        pad_key = self.prf(self.run.psk, KEY_PAD)
        value = self.prf(pad_key, octets)
        self.add(wire.number, Step(
            f"MACedIDFor{i_or_r} = prf(SK_p{i_or_r.lower()}, RestOfID{i_or_r}Payload)",
            "RFC 7296 sec. 2.15",
            [(f"SK_p{i_or_r.lower()}", sk_p),
             ("RestOfIDPayload (ID type | RESERVED | identity)", _id_body(id_payload))],
            [(f"MACedIDFor{i_or_r}", maced_id)],
            key=f"maced_id_{i_or_r.lower()}",
        ))  # fmt: skip
        self.add(wire.number, Step(
            f"{who}SignedOctets = RealMessage{1 if initiator else 2} | {nonce_name} | "
            f"MACedIDFor{i_or_r}",
            "RFC 7296 sec. 2.15",
            [(f"RealMessage{1 if initiator else 2} (the IKE_SA_INIT "
              f"{'request' if initiator else 'response'}, message "
              f"{(init_req if initiator else init_resp).number})", real_message),
             (nonce_name, peer_nonce), (f"MACedIDFor{i_or_r}", maced_id)],
            [(f"{who}SignedOctets", octets)],
            key=f"signed_octets_{i_or_r.lower()}",
        ))  # fmt: skip
        self.add(wire.number, Step(
            'AUTH = prf(prf(Shared Secret, "Key Pad for IKEv2"), SignedOctets)',
            "RFC 7296 sec. 2.15 (method 2, Shared Key Message Integrity Code)",
            [("Shared Secret (the demo PSK)", self.run.psk), ('"Key Pad for IKEv2"', KEY_PAD),
             ('prf(Shared Secret, "Key Pad for IKEv2")', pad_key)],
            [("AUTH", value)],
            check=f"equals the AUTH payload of message {wire.number}",
            ok=value == bytes(auth.data),
            key=f"auth_{i_or_r.lower()}",
        ))  # fmt: skip

    # ---- Child SAs --------------------------------------------------------------------

    def _child_keys(
        self,
        sa: _IkeSaKeys,
        number: int,
        response: IkeMessage,
        nonce_i: bytes,
        nonce_r: bytes,
        shared: bytes | None,
        installed_i: ChildSaEstablished | None,
        label: str,
    ) -> None:
        from ikev2.tasks.child_create import esp_key_lengths

        chosen = _selected(response)
        encr = chosen_transform(chosen, TransformType.ENCR)
        integ = chosen_transform(chosen, TransformType.INTEG)
        encr_len, integ_len = esp_key_lengths(
            int(encr.id) if encr else None, encr.key_length if encr else None,
            int(integ.id) if integ else None,
        )  # fmt: skip
        length = 2 * (encr_len + integ_len)
        keymat = derive_child_keymat(sa.prf, sa.keys.sk_d, nonce_i, nonce_r, shared, length)
        keys = split_child_keymat(keymat, encr_len, integ_len)
        seed_name = "g^ir (new) | Ni | Nr" if shared is not None else "Ni | Nr"
        inputs: list[tuple[str, bytes | str]] = [(f"SK_d{sa.label} (prf+ key)", sa.keys.sk_d)]
        if shared is not None:
            inputs.append(("g^ir (new, PFS)", shared))
        inputs += [("Ni", nonce_i), ("Nr", nonce_r),
                   ("octets taken", f"{length} = 2 x ({encr_len} encryption"
                    f"{' incl. salt' if encr and is_aead(int(encr.id)) else ''}"
                    f" + {integ_len} integrity)"),
                   ("selected ESP proposal", to_strongswan(chosen))]  # fmt: skip
        ok = True
        check = ""
        if installed_i is not None:
            ok = (installed_i.encr_key_out, installed_i.integ_key_out,
                  installed_i.encr_key_in, installed_i.integ_key_in) == (
                keys.encr_i2r, keys.integ_i2r, keys.encr_r2i, keys.integ_r2i)  # fmt: skip
            check = (f"equals the keys the initiator's engine installed (SPI in "
                     f"0x{installed_i.spi_in:08x}, out 0x{installed_i.spi_out:08x})")  # fmt: skip
        self.add(number, Step(
            f"KEYMAT = prf+(SK_d, {seed_name}) for {label}; "
            "split i->r (encryption, integrity) then r->i",
            "RFC 7296 sec. 2.17",
            inputs,
            [("KEYMAT", keymat), ("encryption key i->r", keys.encr_i2r),
             ("integrity key i->r", keys.integ_i2r), ("encryption key r->i", keys.encr_r2i),
             ("integrity key r->i", keys.integ_r2i)],
            check=check, ok=ok, key=f"child_keymat_{number}",
        ))  # fmt: skip

    def _first_child(self, response: WireMessage) -> None:
        installed = next(e for e in self.run.events_i if isinstance(e, ChildSaEstablished))
        assert response.inner is not None
        sa = self.ike_sas[(self.spi_i, self.spi_r)]
        self._child_keys(sa, response.number, response.inner, self.ni, self.nr, None, installed,
                         "the first Child SA (IKE_AUTH: the IKE_SA_INIT nonces)")  # fmt: skip

    def _create_child(self, request: WireMessage, response: WireMessage) -> None:
        if request.inner is None or response.inner is None:
            return
        if response.inner.get(PayloadType.SA) is None:
            return  # refused (an error notify): no keys
        header = response.message.header
        sa = self.ike_sas[(header.spi_i, header.spi_r)]
        if int(_selected(response.inner).protocol) == ProtocolId.IKE:
            self._rekey_ike(sa, request, response)
            return
        ni = bytes(_payload(request.inner, PayloadType.NONCE).nonce)
        nr = bytes(_payload(response.inner, PayloadType.NONCE).nonce)
        shared = None
        ke_i, ke_r = request.inner.get(PayloadType.KE), response.inner.get(PayloadType.KE)
        if isinstance(ke_i, KePayload) and isinstance(ke_r, KePayload):
            method = KeId(ke_i.group)
            req_rng = self.run.rng_i if request.from_initiator else self.run.rng_r
            resp_rng = self.run.rng_r if request.from_initiator else self.run.rng_i
            private_i = _x_private(req_rng, method, bytes(ke_i.data))
            private_r = _x_private(resp_rng, method, bytes(ke_r.data))
            shared = x_shared(method, private_i, bytes(ke_r.data))
            self.add(response.number, Step(
                f"g^ir (new) = {method.name}(private value of the CREATE_CHILD_SA "
                "initiator, KEr)",
                "RFC 7296 sec. 1.3.1 and 2.17 (PFS)",
                [("initiator private", private_i), ("KEi", bytes(ke_i.data)),
                 ("responder private", private_r), ("KEr", bytes(ke_r.data))],
                [("g^ir (new)", shared)],
                ok=shared == x_shared(method, private_r, bytes(ke_i.data)),
                key=f"child_g_ir_{response.number}",
            ))  # fmt: skip
        rekeyed = [e for e in self.run.events_i if isinstance(e, ChildSaRekeyed)]
        installed = rekeyed[0].new if rekeyed else None
        # The CREATE_CHILD_SA initiator's nonce is Ni, whoever started the IKE SA (2.17).
        if installed is not None and not request.from_initiator:
            installed = None  # the keys' direction flips; compared on the other side only
        self._child_keys(sa, response.number, response.inner, ni, nr, shared, installed,
                         "the new Child SA (CREATE_CHILD_SA nonces)")  # fmt: skip

    def _exchange_shared(self, request: WireMessage, response: WireMessage) -> tuple[Any, ...]:
        """(method, private_i, KEi, private_r, KEr, g^ir) of a CREATE_CHILD_SA exchange."""
        assert request.inner is not None and response.inner is not None
        ke_i: KePayload = _payload(request.inner, PayloadType.KE)
        ke_r: KePayload = _payload(response.inner, PayloadType.KE)
        method = KeId(ke_i.group)
        req_rng = self.run.rng_i if request.from_initiator else self.run.rng_r
        resp_rng = self.run.rng_r if request.from_initiator else self.run.rng_i
        private_i = _x_private(req_rng, method, bytes(ke_i.data))
        private_r = _x_private(resp_rng, method, bytes(ke_r.data))
        shared = x_shared(method, private_i, bytes(ke_r.data))
        if shared != x_shared(method, private_r, bytes(ke_i.data)):
            raise ExplainError("the two sides' key exchange results differ")
        return method, private_i, bytes(ke_i.data), private_r, bytes(ke_r.data), shared

    def _rekey_ike(self, old: _IkeSaKeys, request: WireMessage, response: WireMessage) -> None:
        """The new IKE SA of a CREATE_CHILD_SA rekey (RFC 7296 sec. 1.3.2, 2.18)."""
        assert request.inner is not None and response.inner is not None
        number = response.number
        ni = bytes(_payload(request.inner, PayloadType.NONCE).nonce)
        nr = bytes(_payload(response.inner, PayloadType.NONCE).nonce)
        spi_i = bytes(_selected(request.inner).spi)  # the rekey initiator's new SPI
        chosen = _selected(response.inner)
        spi_r = bytes(chosen.spi)
        method, private_i, ke_i, private_r, ke_r, shared = self._exchange_shared(request, response)
        self.add(number, Step(
            f"g^ir (new) = {method.name}(private value of the rekey initiator, KEr)",
            "RFC 7296 sec. 1.3.2 and 2.18",
            [("initiator private", private_i), ("KEi", ke_i),
             ("responder private", private_r), ("KEr", ke_r)],
            [("g^ir (new)", shared)], check="both sides compute the same value",
            key=f"ike_rekey_g_ir_{number}",
        ))  # fmt: skip
        prf_t = chosen_transform(chosen, TransformType.PRF)
        encr_t = chosen_transform(chosen, TransformType.ENCR)
        integ_t = chosen_transform(chosen, TransformType.INTEG)
        assert prf_t is not None and encr_t is not None
        prf_new = Prf(PrfId(prf_t.id))
        encr, bits = EncrId(encr_t.id), encr_t.key_length
        integ = IntegId(integ_t.id) if integ_t is not None and integ_t.id else None
        encr_len, integ_len = sk_key_lengths(encr, bits, integ)
        skeyseed = compute_rekey_skeyseed(old.prf, old.keys.sk_d, shared, ni, nr)
        self.add(number, Step(
            "SKEYSEED = prf(SK_d (old), g^ir (new) | Ni | Nr)",
            "RFC 7296 sec. 2.18 (the old SA's PRF and SK_d)",
            [(f"SK_d{old.label} (prf key)", old.keys.sk_d),
             ("g^ir (new) | Ni | Nr (data)", shared + ni + nr)],
            [("SKEYSEED", skeyseed)], key=f"ike_rekey_skeyseed_{number}",
        ))  # fmt: skip
        keys = derive_rekeyed_ike_keys(old.prf, old.keys.sk_d, prf_new, shared, ni, nr,
                                       spi_i, spi_r, encr_len, integ_len)  # fmt: skip
        self.add(number, Step(
            "{SK_d | SK_ai | SK_ar | SK_ei | SK_er | SK_pi | SK_pr} = "
            "prf+(SKEYSEED, Ni | Nr | SPIi | SPIr) with the new SPIs",
            "RFC 7296 sec. 2.18 and 2.14",
            [("SKEYSEED (prf+ key)", skeyseed),
             ("Ni | Nr | SPIi | SPIr (seed)", ni + nr + spi_i + spi_r),
             ("new IKE SA", f"SPIi {spi_i.hex()} SPIr {spi_r.hex()}, {to_strongswan(chosen)}")],
            [("SK_d", keys.sk_d), ("SK_ai", keys.sk_ai), ("SK_ar", keys.sk_ar),
             ("SK_ei", keys.sk_ei), ("SK_er", keys.sk_er), ("SK_pi", keys.sk_pi),
             ("SK_pr", keys.sk_pr)],
            check="every SK payload of the new IKE SA below decrypts with these keys",
            key=f"ike_rekey_keys_{number}",
        ))  # fmt: skip
        label = f" of IKE SA {spi_i.hex()[:8]}.."
        self.ike_sas[(spi_i, spi_r)] = _IkeSaKeys(
            prf_new, keys,
            make_sk_cipher(encr, bits, integ, keys.sk_ei, keys.sk_ai or None),
            make_sk_cipher(encr, bits, integ, keys.sk_er, keys.sk_ar or None),
            label,
        )  # fmt: skip


def explain_run(run: Run) -> Explanation:
    return _Deriver(run).explain()


# ------------------------------------------------------------------------- rendering


def _hex_block(value: bytes, indent: int) -> list[str]:
    text = value.hex()
    if not text:
        return ["(empty)"]
    width = 64  # 32 octets a line: one SHA-256 output or X25519 value
    return [text[i : i + width] for i in range(0, len(text), width)]


def render_step(step: Step, indent: str = "      ") -> list[str]:
    lines = [f"{indent}* {step.title}", f"{indent}  [{step.section}]"]
    for prefix, items in (("in ", step.inputs), ("out", step.outputs)):
        for name, value in items:
            if isinstance(value, bytes):
                head = f"{indent}  {prefix} {name} ({len(value)} octets):"
                lines.append(head)
                lines += [f"{indent}        {row}" for row in _hex_block(value, len(indent) + 8)]
            else:
                lines.append(f"{indent}  {prefix} {name}: {value}")
    if step.check:
        verdict = "ok" if step.ok else "MISMATCH"
        lines.append(f"{indent}  check: {step.check}: {verdict}")
    elif not step.ok:
        lines.append(f"{indent}  check: MISMATCH")
    return lines


def _arrow(wire: WireMessage) -> list[str]:
    header = wire.message.header
    role = "response" if header.response else "request"
    exchange = ExchangeType(header.exchange).name
    title = f"#{wire.number} {exchange} {role} (Message ID {header.message_id})"

    def name(payload: Any) -> str:
        # RFC 7296 writes the nonce and KE as Ni/Nr, KEi/KEr by the exchange's direction
        suffix = "r" if header.response else "i"
        if payload.TYPE == PayloadType.NONCE:
            return "N" + suffix
        if payload.TYPE == PayloadType.KE:
            return "KE" + suffix
        return short_name(payload)

    names = ["HDR"] + [name(p) for p in wire.message.payloads]
    if wire.inner is not None:
        names = ["HDR", "SK {" + ", ".join(name(p) for p in wire.inner.payloads) + "}"]
    span = WIDTH - 4
    rows = [f"  |  {title}".ljust(WIDTH - 1) + "|"]
    text = ", ".join(names)
    while text:
        cut = text[: span - 6]
        if len(text) > span - 6 and ", " in cut:
            cut = cut[: cut.rindex(", ") + 1]
        rows.append(f"  |  {cut.strip()}".ljust(WIDTH - 1) + "|")
        text = text[len(cut) :].strip()
    line = "-" * (WIDTH - 5)
    rows.append(f"  |{line[:-1]}>|" if wire.from_initiator else f"  |<{line[:-1]}|")
    return rows


def render_explanation(explanation: Explanation, *, keys: bool) -> str:
    run = explanation.run
    first = run.messages[0]
    lines = [
        "aioipsec explain: one IKEv2 negotiation between two in-memory aioipsec engines",
        f"seed: {run.seed if run.seed is not None else '(none: random, not reproducible)'}",
        f"IKE proposal: {run.ike_proposal}   ESP proposal: {run.esp_proposal}"
        f"{'   encap: yes' if run.encap else ''}",
        f"identities: {INITIATOR_ID} (initiator), {RESPONDER_ID} (responder); PSK auth",
        "",
        f"  Initiator {first.source[0]}".ljust(WIDTH - 20)
        + f"Responder {first.destination[0]}".rjust(20),
        "  |".ljust(WIDTH - 1) + "|",
    ]
    for wire in run.messages:
        lines += _arrow(wire)
        ports = f"{wire.source[0]}:{wire.source[1]} -> {wire.destination[0]}:{wire.destination[1]}"
        marker = (
            " after the 4-octet non-ESP marker (RFC 3948 sec. 2.2)"
            if 4500 in (wire.source[1], wire.destination[1])
            else ""
        )
        lines.append(f"      UDP {ports}: IKE message of {len(wire.data)} octets{marker}")
        lines += _message_details(wire)
        if keys:
            for step in explanation.steps_after.get(wire.number, []):
                lines += render_step(step)
        lines.append("  |".ljust(WIDTH - 1) + "|")
    lines.append("")
    mismatches = [s for s in explanation.steps if not s.ok]
    if mismatches:
        lines.append(
            f"MISMATCH in {len(mismatches)} step(s): " + "; ".join(s.title for s in mismatches)
        )
    elif keys:
        lines.append(f"all {len(explanation.steps)} derivation steps re-computed and checked")
    return "\n".join(lines) + "\n"


def _message_details(wire: WireMessage) -> list[str]:
    header = wire.message.header
    flags = [f for f, on in (("I", header.initiator), ("R", header.response)) if on]
    lines = [f"      HDR SPIi {header.spi_i.hex()} SPIr {header.spi_r.hex()} "
             f"flags {''.join(flags) or '-'} length {header.length}"]  # fmt: skip
    outer = wire.message.payloads
    for payload in outer:
        lines.append(f"      {payload_name(payload)}")
        lines += [f"        {row}" for row in describe_payload(payload)]
    if wire.inner is not None:
        lines.append(
            f"      inside SK ({wire.sk_keys}):" + ("" if wire.inner.payloads else " (nothing)")
        )
        for payload in wire.inner.payloads:
            lines.append(f"        {payload_name(payload)}")
            lines += [f"          {row}" for row in describe_payload(payload)]
    return lines


# ------------------------------------------------------------------------- --follow


def _follow_socket(path: str | None) -> str:
    from aioipsec.config import DEFAULT_CONTROL_SOCKET

    return path or os.environ.get("AIOIPSEC_SOCKET") or DEFAULT_CONTROL_SOCKET


def _clock(stamp: Any) -> str:
    import time as _time

    if not isinstance(stamp, int | float):
        return "--:--:--.---"
    return _time.strftime("%H:%M:%S", _time.localtime(stamp)) + f".{int(stamp * 1000) % 1000:03d}"


def _address_text(address: Any) -> str:
    if isinstance(address, list | tuple) and len(address) == 2:
        host, port = address
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(address)


def render_follow_record(record: dict[str, Any]) -> list[str]:
    """Ladder lines for one ``subscribe`` record: the daemon on the left, the peer right."""
    kind = record.get("type")
    if kind == "subscribed":
        lines = [f"aioipsec explain --follow: live IKE of the daemon (pid {record.get('pid')})"]
        if record.get("key_files"):
            lines.append(
                "session keys: the daemon runs with --save-keys and writes them to "
                + ", ".join(record["key_files"])
                + " (for Wireshark / aioipsec decode; never sent here)"
            )
        lines += ["", "  This daemon".ljust(WIDTH - 10) + "Peer".rjust(10)]
        lines.append("  |".ljust(WIDTH - 1) + "|")
        return lines
    if kind == "event":
        fields = record.get("fields") or {}
        shown = ", ".join(
            f"{key}={value}"
            for key, value in fields.items()
            if key in ("remote_addr", "remote_id", "child", "spi_in", "spi_out", "reason",
                       "action", "udp_encap", "error", "notify")
        )  # fmt: skip
        text = f"  |  {_clock(record.get('time'))} * {record.get('event')} "
        text += f"{record.get('connection')} #{record.get('ike_sa_id')}"
        return [text + (f" ({shown})" if shown else "")]
    if kind != "ike":
        return [f"  |  {record}"]
    outgoing = record.get("direction") == "out"
    peer = _address_text(record.get("remote"))
    us = _address_text(record.get("local"))
    if "error" in record:
        title = f"unparsable IKE datagram of {record.get('length')} octets: {record['error']}"
        names: list[str] = []
    else:
        role = "response" if record.get("response") else "request"
        title = f"{record.get('exchange')} {role} (Message ID {record.get('message_id')})"
        names = ["HDR", *record.get("payloads", [])]
    rows = [f"  |  {_clock(record.get('time'))} {title}".ljust(WIDTH - 1) + "|"]
    span = WIDTH - 10
    text = ", ".join(names)
    while text:
        cut = text[:span]
        if len(text) > span and ", " in cut:
            cut = cut[: cut.rindex(", ") + 1]
        rows.append(f"  |  {cut.strip()}".ljust(WIDTH - 1) + "|")
        text = text[len(cut) :].strip()
    line = "-" * (WIDTH - 5)
    rows.append(f"  |{line[:-1]}>|" if outgoing else f"  |<{line[:-1]}|")
    route = f"{us} -> {peer}" if outgoing else f"{peer} -> {us}"
    rows.append(f"      UDP {route}, {record.get('length')} octets")
    return rows


def follow(socket_path: str, *, count: int | None = None) -> int:
    """Print the daemon's ``subscribe`` stream as a ladder until it ends, Ctrl-C, or
    ``count`` IKE messages."""
    from aioipsec.control import ControlClient, ControlError

    seen = 0
    try:
        with ControlClient(socket_path, timeout=10.0) as client:
            for record in client.stream("subscribe"):
                if not isinstance(record, dict):
                    continue
                sys.stdout.write("\n".join(render_follow_record(record)) + "\n")
                sys.stdout.flush()
                if record.get("type") == "ike":
                    seen += 1
                    if count is not None and seen >= count:
                        return 0
    except ControlError as error:
        raise ExplainError(str(error)) from None
    except KeyboardInterrupt:
        return 0
    return 0


# ------------------------------------------------------------------------- test vectors


def export_vector(explanation: Explanation) -> dict[str, Any]:
    """A JSON test vector: the inputs, every message and every derivation step."""
    run = explanation.run
    return {
        "format": VECTOR_FORMAT,
        "source": "aioipsec explain --seed (two in-memory aioipsec engines)",
        "seed": run.seed,
        "ike_proposal": run.ike_proposal,
        "esp_proposal": run.esp_proposal,
        "encap": run.encap,
        "rekey_ike": run.rekey_ike,
        "psk": run.psk.hex(),
        "initiator": {"address": INITIATOR_ADDR, "id": INITIATOR_ID},
        "responder": {"address": RESPONDER_ADDR, "id": RESPONDER_ID},
        "messages": [
            {
                "number": w.number,
                "from": "initiator" if w.from_initiator else "responder",
                "source": list(w.source),
                "destination": list(w.destination),
                "exchange": ExchangeType(w.message.header.exchange).name,
                "message_id": w.message.header.message_id,
                "response": w.message.header.response,
                "data": w.data.hex(),
            }
            for w in run.messages
        ],
        "steps": [step.as_vector() for step in explanation.steps],
    }


# ------------------------------------------------------------------------- state diagram


def _layout(
    transitions: dict[tuple[Any, str], Any], initial: Any
) -> dict[Any, tuple[float, float]]:
    """Top-down layers: the longest path from the initial state over the edges that do
    not close a cycle; states of one layer side by side, lone states zig-zag so that
    long edges do not run through boxes."""
    edges = [(s, t) for (s, trigger), t in transitions.items() if s != t]
    # depth-first in table order: an edge back to a state on the current path closes a
    # cycle (rekey_failed, ...) and does not count for the layers
    forward: list[tuple[Any, Any]] = []
    seen: set[Any] = set()

    def visit(state: Any, path: list[Any]) -> None:
        seen.add(state)
        for source, target in edges:
            if source != state or target in path:
                continue
            forward.append((source, target))
            if target not in seen:
                visit(target, [*path, target])

    visit(initial, [initial])
    bfs = dict.fromkeys(seen, 0)
    layer = dict.fromkeys(bfs, 0)
    for _ in range(len(layer)):
        for source, target in forward:
            layer[target] = max(layer[target], layer[source] + 1)
    rows: dict[int, list[Any]] = {}
    for state in type(initial):
        rows.setdefault(layer.get(state, 0), []).append(state)
    singles = [index for index, states in sorted(rows.items()) if len(states) == 1]

    def place(choice: tuple[float, ...]) -> dict[Any, tuple[float, float]]:
        offsets = dict(zip(singles, choice, strict=True))
        positions = {}
        for index, states in sorted(rows.items()):
            for column, state in enumerate(states):
                x = offsets.get(index, (column - (len(states) - 1) / 2) * 6.4)
                positions[state] = (x, -index * 1.5)
        return positions

    def score(positions: dict[Any, tuple[float, float]]) -> float:
        """Edges running through other states' boxes, then total edge length."""
        hits, length = 0, 0.0
        for source, target in edges:
            (x1, y1), (x2, y2) = positions[source], positions[target]
            length += ((x2 - x1) ** 2 + (y2 - y1) ** 2) ** 0.5
            for state, (x, y) in positions.items():
                if state in (source, target):
                    continue
                for step in range(1, 10):
                    t = step / 10
                    px, py = x1 + t * (x2 - x1), y1 + t * (y2 - y1)
                    if abs(px - x) < BOX_HALF_WIDTH and abs(py - y) < BOX_HALF_HEIGHT:
                        hits += 1
                        break
        return hits * 100 + length

    import itertools

    best = min(itertools.product((0.0, -3.2, 3.2), repeat=len(singles)),
               key=lambda choice: score(place(choice)))  # fmt: skip
    return place(best)


BOX_HALF_WIDTH, BOX_HALF_HEIGHT = 1.25, 0.32


def _label_spot(
    start: tuple[float, float],
    end: tuple[float, float],
    rad: float,
    label: str,
    placed: list[tuple[float, float, float]],
) -> tuple[float, float]:
    """A point on the arc3 curve (a quadratic Bezier, control point as matplotlib puts it)
    where the label does not cover an earlier one; ``placed`` is updated."""
    (x1, y1), (x2, y2) = start, end
    cx, cy = (x1 + x2) / 2 + rad * (y2 - y1), (y1 + y2) / 2 - rad * (x2 - x1)
    half = 0.075 * len(label)
    spot = (0.0, 0.0)
    for t in (0.5, 0.35, 0.65, 0.25, 0.75, 0.5):
        u = 1 - t
        spot = (u * u * x1 + 2 * u * t * cx + t * t * x2, u * u * y1 + 2 * u * t * cy + t * t * y2)
        if all(abs(spot[1] - y) > 0.22 or abs(spot[0] - x) > half + w for x, y, w in placed):
            break
    placed.append((spot[0], spot[1], half))
    return spot


def _box_edge(center: tuple[float, float], toward: tuple[float, float]) -> tuple[float, float]:
    """Where the straight line from a state's centre to ``toward`` leaves its box."""
    dx, dy = toward[0] - center[0], toward[1] - center[1]
    scale = min(BOX_HALF_WIDTH / abs(dx) if dx else 1e9, BOX_HALF_HEIGHT / abs(dy) if dy else 1e9)
    return center[0] + dx * scale, center[1] + dy * scale


def draw_state_diagrams(path: str | Path) -> None:
    """Both state machines of ``ikev2.states`` as one PNG (needs matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import FancyBboxPatch
    except ImportError:
        raise ExplainError(
            "the state diagram needs matplotlib: pip install 'aioipsec[docs]'"
        ) from None
    from ikev2.states import CHILD_TRANSITIONS, IKE_TRANSITIONS, ChildState, IkeState

    panels = [
        ("IKE SA: ikev2.states.IKE_TRANSITIONS", IKE_TRANSITIONS, IkeState.CREATED,
         (IkeState.ESTABLISHED, IkeState.DELETING)),
        ("Child SA: ikev2.states.CHILD_TRANSITIONS", CHILD_TRANSITIONS, ChildState.CREATING,
         (ChildState.INSTALLED, ChildState.DELETING)),
    ]  # fmt: skip
    figure, axes = plt.subplots(1, 2, figsize=(17, 11), gridspec_kw={"width_ratios": [1, 1]})
    for ax, (title, table, initial, keep) in zip(axes, panels, strict=True):
        positions = _layout(table, initial)
        drawn: dict[tuple[Any, Any], list[str]] = {}
        placed: list[tuple[float, float, float]] = []  # label centres and half widths
        for (source, trigger), target in table.items():
            if trigger in ("fail", "deleted") and source not in keep:
                continue  # one note instead of an arrow from every state
            drawn.setdefault((source, target), []).append(trigger)
        for (source, target), triggers in drawn.items():
            label = " / ".join(triggers)
            (x1, y1), (x2, y2) = positions[source], positions[target]
            style = {
                "fontsize": 9,
                "color": "#7a2e00",
                "ha": "center",
                "va": "center",
                "bbox": {"fc": "white", "ec": "none", "alpha": 0.85, "pad": 0.6},
                "zorder": 5,
            }
            if source == target:
                ax.annotate(
                    "",
                    xy=(x1 + 1.22, y1 - 0.12),
                    xytext=(x1 + 1.22, y1 + 0.12),
                    arrowprops={
                        "arrowstyle": "-|>",
                        "color": "#444",
                        "shrinkA": 0,
                        "shrinkB": 0,
                        "connectionstyle": "arc3,rad=-3.5",
                    },
                )
                ax.text(x1 + 2.3, y1, label, **style)
                continue
            back = y2 > y1  # upwards: a retry or a failed rekey going back
            skip = abs(y2 - y1) > 1.6 and x1 == x2
            rad = -0.35 if back else (0.3 if skip else 0.12)
            start = _box_edge((x1, y1), (x2, y2))
            end = _box_edge((x2, y2), (x1, y1))
            ax.annotate("", xy=end, xytext=start,
                        arrowprops={"arrowstyle": "-|>", "shrinkA": 1, "shrinkB": 1,
                                    "mutation_scale": 16,
                                    "color": "#2b5d9b" if back else "#444",
                                    "connectionstyle": f"arc3,rad={rad}"})  # fmt: skip
            ax.text(*_label_spot(start, end, rad, label, placed), label, **style)
        for state, (x, y) in positions.items():
            ax.add_patch(FancyBboxPatch((x - 1.2, y - 0.27), 2.4, 0.54,
                                        boxstyle="round,pad=0.04", fc="#e8f0fe", ec="#1a4480",
                                        zorder=3))  # fmt: skip
            ax.text(x, y, state.value, ha="center", va="center", fontsize=11, weight="bold",
                    zorder=4)  # fmt: skip
        xs = [p[0] for p in positions.values()]
        ys = [p[1] for p in positions.values()]
        ax.set_xlim(min(xs) - 3.5, max(xs) + 3.5)
        ax.set_ylim(min(ys) - 0.8, max(ys) + 0.8)
        ax.set_title(f"{title}\n('fail' / 'deleted' lead to DELETED from every live state)",
                     fontsize=12)  # fmt: skip
        ax.set_aspect("equal")
        ax.axis("off")
    figure.suptitle("aioipsec state machines, drawn from the transition tables in "
                    "ikev2/states.py by python -m aioipsec.explain --state-diagram",
                    fontsize=13)  # fmt: skip
    figure.tight_layout()
    # No date in the PNG metadata: the same table gives the same file.
    figure.savefig(str(path), dpi=72, metadata={"Software": None})
    plt.close(figure)


# ------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, help="fixed nonces, SPIs, IVs and DH private values")
    parser.add_argument("--keys", action="store_true",
                        help="show every key derivation step with its RFC section")  # fmt: skip
    parser.add_argument("--ike", default="aes256gcm16-prfsha256-x25519", metavar="PROPOSAL",
                        help="IKE proposal in strongSwan syntax (x25519 or x448)")  # fmt: skip
    parser.add_argument("--esp", default="aes256gcm16", metavar="PROPOSAL",
                        help="ESP proposal in strongSwan syntax (add -x25519 for PFS)")  # fmt: skip
    parser.add_argument("--rekey-ike", action="store_true",
                        help="also rekey the IKE SA (RFC 7296 sec. 2.18)")  # fmt: skip
    parser.add_argument("--encap", action="store_true",
                        help="force UDP encapsulation (port 4500, as behind a NAT)")  # fmt: skip
    parser.add_argument("--export-vector", type=Path, metavar="FILE",
                        help="write the run as a JSON test vector (needs --seed)")  # fmt: skip
    parser.add_argument("--follow", action="store_true",
                        help="print a live daemon's IKE messages and events as a ladder "
                        "(control command 'subscribe'; no keys)")  # fmt: skip
    parser.add_argument("--socket", metavar="PATH",
                        help="--follow: the daemon's control socket (default: $AIOIPSEC_SOCKET "
                        "or /run/aioipsec.sock)")  # fmt: skip
    parser.add_argument("--count", type=int, metavar="N",
                        help="--follow: stop after N IKE messages")  # fmt: skip
    parser.add_argument(
        "--state-diagram",
        type=Path,
        metavar="OUT.png",
        help="draw the IKE/Child SA state machines from ikev2.states and exit",
    )


def run(args: argparse.Namespace) -> int:
    try:
        if args.state_diagram is not None:
            draw_state_diagrams(args.state_diagram)
            print(f"wrote {args.state_diagram}")
            return 0
        if args.follow:
            return follow(_follow_socket(args.socket), count=args.count)
        if args.export_vector is not None and args.seed is None:
            raise ExplainError("--export-vector needs --seed (a vector must be reproducible)")
        negotiation = run_negotiation(
            args.seed, args.ike, args.esp, encap=args.encap, rekey_ike=args.rekey_ike
        )
        explanation = explain_run(negotiation)
        sys.stdout.write(render_explanation(explanation, keys=args.keys))
        if args.export_vector is not None:
            args.export_vector.write_text(json.dumps(export_vector(explanation), indent=1) + "\n")
            print(f"test vector written to {args.export_vector}", file=sys.stderr)
        return 0 if explanation.ok else 1
    except ExplainError as error:
        print(f"aioipsec explain: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="aioipsec explain",
        description="Run one IKEv2 negotiation (IKE_SA_INIT, IKE_AUTH, CREATE_CHILD_SA, "
        "INFORMATIONAL) between two in-memory aioipsec engines and print it as a ladder "
        "diagram with every payload; --keys adds every key derivation step with its RFC "
        "section, re-computed from the wire and checked. With --follow, print a running "
        "daemon's IKE messages (as it sends and receives them) and engine events live as "
        "the same ladder, from its control socket (no keys are shown).",
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
