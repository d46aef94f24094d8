"""strongSwan proposal syntax <-> :class:`ikev2.payloads.Proposal`, and proposal selection.

Configuration side (``ike_proposals`` / ``esp_proposals`` in swanctl.conf syntax)::

    parse_proposals("aes256gcm16-prfsha256-x25519, default", ProtocolId.IKE)

A proposal string is a ``-`` separated list of keywords; each keyword adds one
transform (algorithm + key length) of its type, so one string may carry several
algorithms per type (``aes128-aes256-sha256-sha384-x25519-ecp256``). The keyword set
and the completion rules follow strongSwan's ``proposal_keywords_static.txt`` and
``proposal_create_from_string()`` (behaviour learnt from strongSwan 6, code our own):

* IKE: without an explicit PRF, every integrity algorithm implies its PRF
  (``sha256`` -> ``prfsha256``); a PRF and a KE method are mandatory; ``none`` is
  dropped; AEAD and classic ciphers must not be mixed; AEAD proposals carry no integrity.
* ESP/AH: PRF keywords are dropped; without ``esn``/``noesn`` the proposal gets
  ``noesn``; a KE method (``aes256gcm16-x25519``) requests PFS for CREATE_CHILD_SA;
  ``aesXXXgmac`` in AH is the AES-GMAC integrity algorithm.
* ``keN_method`` (N = 1..7) adds an RFC 9370 additional key exchange (``ke1_mlkem768``).
* ``default`` expands to :func:`default_proposals`.

Deviation from strongSwan: ``esn``/``noesn`` in an IKE proposal is an error here (RFC 7296
sec. 3.3.2 defines ESN only for AH and ESP); strongSwan accepts and sends it.

Selection (RFC 7296 sec. 2.7 and 3.3.6): :func:`select_proposal` does what charon does
with its default ``prefer_configured_proposals = yes``: our configured proposals, in our
order, are tried against the peer's, and within a transform type the algorithm that comes
first in *our* proposal wins. ``prefer_supplied=True`` gives the peer's order precedence
(charon's ``prefer_configured_proposals = no``). The chosen proposal carries the peer's
proposal number and SPI and exactly one transform of each type.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ikev2.enums import (
    EncrId,
    EsnId,
    IntegId,
    KeId,
    NotifyType,
    PrfId,
    ProtocolId,
    TransformType,
)
from ikev2.errors import ProtocolError
from ikev2.payloads import Proposal, Transform

__all__ = [
    "AEAD_ENCR",
    "KE_TRANSFORM_TYPES",
    "NoProposalChosen",
    "ProposalSyntaxError",
    "check_selected_proposal",
    "chosen_transform",
    "default_proposals",
    "display",
    "display_list",
    "display_swanctl",
    "explain_mismatch",
    "is_aead",
    "keyword_for",
    "parse_proposal",
    "parse_proposals",
    "select_proposal",
    "to_strongswan",
    "transforms_of",
    "without_key_exchange",
]


class ProposalSyntaxError(ValueError):
    """A proposal string from the configuration is not valid (names the bad keyword)."""

    def __init__(self, message: str, keyword: str | None = None) -> None:
        super().__init__(message)
        self.keyword = keyword


class NoProposalChosen(ProtocolError):
    """No acceptable proposal: answer NO_PROPOSAL_CHOSEN (RFC 7296 sec. 2.7, 3.10.1).

    ``reason`` explains for people which transform type had no common algorithm.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason, notify=NotifyType.NO_PROPOSAL_CHOSEN)


# --------------------------------------------------------------------------------------
# Keyword table (strongSwan names -> IANA transform type, ID, key length)
# --------------------------------------------------------------------------------------

ENCR = TransformType.ENCR
PRF = TransformType.PRF
INTEG = TransformType.INTEG
KE = TransformType.KE
ESN = TransformType.ESN

KE_TRANSFORM_TYPES = frozenset(
    [TransformType.KE, *(TransformType(t) for t in range(TransformType.ADDKE1, 13))]
)

# RFC 5282 / RFC 7634 / RFC 4543: ciphers that provide integrity themselves.
AEAD_ENCR = frozenset(
    {
        EncrId.ENCR_AES_CCM_8,
        EncrId.ENCR_AES_CCM_12,
        EncrId.ENCR_AES_CCM_16,
        EncrId.ENCR_AES_GCM_8,
        EncrId.ENCR_AES_GCM_12,
        EncrId.ENCR_AES_GCM_16,
        EncrId.ENCR_NULL_AUTH_AES_GMAC,
        EncrId.ENCR_CAMELLIA_CCM_8,
        EncrId.ENCR_CAMELLIA_CCM_12,
        EncrId.ENCR_CAMELLIA_CCM_16,
        EncrId.ENCR_CHACHA20_POLY1305,
    }
)


@dataclass(frozen=True)
class _Keyword:
    type: TransformType
    id: int
    key_length: int | None


