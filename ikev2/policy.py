"""Default algorithm policy: what we refuse, what we accept with a warning.

Sources: RFC 8247 (IKEv2 algorithm requirements), RFC 8221 (ESP/AH), and the project's
default policy (shared/reference/bad-inputs.md). Decisions:

Refused unless named in ``allow_weak`` (the keyword is the strongSwan proposal keyword,
so the setting reads like the proposal that needs it):

=================  ==============================================================
``des``            ENCR_DES (and the DES_IV32/IV64 variants): RFC 8247/8221 MUST NOT
``3des``           ENCR_3DES: RFC 8221 SHOULD NOT, 64-bit block (Sweet32); project policy
``blowfish``       ENCR_BLOWFISH: RFC 8247/8221 MUST NOT
``cast128``        ENCR_CAST: RFC 8247/8221 MUST NOT
``null``           ENCR_NULL: RFC 8247 MUST NOT (IKE); ESP: project policy (no secrecy)
``md5``            AUTH_HMAC_MD5_96: RFC 8247/8221 MUST NOT
``md5_128``        AUTH_HMAC_MD5_128: same
``prfmd5``         PRF_HMAC_MD5: RFC 8247 MUST NOT
``modp768``        group 1: RFC 8247 MUST NOT
``modp1024``       group 2: RFC 8247 SHOULD NOT (Logjam-class precomputation)
``modp1536``       group 5: RFC 8247 SHOULD NOT
``modp1024s160``   group 22: RFC 8247 SHOULD NOT (RFC 5114 primes of unclear origin)
``modp2048s224``   group 23: same
``modp2048s256``   group 24: same
``sha1_signatures``  SHA-1 in RFC 7427 signatures and the legacy RSA method 1 (PKCS#1 v1.5
                   with SHA-1): RFC 8247 sec. 3.2 / RFC 7427 (SHA-1 MUST NOT be sent)
``no_integrity``   ESP with a non-AEAD cipher and no integrity transform: RFC 8221 sec. 5
=================  ==============================================================

Accepted with a warning (returned by :meth:`AlgorithmPolicy.check_proposals`, to be
logged): ``sha1`` / ``sha1_160`` (AUTH_HMAC_SHA1_*) and ``prfsha1`` are RFC 8247/8221
MUST-: still required for interoperability, expected to be demoted, so refusing them
would break peers that are compliant today. ``ecp192``/``ecp224`` are below 128-bit
strength (not listed by RFC 8247): warning. Neither is in our default proposals.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from ikev2.enums import (
    AuthMethod,
    EncrId,
    HashAlgorithm,
    IntegId,
    KeId,
    PrfId,
    ProtocolId,
    TransformType,
)
from ikev2.payloads import Proposal, Transform
from ikev2.proposals import KE_TRANSFORM_TYPES, is_aead

__all__ = [
    "DEFAULT_POLICY",
    "AlgorithmPolicy",
    "WeakAlgorithmError",
    "refusal_for",
    "warning_for",
]


class WeakAlgorithmError(ValueError):
    """A configured proposal uses an algorithm the policy refuses (config input)."""

    def __init__(self, message: str, setting: str) -> None:
        super().__init__(message)
        self.setting = setting


@dataclass(frozen=True)
class _Rule:
    setting: str  # the allow_weak_algorithms entry that permits it
    name: str  # the algorithm as people know it
    why: str  # RFC requirement level


_T = TransformType
_REFUSED: dict[tuple[int, int], _Rule] = {
    (_T.ENCR, EncrId.ENCR_DES): _Rule("des", "des", "RFC 8247/8221: MUST NOT"),
    (_T.ENCR, EncrId.ENCR_DES_IV64): _Rule("des", "des (IV64)", "RFC 8247/8221: MUST NOT"),
    (_T.ENCR, EncrId.ENCR_DES_IV32): _Rule("des", "des (IV32)", "RFC 8247/8221: MUST NOT"),
    (_T.ENCR, EncrId.ENCR_3DES): _Rule(
        "3des", "3des", "RFC 8221: SHOULD NOT, 64-bit block cipher (Sweet32)"
    ),
    (_T.ENCR, EncrId.ENCR_BLOWFISH): _Rule("blowfish", "blowfish", "RFC 8247/8221: MUST NOT"),
    (_T.ENCR, EncrId.ENCR_CAST): _Rule("cast128", "cast128", "RFC 8247/8221: MUST NOT"),
    (_T.ENCR, EncrId.ENCR_NULL): _Rule(
        "null", "null encryption", "RFC 8247: MUST NOT for IKE; no confidentiality"
    ),
    (_T.INTEG, IntegId.AUTH_HMAC_MD5_96): _Rule("md5", "md5", "RFC 8247/8221: MUST NOT"),
    (_T.INTEG, IntegId.AUTH_HMAC_MD5_128): _Rule("md5_128", "md5_128", "RFC 8247/8221: MUST NOT"),
    (_T.PRF, PrfId.PRF_HMAC_MD5): _Rule("prfmd5", "prfmd5", "RFC 8247: MUST NOT"),
    (_T.KE, KeId.MODP_768): _Rule("modp768", "modp768 (group 1)", "RFC 8247: MUST NOT"),
    (_T.KE, KeId.MODP_1024): _Rule("modp1024", "modp1024 (group 2)", "RFC 8247: SHOULD NOT"),
    (_T.KE, KeId.MODP_1536): _Rule("modp1536", "modp1536 (group 5)", "RFC 8247: SHOULD NOT"),
    (_T.KE, KeId.MODP_1024_160): _Rule(
        "modp1024s160", "modp1024s160 (group 22)", "RFC 8247: SHOULD NOT"
    ),
    (_T.KE, KeId.MODP_2048_224): _Rule(
        "modp2048s224", "modp2048s224 (group 23)", "RFC 8247: SHOULD NOT"
    ),
    (_T.KE, KeId.MODP_2048_256): _Rule(
        "modp2048s256", "modp2048s256 (group 24)", "RFC 8247: SHOULD NOT"
    ),
}

_WARNED: dict[tuple[int, int], _Rule] = {
    (_T.INTEG, IntegId.AUTH_HMAC_SHA1_96): _Rule("sha1", "sha1", "RFC 8247/8221: MUST-"),
    (_T.INTEG, IntegId.AUTH_HMAC_SHA1_160): _Rule("sha1_160", "sha1_160", "MUST- (SHA-1)"),
    (_T.PRF, PrfId.PRF_HMAC_SHA1): _Rule("prfsha1", "prfsha1", "RFC 8247: MUST-"),
    (_T.KE, KeId.ECP_192): _Rule("ecp192", "ecp192 (group 25)", "below 128-bit strength"),
    (_T.KE, KeId.ECP_224): _Rule("ecp224", "ecp224 (group 26)", "below 128-bit strength"),
}

_SETTING_HINT = 'set allow_weak_algorithms = ["{setting}"] in [daemon] to use it for interop'

# Every name allow_weak may contain.
KNOWN_SETTINGS = frozenset(
    {rule.setting for rule in _REFUSED.values()} | {"sha1_signatures", "no_integrity"}
)


def _key(transform: Transform) -> tuple[int, int]:
    ttype = int(transform.type)
    if ttype in KE_TRANSFORM_TYPES:
        ttype = int(_T.KE)
    return ttype, int(transform.id)


def refusal_for(transform: Transform) -> tuple[str, str] | None:
    """(setting, message) when the default policy refuses ``transform``, else None."""
    rule = _REFUSED.get(_key(transform))
    if rule is None:
        return None
    message = f"{rule.name} is refused by default ({rule.why}); " + _SETTING_HINT.format(
        setting=rule.setting
    )
    return rule.setting, message


def warning_for(transform: Transform) -> str | None:
    """A warning text for an allowed-but-discouraged transform, else None."""
    rule = _WARNED.get(_key(transform))
    if rule is None:
        return None
    return f"{rule.name} is weak ({rule.why}); accepted for interoperability, avoid it"


@dataclass(frozen=True)
class AlgorithmPolicy:
    """What the daemon accepts. ``allow_weak`` holds setting names (see module docstring),
    e.g. ``frozenset({"3des", "modp1024"})`` for an old peer."""

    allow_weak: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        unknown = set(self.allow_weak) - KNOWN_SETTINGS
        if unknown:
            raise ValueError(
                f"unknown allow_weak_algorithms entries: {', '.join(sorted(unknown))} "
                f"(known: {', '.join(sorted(KNOWN_SETTINGS))})"
            )

    # ---- transforms -------------------------------------------------------------------

    def transform_allowed(self, transform: Transform) -> bool:
        rule = _REFUSED.get(_key(transform))
        return rule is None or rule.setting in self.allow_weak

    def proposal_problem(self, proposal: Proposal) -> tuple[str, str] | None:
        """(setting, message) for the first refused part of ``proposal``, or None."""
        for transform in proposal.transforms:
            refusal = refusal_for(transform)
            if refusal is not None and refusal[0] not in self.allow_weak:
                return refusal
        if int(proposal.protocol) == ProtocolId.ESP and "no_integrity" not in self.allow_weak:
            ciphers = [t for t in proposal.transforms if t.type == _T.ENCR]
            integ = [t for t in proposal.transforms if t.type == _T.INTEG and t.id != IntegId.NONE]
            if ciphers and not integ and not all(is_aead(t.id) for t in ciphers):
                return (
                    "no_integrity",
                    "ESP with a non-AEAD cipher and no integrity algorithm is refused by default "
                    "(RFC 8221 sec. 5: AUTH_NONE only with AEAD); "
                    + _SETTING_HINT.format(setting="no_integrity"),
                )
        return None

    def check_proposals(self, proposals: Iterable[Proposal]) -> list[str]:
        """Check *configured* proposals: raise :class:`WeakAlgorithmError` naming the first
        refused algorithm and the setting that allows it; return warnings to log."""
        warnings: list[str] = []
        for proposal in proposals:
            problem = self.proposal_problem(proposal)
            if problem is not None:
                raise WeakAlgorithmError(problem[1], problem[0])
            for transform in proposal.transforms:
                text = warning_for(transform)
                if text is not None and text not in warnings:
                    warnings.append(text)
        return warnings

    def filter_proposals(self, proposals: Sequence[Proposal]) -> list[Proposal]:
        """Received proposals with refused transforms removed, so that selection can never
        pick them. A proposal that loses every transform of some type is dropped whole
        (it could only have been accepted with a refused algorithm)."""
        kept: list[Proposal] = []
        for proposal in proposals:
            types_before = {int(t.type) for t in proposal.transforms}
            transforms = [
                Transform(t.type, t.id, t.key_length)
                for t in proposal.transforms
                if self.transform_allowed(t)
            ]
            if {int(t.type) for t in transforms} != types_before:
                continue
            candidate = Proposal(proposal.number, proposal.protocol, proposal.spi, transforms)
            problem = self.proposal_problem(candidate)
            if problem is not None:
                continue
            kept.append(candidate)
        return kept

    # ---- authentication ---------------------------------------------------------------

    def signature_hash_allowed(self, hash_algorithm: int) -> bool:
        """RFC 8247 sec. 3.2 / RFC 7427: SHA-1 only with ``sha1_signatures``."""
        if hash_algorithm == HashAlgorithm.SHA1:
            return "sha1_signatures" in self.allow_weak
        return hash_algorithm in (
            HashAlgorithm.SHA2_256,
            HashAlgorithm.SHA2_384,
            HashAlgorithm.SHA2_512,
            HashAlgorithm.IDENTITY,
        )

    def auth_method_allowed(self, method: int) -> bool:
        """Legacy RSA method 1 always hashes with SHA-1 (RFC 7296 sec. 3.8)."""
        if method == AuthMethod.RSA_DIGITAL_SIGNATURE:
            return "sha1_signatures" in self.allow_weak
        return method in (
            AuthMethod.SHARED_KEY_MESSAGE_INTEGRITY_CODE,
            AuthMethod.ECDSA_SHA256_P256,
            AuthMethod.ECDSA_SHA384_P384,
            AuthMethod.ECDSA_SHA512_P521,
            AuthMethod.DIGITAL_SIGNATURE,
        )

    def signature_refusal(self, what: str) -> str:
        return (
            f"{what} is refused by default (RFC 8247 sec. 3.2: SHA-1 MUST NOT be used in "
            "signatures); " + _SETTING_HINT.format(setting="sha1_signatures")
        )


DEFAULT_POLICY = AlgorithmPolicy()
