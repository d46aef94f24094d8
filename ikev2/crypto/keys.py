"""IKEv2 key derivation: IKE SA keys, rekeyed IKE SA keys, Child SA KEYMAT, RFC 9370 updates.

RFC 7296 sec. 2.14 (IKE SA), 2.17 (Child SA), 2.18 (IKE SA rekey), and RFC 9370 sec. 2.2.2
(additional key exchanges in IKE_INTERMEDIATE) / sec. 2.2.4 (in CREATE_CHILD_SA followed by
IKE_FOLLOWUP_KE). Key lengths are in octets. Nothing here logs or reprs key material.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ikev2.crypto.prf import Prf

# RFC 7296 sec. 2.14: for the fixed-key-size PRFs only the first 64 bits of each nonce form
# the SKEYSEED key, so that Ni' | Nr' is exactly the 128-bit AES key.
_FIXED_KEY_NONCE_PREFIX = 8


@dataclass(frozen=True, slots=True)
class IkeKeys:
    """The seven IKE SA keys of RFC 7296 sec. 2.14, plus the SKEYSEED they came from.

    Once IKE_AUTH is over, an established IKE SA keeps them with ``skeyseed``, ``sk_pi``
    and ``sk_pr`` empty (``Keymat.auth_done``): those serve the AUTH payloads only.

    For AEAD encryption ``sk_ai``/``sk_ar`` are empty and ``sk_ei``/``sk_er`` include the salt
    (RFC 5282 sec. 7.1). Fields are ``repr=False``: keys never reach a log line by accident.
    """

    skeyseed: bytes = field(repr=False)
    sk_d: bytes = field(repr=False)
    sk_ai: bytes = field(repr=False)
    sk_ar: bytes = field(repr=False)
    sk_ei: bytes = field(repr=False)
    sk_er: bytes = field(repr=False)
    sk_pi: bytes = field(repr=False)
    sk_pr: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class ChildKeys:
    """Child SA keys split out of KEYMAT (RFC 7296 sec. 2.17).

    ``*_i2r``: the SA carrying traffic from the initiator to the responder (the initiator's
    outbound, the responder's inbound); ``*_r2i``: the other direction. "Initiator" here is
    the initiator of the exchange that created the Child SA (for a rekey: of the
    CREATE_CHILD_SA exchange). For AEAD ciphers the encryption key includes the salt and the
    integrity keys are empty.
    """

    encr_i2r: bytes = field(repr=False)
    integ_i2r: bytes = field(repr=False)
    encr_r2i: bytes = field(repr=False)
    integ_r2i: bytes = field(repr=False)


def _skeyseed_key(prf: Prf, nonce_i: bytes, nonce_r: bytes) -> bytes:
    """The SKEYSEED key Ni | Nr, or Ni[:8] | Nr[:8] for AES-XCBC/CMAC (RFC 7296 sec. 2.14)."""
    if prf.has_fixed_key_size:
        return nonce_i[:_FIXED_KEY_NONCE_PREFIX] + nonce_r[:_FIXED_KEY_NONCE_PREFIX]
    return nonce_i + nonce_r


def _split_ike_keymat(
    prf: Prf,
    skeyseed: bytes,
    nonce_i: bytes,
    nonce_r: bytes,
    spi_i: bytes,
    spi_r: bytes,
    encr_key_len: int,
    integ_key_len: int,
) -> IkeKeys:
    """{SK_d | SK_ai | SK_ar | SK_ei | SK_er | SK_pi | SK_pr} = prf+(SKEYSEED, Ni|Nr|SPIi|SPIr)."""
    if len(spi_i) != 8 or len(spi_r) != 8:
        raise ValueError("IKE SPIs are 8 octets each")
    if encr_key_len < 0 or integ_key_len < 0:
        raise ValueError("key lengths must not be negative")
    prf_key_len = prf.key_size
    total = 3 * prf_key_len + 2 * integ_key_len + 2 * encr_key_len
    keymat = prf.plus(skeyseed, nonce_i + nonce_r + spi_i + spi_r, total)
    offset = 0

    def take(length: int) -> bytes:
        nonlocal offset
        part = keymat[offset : offset + length]
        offset += length
        return part

    sk_d = take(prf_key_len)
    sk_ai = take(integ_key_len)
    sk_ar = take(integ_key_len)
    sk_ei = take(encr_key_len)
    sk_er = take(encr_key_len)
    sk_pi = take(prf_key_len)
    sk_pr = take(prf_key_len)
    return IkeKeys(skeyseed, sk_d, sk_ai, sk_ar, sk_ei, sk_er, sk_pi, sk_pr)


def compute_skeyseed(prf: Prf, shared_secret: bytes, nonce_i: bytes, nonce_r: bytes) -> bytes:
    """SKEYSEED = prf(Ni | Nr, g^ir) (RFC 7296 sec. 2.14, with the AES-PRF nonce rule)."""
    return prf(_skeyseed_key(prf, nonce_i, nonce_r), shared_secret)


def derive_ike_keys(
    prf: Prf,
    shared_secret: bytes,
    nonce_i: bytes,
    nonce_r: bytes,
    spi_i: bytes,
    spi_r: bytes,
    encr_key_len: int,
    integ_key_len: int,
) -> IkeKeys:
    """The keys of a new IKE SA from IKE_SA_INIT (RFC 7296 sec. 2.14).

    ``encr_key_len`` includes the salt for AEAD/CTR ciphers; ``integ_key_len`` is 0 for AEAD.
    The SPIs are the 8-octet IKE SPIs as on the wire.
    """
    skeyseed = compute_skeyseed(prf, shared_secret, nonce_i, nonce_r)
    return _split_ike_keymat(
        prf, skeyseed, nonce_i, nonce_r, spi_i, spi_r, encr_key_len, integ_key_len
    )


def compute_rekey_skeyseed(
    prf_old: Prf,
    sk_d_old: bytes,
    shared_secret: bytes,
    nonce_i: bytes,
    nonce_r: bytes,
    additional_shared_secrets: Sequence[bytes] = (),
) -> bytes:
    """SKEYSEED = prf(SK_d (old), g^ir (new) | Ni | Nr) (RFC 7296 sec. 2.18).

    With RFC 9370 additional key exchanges (sec. 2.2.4) the secrets of the IKE_FOLLOWUP_KE
    exchanges follow g^ir in order: prf(SK_d, g^ir | SK(1) | ... | SK(n) | Ni | Nr).
    """
    return prf_old(
        sk_d_old, shared_secret + b"".join(additional_shared_secrets) + nonce_i + nonce_r
    )


def derive_rekeyed_ike_keys(
    prf_old: Prf,
    sk_d_old: bytes,
    prf_new: Prf,
    shared_secret: bytes,
    nonce_i: bytes,
    nonce_r: bytes,
    spi_i: bytes,
    spi_r: bytes,
    encr_key_len: int,
    integ_key_len: int,
    additional_shared_secrets: Sequence[bytes] = (),
) -> IkeKeys:
    """Keys of the new IKE SA after a CREATE_CHILD_SA rekey (RFC 7296 sec. 2.18).

    SKEYSEED uses the OLD SA's PRF keyed with its SK_d; the seven keys are then produced with
    the NEW SA's PRF (which may differ). Nonces and SPIs are those of the rekey exchange and
    the new SA (Ni/SPIi from the initiator of the CREATE_CHILD_SA exchange).
    """
    skeyseed = compute_rekey_skeyseed(
        prf_old, sk_d_old, shared_secret, nonce_i, nonce_r, additional_shared_secrets
    )
    return _split_ike_keymat(
        prf_new, skeyseed, nonce_i, nonce_r, spi_i, spi_r, encr_key_len, integ_key_len
    )


def update_ike_keys_additional_ke(
    prf: Prf,
    previous: IkeKeys,
    additional_shared_secret: bytes,
    nonce_i: bytes,
    nonce_r: bytes,
    spi_i: bytes,
    spi_r: bytes,
    encr_key_len: int,
    integ_key_len: int,
) -> IkeKeys:
    """RFC 9370 sec. 2.2.2: fold the secret of the n-th IKE_INTERMEDIATE key exchange in.

    SKEYSEED(n) = prf(SK_d(n-1), SK(n) | Ni | Nr) and then ALL seven keys are recomputed:
    {SK_d(n) | SK_ai(n) | SK_ar(n) | SK_ei(n) | SK_er(n) | SK_pi(n) | SK_pr(n)}
    = prf+(SKEYSEED(n), Ni | Nr | SPIi | SPIr). Ni/Nr/SPIs are those of IKE_SA_INIT.
    The next IKE_INTERMEDIATE (or IKE_AUTH) is protected with the updated SK_e/SK_a.
    """
    # The same form as a rekey's SKEYSEED (sec. 2.18), keyed with the previous SK_d.
    skeyseed = compute_rekey_skeyseed(
        prf, previous.sk_d, additional_shared_secret, nonce_i, nonce_r
    )
    return _split_ike_keymat(
        prf, skeyseed, nonce_i, nonce_r, spi_i, spi_r, encr_key_len, integ_key_len
    )


def derive_child_keymat(
    prf: Prf,
    sk_d: bytes,
    nonce_i: bytes,
    nonce_r: bytes,
    shared_secret: bytes | None,
    length: int,
    additional_shared_secrets: Sequence[bytes] = (),
) -> bytes:
    """Child SA KEYMAT (RFC 7296 sec. 2.17).

    Without PFS: KEYMAT = prf+(SK_d, Ni | Nr). With a KE in CREATE_CHILD_SA:
    KEYMAT = prf+(SK_d, g^ir (new) | Ni | Nr). RFC 9370 sec. 2.2.4 appends the secrets of the
    additional key exchanges after g^ir. For the first Child SA (IKE_AUTH) the nonces are those
    of IKE_SA_INIT and there is never a shared secret here.
    """
    if shared_secret is None:
        if additional_shared_secrets:
            raise ValueError("additional key exchanges need a KE shared secret first")
        seed = nonce_i + nonce_r
    else:
        seed = shared_secret + b"".join(additional_shared_secrets) + nonce_i + nonce_r
    return prf.plus(sk_d, seed, length)


def child_keymat_length(encr_len: int, integ_len: int) -> int:
    """Octets of KEYMAT a Child SA pair consumes: both directions' encr + integ keys."""
    return 2 * (encr_len + integ_len)


def split_child_keymat(keymat: bytes, encr_len: int, integ_len: int) -> ChildKeys:
    """Split KEYMAT into the two directions (RFC 7296 sec. 2.17).

    "All keys for SAs carrying data from the initiator to the responder are taken before SAs
    going from the responder to the initiator", and within one SA the encryption key comes
    before the integrity key.
    """
    need = child_keymat_length(encr_len, integ_len)
    if len(keymat) < need:
        raise ValueError(f"KEYMAT has {len(keymat)} octets, {need} needed")
    first = encr_len + integ_len
    return ChildKeys(
        encr_i2r=keymat[:encr_len],
        integ_i2r=keymat[encr_len:first],
        encr_r2i=keymat[first : first + encr_len],
        integ_r2i=keymat[first + encr_len : need],
    )