def _build_keywords() -> tuple[dict[str, _Keyword], dict[tuple[int, int, int | None], str]]:
    """All keywords, plus the canonical keyword for each (type, id, key length)."""
    table: dict[str, _Keyword] = {}
    canonical: dict[tuple[int, int, int | None], str] = {}
    ident: int  # the loops below bind it to ids of four registries

    def add(name: str, ttype: TransformType, ident: int, bits: int | None, *, canon: bool) -> None:
        table[name] = _Keyword(ttype, ident, bits)
        if canon:
            canonical.setdefault((int(ttype), int(ident), bits), name)

    # Encryption. strongSwan's bare names ("aes", "aes128gcm") are aliases; the canonical
    # rendering spells the key size and the ICV length out.
    add("null", ENCR, EncrId.ENCR_NULL, None, canon=True)
    add("des", ENCR, EncrId.ENCR_DES, None, canon=True)
    add("3des", ENCR, EncrId.ENCR_3DES, None, canon=True)
    add("cast128", ENCR, EncrId.ENCR_CAST, 128, canon=True)
    for bits in (128, 192, 256):
        add(f"aes{bits}", ENCR, EncrId.ENCR_AES_CBC, bits, canon=True)
        add(f"aes{bits}ctr", ENCR, EncrId.ENCR_AES_CTR, bits, canon=True)
        add(f"camellia{bits}", ENCR, EncrId.ENCR_CAMELLIA_CBC, bits, canon=True)
        add(f"camellia{bits}ctr", ENCR, EncrId.ENCR_CAMELLIA_CTR, bits, canon=True)
        add(f"blowfish{bits}", ENCR, EncrId.ENCR_BLOWFISH, bits, canon=True)
        add(f"aes{bits}gmac", ENCR, EncrId.ENCR_NULL_AUTH_AES_GMAC, bits, canon=True)
        for mode, ids in (
            ("ccm", (EncrId.ENCR_AES_CCM_8, EncrId.ENCR_AES_CCM_12, EncrId.ENCR_AES_CCM_16)),
            ("gcm", (EncrId.ENCR_AES_GCM_8, EncrId.ENCR_AES_GCM_12, EncrId.ENCR_AES_GCM_16)),
        ):
            for icv_bytes, ident in zip((8, 12, 16), ids):
                add(f"aes{bits}{mode}{icv_bytes}", ENCR, ident, bits, canon=True)
                add(f"aes{bits}{mode}{icv_bytes * 8}", ENCR, ident, bits, canon=False)
            add(f"aes{bits}{mode}", ENCR, ids[2], bits, canon=False)
        cam = (
            EncrId.ENCR_CAMELLIA_CCM_8,
            EncrId.ENCR_CAMELLIA_CCM_12,
            EncrId.ENCR_CAMELLIA_CCM_16,
        )
        for icv_bytes, ident in zip((8, 12, 16), cam):
            add(f"camellia{bits}ccm{icv_bytes}", ENCR, ident, bits, canon=True)
            add(f"camellia{bits}ccm{icv_bytes * 8}", ENCR, ident, bits, canon=False)
    add("aes", ENCR, EncrId.ENCR_AES_CBC, 128, canon=False)
    add("camellia", ENCR, EncrId.ENCR_CAMELLIA_CBC, 128, canon=False)
    add("blowfish", ENCR, EncrId.ENCR_BLOWFISH, 128, canon=False)
    add("chacha20poly1305", ENCR, EncrId.ENCR_CHACHA20_POLY1305, None, canon=True)
    # strongSwan's interop variant that sends a (redundant) Key Length attribute.
    add("chacha20poly1305compat", ENCR, EncrId.ENCR_CHACHA20_POLY1305, 256, canon=True)

    # Integrity.
    for name, ident in (
        ("sha1", IntegId.AUTH_HMAC_SHA1_96),
        ("sha1_160", IntegId.AUTH_HMAC_SHA1_160),
        ("sha256", IntegId.AUTH_HMAC_SHA2_256_128),
        ("sha384", IntegId.AUTH_HMAC_SHA2_384_192),
        ("sha512", IntegId.AUTH_HMAC_SHA2_512_256),
        ("md5", IntegId.AUTH_HMAC_MD5_96),
        ("md5_128", IntegId.AUTH_HMAC_MD5_128),
        ("aesxcbc", IntegId.AUTH_AES_XCBC_96),
        ("aescmac", IntegId.AUTH_AES_CMAC_96),
    ):
        add(name, INTEG, ident, None, canon=True)
    add("sha", INTEG, IntegId.AUTH_HMAC_SHA1_96, None, canon=False)
    add("sha2_256", INTEG, IntegId.AUTH_HMAC_SHA2_256_128, None, canon=False)
    add("sha2_384", INTEG, IntegId.AUTH_HMAC_SHA2_384_192, None, canon=False)
    add("sha2_512", INTEG, IntegId.AUTH_HMAC_SHA2_512_256, None, canon=False)

    # Pseudo-random functions.
    for name, ident in (
        ("prfsha1", PrfId.PRF_HMAC_SHA1),
        ("prfsha256", PrfId.PRF_HMAC_SHA2_256),
        ("prfsha384", PrfId.PRF_HMAC_SHA2_384),
        ("prfsha512", PrfId.PRF_HMAC_SHA2_512),
        ("prfmd5", PrfId.PRF_HMAC_MD5),
        ("prfaesxcbc", PrfId.PRF_AES128_XCBC),
        ("prfaescmac", PrfId.PRF_AES128_CMAC),
    ):
        add(name, PRF, ident, None, canon=True)

    # Key exchange methods.
    for name, ident in (
        ("none", KeId.NONE),
        ("modp768", KeId.MODP_768),
        ("modp1024", KeId.MODP_1024),
        ("modp1536", KeId.MODP_1536),
        ("modp2048", KeId.MODP_2048),
        ("modp3072", KeId.MODP_3072),
        ("modp4096", KeId.MODP_4096),
        ("modp6144", KeId.MODP_6144),
        ("modp8192", KeId.MODP_8192),
        ("ecp192", KeId.ECP_192),
        ("ecp224", KeId.ECP_224),
        ("ecp256", KeId.ECP_256),
        ("ecp384", KeId.ECP_384),
        ("ecp521", KeId.ECP_521),
        ("modp1024s160", KeId.MODP_1024_160),
        ("modp2048s224", KeId.MODP_2048_224),
        ("modp2048s256", KeId.MODP_2048_256),
        ("ecp224bp", KeId.BRAINPOOL_P224),
        ("ecp256bp", KeId.BRAINPOOL_P256),
        ("ecp384bp", KeId.BRAINPOOL_P384),
        ("ecp512bp", KeId.BRAINPOOL_P512),
        ("x25519", KeId.CURVE25519),
        ("x448", KeId.CURVE448),
        ("gost256", KeId.GOST3410_2012_256),
        ("gost512", KeId.GOST3410_2012_512),
        ("mlkem512", KeId.ML_KEM_512),
        ("mlkem768", KeId.ML_KEM_768),
        ("mlkem1024", KeId.ML_KEM_1024),
    ):
        add(name, KE, ident, None, canon=True)
    add("modpnone", KE, KeId.NONE, None, canon=False)
    add("curve25519", KE, KeId.CURVE25519, None, canon=False)
    add("curve448", KE, KeId.CURVE448, None, canon=False)

    # Extended sequence numbers (RFC 4303 sec. 2.2.1, RFC 7296 sec. 3.3.2).
    add("noesn", ESN, EsnId.NO_ESN, None, canon=True)
    add("esn", ESN, EsnId.ESN, None, canon=True)
    return table, canonical


