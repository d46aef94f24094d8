"""Default algorithm policy (RFC 8247 for IKE, RFC 8221 for ESP/AH, bad-inputs.md)."""

from __future__ import annotations

import pytest

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
from ikev2.policy import DEFAULT_POLICY, AlgorithmPolicy, WeakAlgorithmError
from ikev2.proposals import (
    NoProposalChosen,
    default_proposals,
    parse_proposals,
    select_proposal,
)

IKE, ESP, AH = ProtocolId.IKE, ProtocolId.ESP, ProtocolId.AH


@pytest.mark.parametrize(
    ("protocol", "text", "setting"),
    [
        (IKE, "3des-sha256-modp2048", "3des"),
        (IKE, "des-sha256-modp2048", "des"),
        (IKE, "blowfish256-sha256-modp2048", "blowfish"),
        (IKE, "cast128-sha256-modp2048", "cast128"),
        (IKE, "null-sha256-modp2048", "null"),
        (IKE, "aes128-md5-prfsha256-modp2048", "md5"),
        (IKE, "aes128-sha256-prfmd5-modp2048", "prfmd5"),
        (IKE, "aes128-sha256-modp768", "modp768"),
        (IKE, "aes128-sha256-modp1024", "modp1024"),
        (IKE, "aes128-sha256-modp1536", "modp1536"),
        (IKE, "aes128-sha256-modp1024s160", "modp1024s160"),
        (IKE, "aes128-sha256-modp2048s224", "modp2048s224"),
        (IKE, "aes128-sha256-modp2048s256", "modp2048s256"),
        (IKE, "aes256gcm16-prfsha256-x25519-ke1_modp1024", "modp1024"),
        (ESP, "null-sha256", "null"),
        (ESP, "3des-sha1", "3des"),
        (ESP, "aes128-md5_128", "md5_128"),
        (ESP, "aes128gcm16-modp1024", "modp1024"),
        (ESP, "aes128", "no_integrity"),
        (AH, "md5", "md5"),
    ],
)
def test_refused_by_default_and_allowed_by_name(
    protocol: ProtocolId, text: str, setting: str
) -> None:
    proposals = parse_proposals(text, protocol)
    with pytest.raises(WeakAlgorithmError) as info:
        DEFAULT_POLICY.check_proposals(proposals)
    assert info.value.setting == setting
    assert f'allow_weak_algorithms = ["{setting}"] in [daemon]' in str(info.value)
    assert "refused by default" in str(info.value)
    assert "RFC 8" in str(info.value)
    AlgorithmPolicy(allow_weak=frozenset({setting})).check_proposals(proposals)


def test_message_for_3des() -> None:
    with pytest.raises(WeakAlgorithmError) as info:
        DEFAULT_POLICY.check_proposals(parse_proposals("3des-sha256-modp2048", IKE))
    assert str(info.value).startswith("3des is refused by default (RFC 8221: SHOULD NOT")
    assert str(info.value).endswith(
        'set allow_weak_algorithms = ["3des"] in [daemon] to use it for interop'
    )


def test_sha1_is_allowed_with_a_warning() -> None:
    warnings = DEFAULT_POLICY.check_proposals(parse_proposals("aes128-sha1-modp2048", IKE))
    assert any(w.startswith("sha1 is weak") for w in warnings)
    assert any(w.startswith("prfsha1 is weak") for w in warnings)
    assert DEFAULT_POLICY.check_proposals(parse_proposals("aes128-sha1", ESP))


def test_defaults_pass_without_warnings() -> None:
    for protocol in (IKE, ESP, AH):
        assert DEFAULT_POLICY.check_proposals(default_proposals(protocol)) == []
    strong = "aes256gcm16-prfsha256-x25519, aes128-sha256-ecp256, chacha20poly1305-prfsha512-x448"
    assert DEFAULT_POLICY.check_proposals(parse_proposals(strong, IKE)) == []


def test_unknown_setting_is_refused() -> None:
    with pytest.raises(ValueError, match="3dez"):
        AlgorithmPolicy(allow_weak=frozenset({"3dez"}))


def test_filter_received_proposals_never_selects_weak() -> None:
    peer = parse_proposals(
        "3des-aes128-md5-sha256-modp1024-modp2048, 3des-sha1-modp2048, aes128-sha256-modp1024",
        IKE,
    )
    filtered = DEFAULT_POLICY.filter_proposals(peer)
    # proposal 1 loses 3des/md5/modp1024; 2 loses its only cipher; 3 its only group
    assert [p.number for p in filtered] == [1]
    # (md5 implied prfmd5, which is dropped as well)
    assert [(t.type, t.id) for t in filtered[0].transforms] == [
        (TransformType.ENCR, EncrId.ENCR_AES_CBC),
        (TransformType.INTEG, IntegId.AUTH_HMAC_SHA2_256_128),
        (TransformType.PRF, PrfId.PRF_HMAC_SHA2_256),
        (TransformType.KE, KeId.MODP_2048),
    ]
    # with a permissive "ours" the weak algorithms would have matched; filtered they cannot
    ours = parse_proposals("3des-sha256-modp1024", IKE)
    allow = AlgorithmPolicy(allow_weak=frozenset({"3des", "modp1024"}))
    with pytest.raises(NoProposalChosen, match="no common"):
        select_proposal(ours, DEFAULT_POLICY.filter_proposals(peer), IKE)
    assert select_proposal(ours, allow.filter_proposals(peer), IKE).number == 1


def test_esp_null_and_no_integrity() -> None:
    aead_only = Proposal(
        1,
        ESP,
        b"",
        [
            Transform(TransformType.ENCR, EncrId.ENCR_AES_GCM_16, 128),
            Transform(TransformType.ESN, 0),
        ],
    )
    assert DEFAULT_POLICY.filter_proposals([aead_only]) == [aead_only]
    cbc_only = Proposal(
        2,
        ESP,
        b"",
        [Transform(TransformType.ENCR, EncrId.ENCR_AES_CBC, 128), Transform(TransformType.ESN, 0)],
    )
    assert DEFAULT_POLICY.filter_proposals([cbc_only]) == []


def test_signature_policy() -> None:
    assert not DEFAULT_POLICY.signature_hash_allowed(HashAlgorithm.SHA1)
    assert DEFAULT_POLICY.signature_hash_allowed(HashAlgorithm.SHA2_256)
    assert DEFAULT_POLICY.signature_hash_allowed(HashAlgorithm.IDENTITY)
    assert not DEFAULT_POLICY.signature_hash_allowed(99)
    assert not DEFAULT_POLICY.auth_method_allowed(AuthMethod.RSA_DIGITAL_SIGNATURE)
    assert DEFAULT_POLICY.auth_method_allowed(AuthMethod.DIGITAL_SIGNATURE)
    legacy = AlgorithmPolicy(allow_weak=frozenset({"sha1_signatures"}))
    assert legacy.signature_hash_allowed(HashAlgorithm.SHA1)
    assert legacy.auth_method_allowed(AuthMethod.RSA_DIGITAL_SIGNATURE)
    assert "sha1_signatures" in DEFAULT_POLICY.signature_refusal("RSA with SHA-1")
