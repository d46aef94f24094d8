"""The key material of one IKE SA: negotiated algorithms, SKEYSEED and SK_*, both SK
ciphers, the nonces and the octets AUTH signs (RFC 7296 sec. 2.14, 2.15, 2.17, 2.18;
RFC 9242 IntAuth; RFC 9370 additional key exchanges).

One :class:`Keymat` lives on each IKE SA (``IkeSa.keymat``). Tasks derive and install keys
only through it, so the places where SK_* change are the methods below:

* :meth:`Keymat.derive_initial` after IKE_SA_INIT (sec. 2.14),
* :meth:`Keymat.update_after_intermediate` after each IKE_INTERMEDIATE key exchange
  (RFC 9370 sec. 2.2.2),
* :meth:`Keymat.apply_ppk` when IKE_AUTH agreed on a postquantum preshared key (RFC 8784),
* :meth:`Keymat.derive_rekeyed` for the new IKE SA of a rekey (sec. 2.18),
* :meth:`Keymat.child_keys` for a Child SA's KEYMAT (sec. 2.17).

Nothing here logs or prints a key (``repr`` shows algorithms only).
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from ikev2.crypto.auth import signed_octets
from ikev2.crypto.keys import (
    ChildKeys,
    IkeKeys,
    derive_child_keymat,
    derive_ike_keys,
    derive_rekeyed_ike_keys,
    split_child_keymat,
    update_ike_keys_additional_ke,
)
from ikev2.crypto.prf import Prf
from ikev2.crypto.sk import SkCipher, make_sk_cipher, sk_key_lengths
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
from ikev2.errors import ProtocolError
from ikev2.message import (
    IKE_HEADER_SIZE,
    IkeHeader,
    IkeMessage,
    encrypted_message_length,
    serialize_payload_chain,
)
from ikev2.payloads import Proposal, Transform
from ikev2.proposals import chosen_transform, to_strongswan, transforms_of

Rng = Callable[[int], bytes]

#: The transform types of RFC 9370 additional key exchanges (ADDKE1..ADDKE7).
ADDKE_TYPES = tuple(range(int(TransformType.ADDKE1), int(TransformType.ADDKE7) + 1))


def additional_methods(proposal: Proposal) -> list[int]:
    """The negotiated ADDKE methods of a selected proposal, in transform type order."""
    return [
        int(t.id) for ttype in ADDKE_TYPES for t in transforms_of(proposal, ttype) if int(t.id) != 0
    ]


# The selected IKE proposal of IKE_SA_INIT is the same few for every IKE SA of a gateway:
# one shared copy instead of a Proposal with its Transforms per IKE SA (about 0.6 KiB
# each). Shared, so never mutated (nothing changes a selected proposal after selection).
@functools.lru_cache(maxsize=256)
def _shared_proposal(
    number: int, protocol: ProtocolId | int, transforms: tuple[tuple[Any, int, int | None], ...]
) -> Proposal:
    return Proposal(number, protocol, b"", [Transform(*t) for t in transforms])


def _shared(proposal: Proposal) -> Proposal:
    """An equal copy of ``proposal`` that other IKE SAs keep too, or ``proposal`` itself
    when it carries an SPI (an IKE rekey's: its own) or attributes besides Key Length."""
    if proposal.spi or any(t.other_attributes for t in proposal.transforms):
        return proposal
    transforms = tuple((t.type, t.id, t.key_length) for t in proposal.transforms)
    return _shared_proposal(proposal.number, proposal.protocol, transforms)


class Keymat:
    """Algorithms, keys and AUTH inputs of one IKE SA (see the module docstring).

    ``initiator``: whether we are the original initiator of the IKE SA (our outbound keys
    are then SK_ei/SK_ai). ``rng`` supplies the AES-CBC IVs of the outbound SK cipher.
    """

    # One per IKE SA (10,000s of them in the daemon): no instance dictionary.
    __slots__ = (
        "_rng",
        "additional_ke",
        "additional_ke_done",
        "chosen_proposal",
        "cipher_in",
        "cipher_out",
        "encr",
        "encr_key_bits",
        "init_request",
        "init_response",
        "initiator",
        "int_auth_i",
        "int_auth_r",
        "integ",
        "ke_method",
        "keys",
        "nonce_i",
        "nonce_r",
        "prf",
        "prf_id",
    )

    def __init__(self, initiator: bool, rng: Rng) -> None:
        self.initiator = initiator
        self._rng = rng
        # Negotiated algorithms (from the selected IKE proposal).
        self.chosen_proposal: Proposal | None = None
        self.encr: EncrId | None = None
        self.encr_key_bits: int | None = None
        self.integ: IntegId | None = None
        self.prf_id: PrfId | None = None
        self.ke_method: KeId | None = None
        self.additional_ke: list[int] = []
        #: RFC 9370 IKE_INTERMEDIATE key exchanges completed (responder side).
        self.additional_ke_done = 0
        # Keys.
        self.prf: Prf | None = None
        self.keys: IkeKeys | None = None
        self.cipher_out: SkCipher | None = None
        self.cipher_in: SkCipher | None = None
        # What AUTH covers (sec. 2.15, RFC 9242 sec. 3.3.2).
        self.nonce_i = b""
        self.nonce_r = b""
        self.init_request = b""  # RealMessage1
        self.init_response = b""  # RealMessage2
        self.int_auth_i = b""
        self.int_auth_r = b""

    def __repr__(self) -> str:
        return f"<Keymat {self.algorithm_summary()} keys={'yes' if self.keys else 'no'}>"

    # ------------------------------------------------------------------ algorithms

    def apply_proposal(self, chosen: Proposal) -> None:
        """Take the algorithms of the selected IKE proposal."""
        encr = chosen_transform(chosen, TransformType.ENCR)
        prf = chosen_transform(chosen, TransformType.PRF)
        ke = chosen_transform(chosen, TransformType.KE)
        if encr is None or prf is None or ke is None:
            raise ProtocolError(
                "IKE proposal without ENCR, PRF or KE", NotifyType.NO_PROPOSAL_CHOSEN
            )
        integ = chosen_transform(chosen, TransformType.INTEG)
        self.encr = EncrId(encr.id)
        self.encr_key_bits = encr.key_length
        self.integ = IntegId(integ.id) if integ is not None and integ.id != 0 else None
        self.prf_id = PrfId(prf.id)
        self.ke_method = KeId(ke.id)
        self.additional_ke = additional_methods(chosen)
        self.chosen_proposal = _shared(chosen)

    def algorithm_summary(self) -> str:
        """The chosen proposal in strongSwan's notation, or ``-`` before IKE_SA_INIT."""
        return to_strongswan(self.chosen_proposal) if self.chosen_proposal is not None else "-"

    def key_lengths(self) -> tuple[int, int]:
        """(SK_e incl. salt, SK_a) lengths; an algorithm we cannot run is NO_PROPOSAL_CHOSEN."""
        assert self.encr is not None
        try:
            return sk_key_lengths(self.encr, self.encr_key_bits, self.integ)
        except ProtocolError as error:
            raise ProtocolError(error.reason, NotifyType.NO_PROPOSAL_CHOSEN) from None

    # ------------------------------------------------------------------ IKE SA keys

    def install(self, keys: IkeKeys) -> None:
        """Set SK_* and build both SK ciphers (ours: SK_ei/SK_ai when we are the initiator)."""
        assert self.encr is not None
        self.keys = keys
        if self.initiator:
            out_e, out_a, in_e, in_a = keys.sk_ei, keys.sk_ai, keys.sk_er, keys.sk_ar
        else:
            out_e, out_a, in_e, in_a = keys.sk_er, keys.sk_ar, keys.sk_ei, keys.sk_ai
        self.cipher_out = make_sk_cipher(
            self.encr, self.encr_key_bits, self.integ, out_e, out_a or None, rng=self._rng
        )
        self.cipher_in = make_sk_cipher(
            self.encr, self.encr_key_bits, self.integ, in_e, in_a or None
        )

    def derive_initial(self, shared_secret: bytes, spi_i: bytes, spi_r: bytes) -> None:
        """SKEYSEED and SK_* after IKE_SA_INIT (sec. 2.14); nonces must be set."""
        assert self.prf_id is not None
        self.prf = Prf(self.prf_id)
        encr_len, integ_len = self.key_lengths()
        keys = derive_ike_keys(
            self.prf, shared_secret, self.nonce_i, self.nonce_r, spi_i, spi_r, encr_len, integ_len
        )
        self.install(keys)

    def update_after_intermediate(self, shared_secret: bytes, spi_i: bytes, spi_r: bytes) -> None:
        """Fold one IKE_INTERMEDIATE key exchange's secret in (RFC 9370 sec. 2.2.2)."""
        assert self.prf is not None and self.keys is not None
        encr_len, integ_len = self.key_lengths()
        keys = update_ike_keys_additional_ke(
            self.prf,
            self.keys,
            shared_secret,
            self.nonce_i,
            self.nonce_r,
            spi_i,
            spi_r,
            encr_len,
            integ_len,
        )
        self.install(keys)

    def derive_rekeyed(
        self,
        old: Keymat,
        chosen: Proposal,
        shared: bytes,
        nonce_i: bytes,
        nonce_r: bytes,
        spi_i: bytes,
        spi_r: bytes,
        additional: Sequence[bytes] = (),
    ) -> None:
        """This (new) IKE SA's keys from a rekey of ``old``: SKEYSEED = prf(SK_d (old),
        g^ir (new) | SK(1..n) | Ni | Nr), sec. 2.18 / RFC 9370 sec. 2.2.4."""
        assert old.prf is not None and old.keys is not None
        self.apply_proposal(chosen)
        # The additional key exchanges of a rekey are done already (IKE_FOLLOWUP_KE), not in
        # IKE_INTERMEDIATE on the new SA.
        self.additional_ke = []
        assert self.prf_id is not None
        self.prf = Prf(self.prf_id)
        self.nonce_i, self.nonce_r = nonce_i, nonce_r
        encr_len, integ_len = self.key_lengths()
        keys = derive_rekeyed_ike_keys(
            old.prf,
            old.keys.sk_d,
            self.prf,
            shared,
            nonce_i,
            nonce_r,
            spi_i,
            spi_r,
            encr_len,
            integ_len,
            additional_shared_secrets=additional,
        )
        self.install(keys)

    # ------------------------------------------------------------------ Child SA keys

    def child_keys(
        self,
        nonce_i: bytes,
        nonce_r: bytes,
        shared_secret: bytes | None,
        encr_len: int,
        integ_len: int,
        additional: Sequence[bytes] = (),
    ) -> ChildKeys:
        """KEYMAT = prf+(SK_d, [g^ir | SK(1..n) |] Ni | Nr), split i->r first (sec. 2.17,
        RFC 9370 sec. 2.2.4)."""
        assert self.prf is not None and self.keys is not None
        keymat = derive_child_keymat(
            self.prf,
            self.keys.sk_d,
            nonce_i,
            nonce_r,
            shared_secret,
            2 * (encr_len + integ_len),
            additional_shared_secrets=additional,
        )
        return split_child_keymat(keymat, encr_len, integ_len)

    # ------------------------------------------------------------------ AUTH inputs

    def int_auth(self, message_id: int) -> bytes:
        """RFC 9242 sec. 3.3.2: IntAuth = IntAuth_iN | IntAuth_rN | IKE_AUTH_MID, appended to
        both sides' signed octets when IKE_INTERMEDIATE exchanges took place."""
        if not self.int_auth_i and not self.int_auth_r:
            return b""
        return self.int_auth_i + self.int_auth_r + message_id.to_bytes(4, "big")

    def auth_octets(
        self, *, initiator_side: bool, id_body: bytes, message_id: int, ppk: bytes | None = None
    ) -> bytes:
        """The signed octets of the initiator's or the responder's AUTH (sec. 2.15); with
        ``ppk``, MACedIDFor uses SK_pi/SK_pr with that PPK folded in (RFC 8784 sec. 3),
        before :meth:`apply_ppk` made it the SA's (the initiator signs both ways)."""
        assert self.prf is not None and self.keys is not None
        key = self.keys.sk_pi if initiator_side else self.keys.sk_pr
        if ppk is not None:
            key = self.prf.plus(ppk, key, len(key))
        if initiator_side:
            base = signed_octets(self.init_request, self.nonce_r, self.prf, key, id_body)
        else:
            base = signed_octets(self.init_response, self.nonce_i, self.prf, key, id_body)
        return base + self.int_auth(message_id)

    def auth_done(self) -> None:
        """IKE_AUTH is over and the IKE SA established: drop what only AUTH and the first
        Child SA's KEYMAT used. RealMessage1/2 and the IKE_SA_INIT nonces are inputs of the
        AUTH payloads (sec. 2.15, RFC 9242 sec. 3.3.2 IntAuth) and of the Child SA created
        with IKE_AUTH (sec. 2.17); every later exchange brings nonces of its own (sec. 1.3,
        2.17, 2.18), and a retransmitted IKE_AUTH request is answered from the response
        cache, not computed again (sec. 2.1). About 0.9 KiB per IKE SA."""
        self.init_request = self.init_response = b""
        self.int_auth_i = self.int_auth_r = b""
        self.nonce_i = self.nonce_r = b""
        # SK_pi/SK_pr go into AUTH only (sec. 2.15; RFC 8784 folds the PPK into SK_d for
        # later rekeys), SKEYSEED only into SK_*: a rekey derives from SK_d (sec. 2.18).
        if self.keys is not None:
            self.keys = replace(self.keys, skeyseed=b"", sk_pi=b"", sk_pr=b"")

    def apply_ppk(self, ppk: bytes) -> None:
        """RFC 8784 sec. 3: SK_d = prf+(PPK, SK_d'), SK_pi = prf+(PPK, SK_pi'), SK_pr =
        prf+(PPK, SK_pr'), each as long as before; SK_e and SK_a stay. Called once both
        sides agreed on the PPK in IKE_AUTH, before the AUTH payloads are checked and the
        first Child SA's keys are derived (they come from the new SK_d), and so for every
        rekey after."""
        assert self.prf is not None and self.keys is not None
        keys = self.keys
        self.keys = replace(
            keys,
            sk_d=self.prf.plus(ppk, keys.sk_d, len(keys.sk_d)),
            sk_pi=self.prf.plus(ppk, keys.sk_pi, len(keys.sk_pi)),
            sk_pr=self.prf.plus(ppk, keys.sk_pr, len(keys.sk_pr)),
        )

    def record_intermediate(
        self,
        payloads: list[Any],
        *,
        outgoing: bool,
        message_id: int,
        spi_i: bytes,
        spi_r: bytes,
        message: IkeMessage | None = None,
    ) -> None:
        """Fold one IKE_INTERMEDIATE message into IntAuth_i / IntAuth_r (RFC 9242 sec.
        3.3.2) with the SK_pi / SK_pr in force for that exchange."""
        assert self.prf is not None and self.keys is not None
        octets = self._int_auth_octets(payloads, outgoing, message_id, spi_i, spi_r, message)
        from_initiator = self.initiator if outgoing else not self.initiator
        if from_initiator:
            self.int_auth_i = self.prf(self.keys.sk_pi, self.int_auth_i + octets)
        else:
            self.int_auth_r = self.prf(self.keys.sk_pr, self.int_auth_r + octets)

    def _int_auth_octets(
        self,
        payloads: list[Any],
        outgoing: bool,
        message_id: int,
        spi_i: bytes,
        spi_r: bytes,
        message: IkeMessage | None,
    ) -> bytes:
        """IntAuth_*_A | IntAuth_*_P of RFC 9242 sec. 3.3.2, computed as if the message had
        not been fragmented: the IKE header and SK payload header with the lengths of the
        unfragmented message, then the inner payloads in clear."""
        plain = serialize_payload_chain(payloads)
        if message is not None and not message.is_fragment and message.sk_offset is not None:
            return message.associated_data + plain
        cipher = self.cipher_out if outgoing else self.cipher_in
        assert cipher is not None
        length = encrypted_message_length(payloads, cipher)
        # IKE_INTERMEDIATE requests always come from the original initiator (RFC 9242 sec. 3).
        from_initiator = self.initiator if outgoing else not self.initiator
        header = IkeHeader(
            spi_i=spi_i,
            spi_r=spi_r,
            next_payload=PayloadType.SK,
            exchange=ExchangeType.IKE_INTERMEDIATE,
            initiator=from_initiator,
            response=not from_initiator,
            message_id=message_id,
            length=length,
        )
        first = int(payloads[0].TYPE) if payloads else 0
        return header.serialize() + struct.pack("!BBH", first, 0, length - IKE_HEADER_SIZE) + plain