_KEYWORDS, _CANONICAL = _build_keywords()

# Keywords strongSwan knows that map to its private-use IDs (or to algorithms withdrawn
# from the registry): recognised so the error can say why they are refused.
_STRONGSWAN_PRIVATE = frozenset(
    {
        "serpent",
        "serpent128",
        "serpent192",
        "serpent256",
        "twofish",
        "twofish128",
        "twofish192",
        "twofish256",
        "sha256_96",
        "sha2_256_96",
        "camelliaxcbc",
        "prfcamelliaxcbc",
        "modpnull",
        "ntru112",
        "ntru128",
        "ntru192",
        "ntru256",
        "newhope128",
    }
)

# RFC 7296 sec. 2.14 / strongSwan: an IKE proposal without PRF takes the PRF built on the
# same primitive as each of its integrity algorithms.
_PRF_FOR_INTEG: dict[int, PrfId] = {
    IntegId.AUTH_HMAC_SHA1_96: PrfId.PRF_HMAC_SHA1,
    IntegId.AUTH_HMAC_SHA1_160: PrfId.PRF_HMAC_SHA1,
    IntegId.AUTH_HMAC_SHA2_256_128: PrfId.PRF_HMAC_SHA2_256,
    IntegId.AUTH_HMAC_SHA2_384_192: PrfId.PRF_HMAC_SHA2_384,
    IntegId.AUTH_HMAC_SHA2_512_256: PrfId.PRF_HMAC_SHA2_512,
    IntegId.AUTH_HMAC_MD5_96: PrfId.PRF_HMAC_MD5,
    IntegId.AUTH_HMAC_MD5_128: PrfId.PRF_HMAC_MD5,
    IntegId.AUTH_AES_XCBC_96: PrfId.PRF_AES128_XCBC,
    IntegId.AUTH_AES_CMAC_96: PrfId.PRF_AES128_CMAC,
}

_GMAC_INTEG = {
    128: IntegId.AUTH_AES_128_GMAC,
    192: IntegId.AUTH_AES_192_GMAC,
    256: IntegId.AUTH_AES_256_GMAC,
}

# Order of transform types in a proposal: strongSwan's order (ENCR, INTEG, PRF, KE, ESN,
# ADDKE1..7), used for the wire, the strongSwan syntax and the display forms alike.
_TYPE_ORDER = {
    int(TransformType.ENCR): 0,
    int(TransformType.INTEG): 1,
    int(TransformType.PRF): 2,
    int(TransformType.KE): 3,
    int(TransformType.ESN): 4,
}


def _type_rank(ttype: int) -> int:
    return _TYPE_ORDER.get(int(ttype), int(ttype))


def is_aead(encr_id: int) -> bool:
    """True for combined-mode ciphers (no separate integrity transform, RFC 5282)."""
    return encr_id in AEAD_ENCR


def _is_ke_type(ttype: int) -> bool:
    return int(ttype) in KE_TRANSFORM_TYPES


def _addke_number(ttype: int) -> int:
    return int(ttype) - int(TransformType.ADDKE1) + 1


def _lookup_keyword(word: str) -> tuple[TransformType, _Keyword]:
    """Resolve one keyword (case-insensitive, like strongSwan) incl. ``keN_`` prefixes."""
    lower = word.lower()
    token = _KEYWORDS.get(lower)
    if token is not None:
        return token.type, token
    if len(lower) > 4 and lower.startswith("ke") and lower[2].isdigit() and lower[3] == "_":
        number = int(lower[2])
        base = _KEYWORDS.get(lower[4:])
        if 1 <= number <= 7 and base is not None and base.type == KE:
            return TransformType(int(TransformType.ADDKE1) + number - 1), base
    if lower in _STRONGSWAN_PRIVATE:
        raise ProposalSyntaxError(
            f"algorithm {word!r} uses a strongSwan private-use identifier and is not "
            "supported by aioipsec",
            word,
        )
    raise ProposalSyntaxError(f"algorithm {word!r} not recognized", word)


