"""Derivations: every key re-derived from the bytes on the wire, and checked.

g^ir, SKEYSEED and the SK_* keys (RFC 7296 sec. 2.13, 2.14), the SK payloads decrypted with
them (sec. 3.14), both AUTH payloads (sec. 2.15), each Child SA's KEYMAT (sec. 2.17) and
the IKE SA rekey (sec. 2.18), each compared with what the engines computed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import x448, x25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from aioipsec.explain.runner import (
    X_CURVES,
    ExplainError,
    RecordingRng,
    Run,
    WireMessage,
)
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
)
from ikev2.message import IkeMessage, decrypt_message
from ikev2.payloads import (
    AuthPayload,
    IdPayload,
    KePayload,
    Proposal,
    SaPayload,
)
from ikev2.proposals import chosen_transform, to_strongswan
from ikev2.tasks.child_create import esp_key_lengths


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

    size = X_CURVES[method]
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
            method, private_i, private_r, shared, agreed = self._exchange_shared(
                request, ke_i, ke_r
            )
            self.add(response.number, Step(
                f"g^ir (new) = {method.name}(private value of the CREATE_CHILD_SA "
                "initiator, KEr)",
                "RFC 7296 sec. 1.3.1 and 2.17 (PFS)",
                [("initiator private", private_i), ("KEi", bytes(ke_i.data)),
                 ("responder private", private_r), ("KEr", bytes(ke_r.data))],
                [("g^ir (new)", shared)],
                ok=agreed,
                key=f"child_g_ir_{response.number}",
            ))  # fmt: skip
        rekeyed = [e for e in self.run.events_i if isinstance(e, ChildSaRekeyed)]
        installed = rekeyed[0].new if rekeyed else None
        # The CREATE_CHILD_SA initiator's nonce is Ni, whoever started the IKE SA (2.17).
        if installed is not None and not request.from_initiator:
            installed = None  # the keys' direction flips; compared on the other side only
        self._child_keys(sa, response.number, response.inner, ni, nr, shared, installed,
                         "the new Child SA (CREATE_CHILD_SA nonces)")  # fmt: skip

    def _exchange_shared(
        self, request: WireMessage, ke_i: KePayload, ke_r: KePayload
    ) -> tuple[KeId, bytes, bytes, bytes, bool]:
        """(method, private_i, private_r, g^ir, whether the responder computes the same
        g^ir) of a CREATE_CHILD_SA exchange's KEi and KEr; the private values are those
        the recorded RNG of each side gave (the exchange's initiator may be either)."""
        method = KeId(ke_i.group)
        req_rng = self.run.rng_i if request.from_initiator else self.run.rng_r
        resp_rng = self.run.rng_r if request.from_initiator else self.run.rng_i
        private_i = _x_private(req_rng, method, bytes(ke_i.data))
        private_r = _x_private(resp_rng, method, bytes(ke_r.data))
        shared = x_shared(method, private_i, bytes(ke_r.data))
        agreed = shared == x_shared(method, private_r, bytes(ke_i.data))
        return method, private_i, private_r, shared, agreed

    def _rekey_ike(self, old: _IkeSaKeys, request: WireMessage, response: WireMessage) -> None:
        """The new IKE SA of a CREATE_CHILD_SA rekey (RFC 7296 sec. 1.3.2, 2.18)."""
        assert request.inner is not None and response.inner is not None
        number = response.number
        ni = bytes(_payload(request.inner, PayloadType.NONCE).nonce)
        nr = bytes(_payload(response.inner, PayloadType.NONCE).nonce)
        spi_i = bytes(_selected(request.inner).spi)  # the rekey initiator's new SPI
        chosen = _selected(response.inner)
        spi_r = bytes(chosen.spi)
        ke_i: KePayload = _payload(request.inner, PayloadType.KE)
        ke_r: KePayload = _payload(response.inner, PayloadType.KE)
        method, private_i, private_r, shared, agreed = self._exchange_shared(request, ke_i, ke_r)
        if not agreed:
            raise ExplainError("the two sides' key exchange results differ")
        self.add(number, Step(
            f"g^ir (new) = {method.name}(private value of the rekey initiator, KEr)",
            "RFC 7296 sec. 1.3.2 and 2.18",
            [("initiator private", private_i), ("KEi", bytes(ke_i.data)),
             ("responder private", private_r), ("KEr", bytes(ke_r.data))],
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