# --------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------


def _add(transforms: list[Transform], ttype: int, ident: int, bits: int | None) -> None:
    for existing in transforms:
        if existing.type == ttype and existing.id == ident and existing.key_length == bits:
            return  # strongSwan keeps the first occurrence only
    transforms.append(Transform(_as_type(ttype), ident, bits))


def _as_type(ttype: int) -> TransformType | int:
    try:
        return TransformType(ttype)
    except ValueError:
        return ttype


def _of_type(transforms: Iterable[Transform], ttype: int) -> list[Transform]:
    return [t for t in transforms if t.type == ttype]


def parse_proposal(text: str, protocol: ProtocolId | int, number: int = 1) -> Proposal:
    """Parse one strongSwan proposal string (no commas) for ``protocol``."""
    protocol = ProtocolId(protocol)
    if protocol not in (ProtocolId.IKE, ProtocolId.ESP, ProtocolId.AH):
        raise ProposalSyntaxError(f"proposals are for IKE, ESP or AH, not {protocol.name}")
    words = [w.strip() for w in text.strip().split("-")]
    if not text.strip() or any(not w for w in words):
        raise ProposalSyntaxError(f"empty algorithm in proposal {text!r}", "")
    transforms: list[Transform] = []
    for word in words:
        ttype, token = _lookup_keyword(word)
        if protocol is ProtocolId.IKE and ttype == ESN:
            raise ProposalSyntaxError(
                f"{word!r} (extended sequence numbers) is only valid in ESP/AH proposals",
                word,
            )
        _add(transforms, ttype, token.id, token.key_length)
    _complete(transforms, protocol, text)
    transforms.sort(key=lambda t: _type_rank(t.type))  # stable: keeps in-type order
    return Proposal(number=number, protocol=protocol, spi=b"", transforms=transforms)


def _complete(transforms: list[Transform], protocol: ProtocolId, text: str) -> None:
    """Apply strongSwan's completion rules (module docstring) in place."""
    if protocol is ProtocolId.IKE:
        if not _of_type(transforms, PRF):
            for integ in _of_type(transforms, INTEG):
                prf = _PRF_FOR_INTEG.get(integ.id)
                if prf is not None:
                    _add(transforms, PRF, prf, None)
        if not _of_type(transforms, PRF):
            raise ProposalSyntaxError(f"a PRF algorithm is mandatory in IKE proposals ({text!r})")
        transforms[:] = [t for t in transforms if not (t.type == KE and t.id == KeId.NONE)]
        if not _of_type(transforms, KE):
            raise ProposalSyntaxError(
                f"a key exchange method is mandatory in IKE proposals ({text!r})"
            )
    else:
        transforms[:] = [t for t in transforms if t.type != PRF]

    if protocol in (ProtocolId.IKE, ProtocolId.ESP):
        ciphers = _of_type(transforms, ENCR)
        if not ciphers:
            raise ProposalSyntaxError(
                f"an encryption algorithm is mandatory in {protocol.name} proposals ({text!r})"
            )
        aead = [is_aead(t.id) for t in ciphers]
        if any(aead) and not all(aead):
            raise ProposalSyntaxError(
                "classic and combined-mode (AEAD) encryption algorithms can't be contained "
                f"in the same {protocol.name} proposal ({text!r})"
            )
        if all(aead):
            # RFC 7296 sec. 3.3: AEAD proposals MUST NOT contain integrity transforms.
            transforms[:] = [t for t in transforms if t.type != INTEG]
        elif protocol is ProtocolId.IKE and not _of_type(transforms, INTEG):
            raise ProposalSyntaxError(
                "an integrity algorithm is mandatory in IKE proposals with classic "
                f"(non-AEAD) encryption ({text!r})"
            )
    else:  # AH: GMAC keywords are integrity algorithms, other ciphers are dropped
        kept: list[Transform] = []
        for t in transforms:
            if t.type == ENCR:
                if t.id == EncrId.ENCR_NULL_AUTH_AES_GMAC and t.key_length in _GMAC_INTEG:
                    kept.append(Transform(INTEG, _GMAC_INTEG[t.key_length]))
                continue
            kept.append(t)
        transforms[:] = kept
        if not _of_type(transforms, INTEG):
            raise ProposalSyntaxError(
                f"an integrity algorithm is mandatory in AH proposals ({text!r})"
            )

    if protocol in (ProtocolId.ESP, ProtocolId.AH) and not _of_type(transforms, ESN):
        transforms.append(Transform(ESN, EsnId.NO_ESN))


def parse_proposals(
    text: str | Iterable[str], protocol: ProtocolId | int, *, first_number: int = 1
) -> list[Proposal]:
    """Parse a comma separated list (or an iterable) of proposal strings, numbered from 1.

    ``default`` (case-insensitive) expands to :func:`default_proposals` at that position.
    """
    items = tuple(text.split(",")) if isinstance(text, str) else tuple(text)
    # The same configuration strings are parsed for every IKE and Child SA (a responder
    # under load: ~1.5 % of its time). The parse is cached; every caller gets new Proposal
    # objects and lists (callers set ``spi`` and ``number``), sharing the Transforms, which
    # nothing changes after parsing.
    return [
        Proposal(first_number + offset, template.protocol, template.spi,
                 list(template.transforms))
        for offset, template in enumerate(_parse_proposals(items, int(protocol)))
    ]  # fmt: skip


@functools.lru_cache(maxsize=256)
def _parse_proposals(items: tuple[str, ...], protocol: int) -> tuple[Proposal, ...]:
    proposals: list[Proposal] = []
    for item in items:
        item = item.strip()
        if not item:
            raise ProposalSyntaxError("empty proposal in list", "")
        if item.lower() == "default":
            proposals.extend(default_proposals(protocol))
        else:
            proposals.append(parse_proposal(item, protocol))
    if not proposals:
        raise ProposalSyntaxError("no proposals given")
    return tuple(proposals)


def default_proposals(protocol: ProtocolId | int) -> list[Proposal]:
    """Our ``default``: strongSwan's default set restricted to algorithms aioipsec implements
    and the default policy allows (RFC 8247 / RFC 8221; no SHA-1, no 3DES, no MODP < 2048).

    Order as in strongSwan's vici plugin: for IKE the classic proposal first, then AEAD;
    for ESP AEAD first. ESP/AH defaults list KE methods followed by ``none`` so PFS is
    optional (strip them with :func:`without_key_exchange` for IKE_AUTH).
    """
    protocol = ProtocolId(protocol)
    ke = "ecp256-ecp384-ecp521-x25519-x448-modp3072-modp4096-modp6144-modp8192-modp2048"
    if protocol is ProtocolId.IKE:
        texts = [
            f"aes128-aes192-aes256-sha256-sha384-sha512-prfsha256-prfsha384-prfsha512-{ke}",
            "aes128gcm16-aes192gcm16-aes256gcm16-chacha20poly1305-"
            f"prfsha256-prfsha384-prfsha512-{ke}",
        ]
    elif protocol is ProtocolId.ESP:
        texts = [
            f"aes128gcm16-aes192gcm16-aes256gcm16-chacha20poly1305-noesn-{ke}-none",
            f"aes128-aes192-aes256-sha256-sha384-sha512-noesn-{ke}-none",
        ]
    elif protocol is ProtocolId.AH:
        texts = [f"sha256-sha384-sha512-noesn-{ke}-none"]
    else:
        raise ProposalSyntaxError(f"no default proposals for {protocol.name}")
    return [parse_proposal(text, protocol, number) for number, text in enumerate(texts, 1)]


def without_key_exchange(proposal: Proposal) -> Proposal:
    """A copy without KE/ADDKE transforms: the SA proposal of IKE_AUTH (RFC 7296 sec. 1.2:
    the first Child SA is keyed from the IKE SA, no KE payload)."""
    return Proposal(
        number=proposal.number,
        protocol=proposal.protocol,
        spi=proposal.spi,
        transforms=[
            Transform(t.type, t.id, t.key_length)
            for t in proposal.transforms
            if not _is_ke_type(t.type)
        ],
    )


# --------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------


def keyword_for(transform: Transform) -> str:
    """The strongSwan keyword for one transform (``UNKNOWN_<type>_<id>`` when it has none)."""
    ttype = int(transform.type)
    base_type = int(KE) if _is_ke_type(ttype) else ttype
    name = _CANONICAL.get((base_type, int(transform.id), transform.key_length))
    if name is None and ttype == INTEG:
        for bits, ident in _GMAC_INTEG.items():
            if transform.id == ident:
                name = f"aes{bits}gmac"
    if name is None:
        name = f"UNKNOWN_{ttype}_{int(transform.id)}"
        if transform.key_length is not None:
            name += f"_{transform.key_length}"
    if _is_ke_type(ttype) and ttype != KE:
        name = f"ke{_addke_number(ttype)}_{name}"
    return name


def _sorted(proposal: Proposal) -> list[Transform]:
    return sorted(proposal.transforms, key=lambda t: _type_rank(t.type))


def to_strongswan(proposal: Proposal) -> str:
    """Render in swanctl.conf syntax; implied parts (IKE PRF = PRF of the integrity
    algorithms, ESP/AH ``noesn`` alone) are left out so parse/render round-trips."""
    transforms = _sorted(proposal)
    protocol = int(proposal.protocol)
    if protocol == ProtocolId.IKE:
        integ_prfs: list[int] = []
        for t in _of_type(transforms, INTEG):
            prf = _PRF_FOR_INTEG.get(t.id)
            if prf is not None and prf not in integ_prfs:
                integ_prfs.append(prf)
        prfs = [t.id for t in _of_type(transforms, PRF) if t.key_length is None]
        if integ_prfs and prfs == integ_prfs and len(prfs) == len(_of_type(transforms, PRF)):
            transforms = [t for t in transforms if t.type != PRF]
    if protocol in (ProtocolId.ESP, ProtocolId.AH):
        esns = _of_type(transforms, ESN)
        if len(esns) == 1 and esns[0].id == EsnId.NO_ESN:
            transforms = [t for t in transforms if t.type != ESN]
    return "-".join(keyword_for(t) for t in transforms)


_ENCR_DISPLAY: dict[int, str] = {
    EncrId.ENCR_DES_IV64: "DES_IV64",
    EncrId.ENCR_DES: "DES_CBC",
    EncrId.ENCR_3DES: "3DES_CBC",
    EncrId.ENCR_RC5: "RC5_CBC",
    EncrId.ENCR_IDEA: "IDEA_CBC",
    EncrId.ENCR_CAST: "CAST_CBC",
    EncrId.ENCR_BLOWFISH: "BLOWFISH_CBC",
    EncrId.ENCR_3IDEA: "3IDEA",
    EncrId.ENCR_DES_IV32: "DES_IV32",
    EncrId.ENCR_NULL: "NULL",
    EncrId.ENCR_AES_CBC: "AES_CBC",
    EncrId.ENCR_AES_CTR: "AES_CTR",
    EncrId.ENCR_AES_CCM_8: "AES_CCM_8",
    EncrId.ENCR_AES_CCM_12: "AES_CCM_12",
    EncrId.ENCR_AES_CCM_16: "AES_CCM_16",
    EncrId.ENCR_AES_GCM_8: "AES_GCM_8",
    EncrId.ENCR_AES_GCM_12: "AES_GCM_12",
    EncrId.ENCR_AES_GCM_16: "AES_GCM_16",
    EncrId.ENCR_NULL_AUTH_AES_GMAC: "NULL_AES_GMAC",
    EncrId.ENCR_CAMELLIA_CBC: "CAMELLIA_CBC",
    EncrId.ENCR_CAMELLIA_CTR: "CAMELLIA_CTR",
    EncrId.ENCR_CAMELLIA_CCM_8: "CAMELLIA_CCM_8",
    EncrId.ENCR_CAMELLIA_CCM_12: "CAMELLIA_CCM_12",
    EncrId.ENCR_CAMELLIA_CCM_16: "CAMELLIA_CCM_16",
    EncrId.ENCR_CHACHA20_POLY1305: "CHACHA20_POLY1305",
}

_KE_DISPLAY: dict[int, str] = {
    KeId.NONE: "KE_NONE",
    KeId.MODP_768: "MODP_768",
    KeId.MODP_1024: "MODP_1024",
    KeId.MODP_1536: "MODP_1536",
    KeId.MODP_2048: "MODP_2048",
    KeId.MODP_3072: "MODP_3072",
    KeId.MODP_4096: "MODP_4096",
    KeId.MODP_6144: "MODP_6144",
    KeId.MODP_8192: "MODP_8192",
    KeId.ECP_256: "ECP_256",
    KeId.ECP_384: "ECP_384",
    KeId.ECP_521: "ECP_521",
    KeId.MODP_1024_160: "MODP_1024_160",
    KeId.MODP_2048_224: "MODP_2048_224",
    KeId.MODP_2048_256: "MODP_2048_256",
    KeId.ECP_192: "ECP_192",
    KeId.ECP_224: "ECP_224",
    KeId.BRAINPOOL_P224: "ECP_224_BP",
    KeId.BRAINPOOL_P256: "ECP_256_BP",
    KeId.BRAINPOOL_P384: "ECP_384_BP",
    KeId.BRAINPOOL_P512: "ECP_512_BP",
    KeId.CURVE25519: "CURVE_25519",
    KeId.CURVE448: "CURVE_448",
    KeId.GOST3410_2012_256: "GOST3410_256",
    KeId.GOST3410_2012_512: "GOST3410_512",
    KeId.ML_KEM_512: "ML_KEM_512",
    KeId.ML_KEM_768: "ML_KEM_768",
    KeId.ML_KEM_1024: "ML_KEM_1024",
}

_ESN_DISPLAY: dict[int, str] = {EsnId.NO_ESN: "NO_EXT_SEQ", EsnId.ESN: "EXT_SEQ"}


def _display_name(transform: Transform) -> str:
    """strongSwan's enum name of one algorithm (``AES_GCM_16``, ``HMAC_SHA2_256_128``...)."""
    ttype, ident = int(transform.type), int(transform.id)
    name: str | None = None
    if ttype == ENCR:
        name = _ENCR_DISPLAY.get(ident)
    elif ttype == INTEG:
        # strongSwan drops the AUTH_ prefix of the IANA names.
        try:
            name = IntegId(ident).name.removeprefix("AUTH_")
        except ValueError:
            name = None
        if name == "NONE":
            name = "UNDEFINED"
    elif ttype == PRF:
        try:
            name = PrfId(ident).name
        except ValueError:
            name = None
    elif _is_ke_type(ttype):
        name = _KE_DISPLAY.get(ident)
    elif ttype == ESN:
        name = _ESN_DISPLAY.get(ident)
    if name is None:
        name = f"UNKNOWN_{ttype}_{ident}"
    if _is_ke_type(ttype) and ttype != KE:
        name = f"KE{_addke_number(ttype)}_{name}"
    return name


def display(proposal: Proposal, *, with_protocol: bool = True) -> str:
    """charon's log form, e.g. ``IKE:AES_GCM_16_256/PRF_HMAC_SHA2_256/CURVE_25519``
    (``selected proposal: %P``); ``with_protocol=False`` leaves out the ``IKE:`` prefix."""
    parts = []
    for t in _sorted(proposal):
        name = _display_name(t)
        if t.key_length:
            name += f"_{t.key_length}"
        parts.append(name)
    body = "/".join(parts)
    if not with_protocol:
        return body
    try:
        prefix = ProtocolId(proposal.protocol).name
    except ValueError:
        prefix = f"PROTO_{int(proposal.protocol)}"
    return f"{prefix}:{body}"


def display_list(proposals: Sequence[Proposal]) -> str:
    """charon's ``received proposals: %#P`` form: comma separated :func:`display` forms."""
    return ", ".join(display(p) for p in proposals)


def display_swanctl(proposal: Proposal) -> str:
    """The algorithm line of ``swanctl --list-sas`` for a *selected* proposal, e.g.
    ``AES_GCM_16-256/PRF_HMAC_SHA2_256/CURVE_25519`` (IKE) or ``AES_CBC-128/HMAC_SHA2_256_128``
    (ESP; ``/ESN`` is appended when extended sequence numbers are in use)."""
    parts: list[str] = []
    ordered = _sorted(proposal)
    encr = _of_type(ordered, ENCR)
    integ = _of_type(ordered, INTEG)
    if encr:
        name = _display_name(encr[0])
        parts.append(f"{name}-{encr[0].key_length}" if encr[0].key_length else name)
    if integ:
        parts.append(_display_name(integ[0]))
    for ttype in (PRF, KE):
        chosen = _of_type(ordered, ttype)
        if chosen:
            parts.append(_display_name(chosen[0]))
    for t in ordered:
        if _is_ke_type(t.type) and t.type != KE:
            parts.append(_display_name(t))
    esn = _of_type(ordered, ESN)
    if esn and esn[0].id == EsnId.ESN:
        parts.append("ESN")
    return "/".join(parts)


# --------------------------------------------------------------------------------------
# Selection
# --------------------------------------------------------------------------------------


def transforms_of(proposal: Proposal, ttype: TransformType | int) -> list[Transform]:
    """The transforms of one type, in proposal order."""
    return _of_type(proposal.transforms, int(ttype))


def chosen_transform(proposal: Proposal, ttype: TransformType | int) -> Transform | None:
    """The single transform of ``ttype`` in a selected proposal (``None`` if absent)."""
    found = transforms_of(proposal, ttype)
    return found[0] if found else None


def _types_in(*proposals: Proposal) -> list[int]:
    types = {int(t.type) for p in proposals for t in p.transforms}
    return sorted(types, key=_type_rank)


def _match(
    preferred: Proposal,
    other: Proposal,
    protocol: ProtocolId,
    *,
    skip_ke: bool,
    peer: Proposal,
) -> Proposal | None:
    """strongSwan's per-proposal selection; ``peer`` supplies number and SPI."""
    chosen: list[Transform] = []
    used_ke: set[int] = set()
    aead_chosen = False
    for ttype in _types_in(preferred, other):
        if ttype == INTEG and aead_chosen:
            continue
        if skip_ke and _is_ke_type(ttype):
            continue
        # RFC 9370 sec. 2.2.1: additional key exchanges are optional when NONE is offered;
        # for ESP/AH the KE of CREATE_CHILD_SA is optional the same way.
        optional = _is_ke_type(ttype) and (protocol is not ProtocolId.IKE or ttype != KE)
        ours = _of_type(preferred.transforms, ttype)
        theirs = _of_type(other.transforms, ttype)
        if not ours or not theirs:
            present = ours or theirs
            if optional and any(t.id == 0 for t in present):
                continue
            return None
        pick: Transform | None = None
        for a in ours:
            if _is_ke_type(ttype) and a.id != 0 and a.id in used_ke:
                continue  # RFC 9370: each key exchange method at most once
            if any(a.id == b.id and a.key_length == b.key_length for b in theirs):
                pick = a
                break
        if pick is None:
            return None
        if pick.id == 0 and ttype != ESN:
            continue  # NONE: nothing to add
        chosen.append(Transform(pick.type, pick.id, pick.key_length))
        if _is_ke_type(ttype):
            used_ke.add(pick.id)
        if ttype == ENCR and is_aead(pick.id):
            aead_chosen = True
    return Proposal(number=peer.number, protocol=peer.protocol, spi=peer.spi, transforms=chosen)


def select_proposal(
    ours: Sequence[Proposal],
    theirs: Sequence[Proposal],
    protocol: ProtocolId | int,
    *,
    prefer_supplied: bool = False,
    skip_ke: bool = False,
) -> Proposal:
    """Choose one proposal (responder side, RFC 7296 sec. 2.7).

    Default as charon (``prefer_configured_proposals = yes``): our proposals in our order,
    each against every peer proposal; within a type our order wins. ``prefer_supplied``
    swaps the roles. ``skip_ke`` ignores KE transforms (IKE_AUTH's Child SA: RFC 7296
    sec. 1.2, no KE there even if the peer lists KE methods). The result has the peer's
    proposal number and SPI and one transform of each type. Raises
    :class:`NoProposalChosen` with an explanation when nothing matches.
    """
    protocol = ProtocolId(protocol)
    our_list = [p for p in ours if int(p.protocol) == protocol]
    peer_list = [p for p in theirs if int(p.protocol) == protocol]
    if prefer_supplied:
        for peer in peer_list:
            for mine in our_list:
                chosen = _match(peer, mine, protocol, skip_ke=skip_ke, peer=peer)
                if chosen is not None:
                    return chosen
    else:
        for mine in our_list:
            for peer in peer_list:
                chosen = _match(mine, peer, protocol, skip_ke=skip_ke, peer=peer)
                if chosen is not None:
                    return chosen
    raise NoProposalChosen(explain_mismatch(ours, theirs, protocol, skip_ke=skip_ke))


_TYPE_WORDS = {
    int(ENCR): "encryption algorithm",
    int(INTEG): "integrity algorithm",
    int(PRF): "PRF",
    int(KE): "KE method",
    int(ESN): "ESN setting",
}


def _type_word(ttype: int) -> str:
    if ttype in _TYPE_WORDS:
        return _TYPE_WORDS[ttype]
    if _is_ke_type(ttype):
        return f"additional key exchange {_addke_number(ttype)} (ADDKE{_addke_number(ttype)})"
    return f"transform type {ttype}"


def _keywords(transforms: Iterable[Transform]) -> list[str]:
    names: list[str] = []
    for t in transforms:
        name = keyword_for(t)
        if name not in names:
            names.append(name)
    return names


def explain_mismatch(
    ours: Sequence[Proposal],
    theirs: Sequence[Proposal],
    protocol: ProtocolId | int,
    *,
    skip_ke: bool = False,
) -> str:
    """A sentence for people saying why no proposal matched (used by NoProposalChosen)."""
    protocol = ProtocolId(protocol)
    our_list = [p for p in ours if int(p.protocol) == protocol]
    peer_list = [p for p in theirs if int(p.protocol) == protocol]
    if not peer_list:
        offered = sorted({_protocol_name(p.protocol) for p in theirs}) or ["nothing"]
        return (
            f"no {protocol.name} proposal received (peer offers {', '.join(offered)}); "
            f"we offer {', '.join(to_strongswan(p) for p in our_list) or 'nothing'}"
        )
    if not our_list:
        return f"no {protocol.name} proposals configured"
    problems: list[str] = []
    all_ours = [t for p in our_list for t in p.transforms]
    all_theirs = [t for p in peer_list for t in p.transforms]
    for ttype in _types_in(*our_list, *peer_list):
        if skip_ke and _is_ke_type(ttype):
            continue
        if ttype == INTEG and (
            all(is_aead(t.id) for t in _of_type(all_ours, ENCR))
            or all(is_aead(t.id) for t in _of_type(all_theirs, ENCR))
        ):
            continue  # AEAD on one side: integrity is not negotiated
        mine = _of_type(all_ours, ttype)
        peers = _of_type(all_theirs, ttype)
        common = [
            a for a in mine if any(a.id == b.id and a.key_length == b.key_length for b in peers)
        ]
        if not common:
            problems.append(
                f"no common {_type_word(ttype)}: we offer "
                f"{', '.join(_keywords(mine)) or 'none'}; peer offers "
                f"{', '.join(_keywords(peers)) or 'none'}"
            )
    if problems:
        return "; ".join(problems)
    return (
        "each transform type has a common algorithm, but no single proposal combines them "
        f"(AEAD vs. classic or per-proposal mix): we offer "
        f"{', '.join(to_strongswan(p) for p in our_list)}; peer offers "
        f"{', '.join(to_strongswan(p) for p in peer_list)}"
    )


def _protocol_name(protocol: int) -> str:
    try:
        return ProtocolId(protocol).name
    except ValueError:
        return f"protocol {int(protocol)}"


def check_selected_proposal(
    offered: Sequence[Proposal],
    chosen: Proposal,
    protocol: ProtocolId | int,
    *,
    expect_ke: bool = True,
) -> Proposal:
    """Initiator side (RFC 7296 sec. 2.7, 3.3.6): the responder's reply must be exactly one
    of our proposals (by number, same protocol) reduced to one transform per type, each
    of which we offered in that proposal. Returns our matching proposal.

    ``expect_ke=False`` for IKE_AUTH, where KE transforms are not negotiated.
    Raises ProtocolError(NO_PROPOSAL_CHOSEN) otherwise (we then delete/abandon the SA).
    """
    protocol = ProtocolId(protocol)

    def fail(why: str) -> ProtocolError:
        return ProtocolError(
            f"responder chose a proposal we did not offer: {why} "
            f"(chosen {display(chosen)}; offered {display_list(offered)})",
            notify=NotifyType.NO_PROPOSAL_CHOSEN,
        )

    if int(chosen.protocol) != protocol:
        raise fail(f"protocol {_protocol_name(chosen.protocol)} instead of {protocol.name}")
    ours = next(
        (p for p in offered if p.number == chosen.number and int(p.protocol) == protocol), None
    )
    if ours is None:
        raise fail(f"proposal number {chosen.number} does not exist")
    seen: set[int] = set()
    for t in chosen.transforms:
        ttype = int(t.type)
        if ttype in seen:
            raise fail(f"more than one {_type_word(ttype)}")
        seen.add(ttype)
        if not any(
            o.type == ttype and o.id == t.id and o.key_length == t.key_length
            for o in ours.transforms
        ):
            raise fail(f"{_type_word(ttype)} {keyword_for(t)} was not in proposal {ours.number}")
    encr = chosen_transform(chosen, ENCR)
    aead = encr is not None and is_aead(encr.id)
    for ttype in _types_in(ours):
        if ttype in seen:
            continue
        if ttype == INTEG and aead:
            continue
        if _is_ke_type(ttype) and (
            not expect_ke or any(t.id == 0 for t in transforms_of(ours, ttype))
        ):
            continue  # not negotiated here, or NONE (no PFS / no ADDKE) was acceptable
        raise fail(f"no {_type_word(ttype)} chosen")
    return ours
