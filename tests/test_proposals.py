"""Proposal strings (strongSwan syntax), display forms, and selection.

The expected values in STRONGSWAN_CREATE / STRONGSWAN_SELECT are strongSwan's own unit-test
expectations (strongswan/strongswan, src/libstrongswan/tests/suites/test_proposal.c,
``create_data`` / ``select_data`` / ``select_proposal_data``): what charon prints for a
parsed proposal (``%P``) and which proposal charon selects. ``None`` = charon rejects it.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
from ikev2.proposals import (
    NoProposalChosen,
    ProposalSyntaxError,
    check_selected_proposal,
    chosen_transform,
    default_proposals,
    display,
    display_list,
    display_swanctl,
    parse_proposal,
    parse_proposals,
    select_proposal,
    to_strongswan,
    without_key_exchange,
)

IKE, ESP, AH = ProtocolId.IKE, ProtocolId.ESP, ProtocolId.AH

STRONGSWAN_CREATE = [
    (IKE, "", None),
    (IKE, "sha256", None),
    (IKE, "sha256-modp3072", None),
    (IKE, "null-sha256-modp3072", "IKE:NULL/HMAC_SHA2_256_128/PRF_HMAC_SHA2_256/MODP_3072"),
    (IKE, "aes128", None),
    (IKE, "aes128-sha256", None),
    (IKE, "aes128-sha256-none", None),
    (IKE, "aes128-prfsha256", None),
    (IKE, "aes128-prfsha256-modp2048", None),
    (
        IKE,
        "aes128-sha256-modp3072",
        "IKE:AES_CBC_128/HMAC_SHA2_256_128/PRF_HMAC_SHA2_256/MODP_3072",
    ),
    (
        IKE,
        "aes128-sha256-prfsha384-modp3072",
        "IKE:AES_CBC_128/HMAC_SHA2_256_128/PRF_HMAC_SHA2_384/MODP_3072",
    ),
    (IKE, "aes128gcm16-modp3072", None),
    (IKE, "aes128gcm16-prfsha256-modp3072", "IKE:AES_GCM_16_128/PRF_HMAC_SHA2_256/MODP_3072"),
    (IKE, "aes128gcm16-sha256-modp3072", "IKE:AES_GCM_16_128/PRF_HMAC_SHA2_256/MODP_3072"),
    (IKE, "aes128gcm16-aes128-modp3072", None),
    (IKE, "aes128gcm16-aes128-sha256-modp3072", None),
    (ESP, "", None),
    (ESP, "sha256", None),
    (ESP, "aes128-sha256", "ESP:AES_CBC_128/HMAC_SHA2_256_128/NO_EXT_SEQ"),
    (ESP, "aes128-sha256-esn", "ESP:AES_CBC_128/HMAC_SHA2_256_128/EXT_SEQ"),
    (ESP, "aes128-sha256-noesn", "ESP:AES_CBC_128/HMAC_SHA2_256_128/NO_EXT_SEQ"),
    (ESP, "aes128-sha256-esn-noesn", "ESP:AES_CBC_128/HMAC_SHA2_256_128/EXT_SEQ/NO_EXT_SEQ"),
    (
        ESP,
        "aes128-sha256-prfsha256-modp3072",
        "ESP:AES_CBC_128/HMAC_SHA2_256_128/MODP_3072/NO_EXT_SEQ",
    ),
    (ESP, "aes128gcm16-aes128-sha256-modp3072", None),
    (ESP, "aes128gmac", "ESP:NULL_AES_GMAC_128/NO_EXT_SEQ"),
    (AH, "", None),
    (AH, "aes128", None),
    (AH, "aes128-sha256", "AH:HMAC_SHA2_256_128/NO_EXT_SEQ"),
    (AH, "sha256-sha1", "AH:HMAC_SHA2_256_128/HMAC_SHA1_96/NO_EXT_SEQ"),
    (AH, "aes128gmac-sha256", "AH:AES_128_GMAC/HMAC_SHA2_256_128/NO_EXT_SEQ"),
    (AH, "aes128gmac-sha256-prfsha256", "AH:AES_128_GMAC/HMAC_SHA2_256_128/NO_EXT_SEQ"),
    (
        AH,
        "aes128gmac-aes256gmac-aes128-sha256",
        "AH:AES_128_GMAC/AES_256_GMAC/HMAC_SHA2_256_128/NO_EXT_SEQ",
    ),
    (AH, "sha256-esn", "AH:HMAC_SHA2_256_128/EXT_SEQ"),
    (AH, "sha256-noesn", "AH:HMAC_SHA2_256_128/NO_EXT_SEQ"),
    (AH, "sha256-esn-noesn", "AH:HMAC_SHA2_256_128/EXT_SEQ/NO_EXT_SEQ"),
]


@pytest.mark.parametrize(("protocol", "text", "expected"), STRONGSWAN_CREATE)
def test_parse_like_strongswan(protocol: ProtocolId, text: str, expected: str | None) -> None:
    if expected is None:
        with pytest.raises(ProposalSyntaxError):
            parse_proposal(text, protocol)
    else:
        assert display(parse_proposal(text, protocol)) == expected


# (protocol, self, other, expected, skip_ke); from strongSwan's select_data.
STRONGSWAN_SELECT = [
    (ESP, "aes128", "aes128", "aes128", False),
    (ESP, "aes128", "aes256", None, False),
    (ESP, "aes128-aes256", "aes256-aes128", "aes128", False),
    (ESP, "aes256-aes128", "aes128-aes256", "aes256", False),
    (ESP, "aes128-aes256-sha1-sha256", "aes256-aes128-sha256-sha1", "aes128-sha1", False),
    (ESP, "aes256-aes128-sha256-sha1", "aes128-aes256-sha1-sha256", "aes256-sha256", False),
    (ESP, "aes128-sha256-modp3072", "aes128-sha256", None, False),
    (ESP, "aes128-sha256-modp3072", "aes128-sha256", "aes128-sha256", True),
    (ESP, "aes128-sha256", "aes128-sha256-modp3072", None, False),
    (ESP, "aes128-sha256", "aes128-sha256-modp3072", "aes128-sha256", True),
    (ESP, "aes128-sha256-modp3072", "aes128-sha256-modp3072", "aes128-sha256", True),
    (ESP, "aes128-sha256-modp3072", "aes128-sha256-ecp256", "aes128-sha256", True),
    (ESP, "aes128-sha256-modp3072", "aes128-sha256-none", None, False),
    (ESP, "aes128-sha256-none", "aes128-sha256-modp3072", None, False),
    (ESP, "aes128-sha256-modp3072-none", "aes128-sha256", "aes128-sha256", False),
    (ESP, "aes128-sha256", "aes128-sha256-modp3072-none", "aes128-sha256", False),
    (
        ESP,
        "aes128-sha256-modp3072-none",
        "aes128-sha256-none-modp3072",
        "aes128-sha256-modp3072",
        False,
    ),
    (ESP, "aes128-sha256-none-modp3072", "aes128-sha256-modp3072-none", "aes128-sha256", False),
    (ESP, "aes128-sha256-esn", "aes128-sha256-esn", "aes128-sha256-esn", False),
    (ESP, "aes128-sha256-noesn", "aes128-sha256-esn", None, False),
    (ESP, "aes128-sha256-noesn-esn", "aes128-sha256-esn", "aes128-sha256-esn", False),
    (ESP, "aes128-sha256-noesn-esn", "aes128-sha256", "aes128-sha256", False),
    (ESP, "aes128-sha256-esn-noesn", "aes128-sha256-noesn-esn", "aes128-sha256-esn", False),
    (IKE, "aes128-sha256-modp3072", "aes128-sha256-modp3072", "aes128-sha256-modp3072", False),
    (
        IKE,
        "aes128-sha256-modp3072",
        "aes128-sha256-modp3072-none",
        "aes128-sha256-modp3072",
        False,
    ),
    (
        IKE,
        "aes128-sha256-modp3072-none",
        "aes128-sha256-modp3072",
        "aes128-sha256-modp3072",
        False,
    ),
    (
        IKE,
        "aes128-sha256-modp3072-ke1_modp3072",
        "aes128-sha256-modp3072-ke1_modp3072",
        None,
        False,
    ),
    (
        IKE,
        "aes128-sha256-modp3072-ecp256-ecp384-ke1_modp3072-ke1_ecp256-ke1_ecp384-"
        "ke2_modp3072-ke2_ecp256-ke2_ecp384",
        "aes128-sha256-modp3072-ecp256-ecp384-ke1_modp3072-ke1_ecp256-ke1_ecp384-"
        "ke2_modp3072-ke2_ecp256-ke2_ecp384",
        "aes128-sha256-modp3072-ke1_ecp256-ke2_ecp384",
        False,
    ),
    (
        IKE,
        "aes128-sha256-modp3072-ke1_modp3072-ke1_none",
        "aes128-sha256-modp3072-ke1_modp3072-ke1_none",
        "aes128-sha256-modp3072",
        False,
    ),
    (
        IKE,
        "aes128-sha256-modp3072-ke1_modp3072-ke1_none-ke2_modp3072-ke2_none",
        "aes128-sha256-modp3072-ke1_modp3072-ke1_none-ke2_modp3072-ke2_none",
        "aes128-sha256-modp3072",
        False,
    ),
    (
        IKE,
        "aes128-sha256-modp3072-ke1_modp3072-ke1_ecp256",
        "aes128-sha256-modp3072-ke1_modp3072-ke1_ecp256",
        "aes128-sha256-modp3072-ke1_ecp256",
        False,
    ),
    (
        IKE,
        "aes128-sha256-modp3072-ke1_modp3072-ke1_ecp256",
        "aes128-sha256-modp3072-ke1_ecp256",
        "aes128-sha256-modp3072-ke1_ecp256",
        False,
    ),
    (
        IKE,
        "aes128-sha256-modp3072-ke1_ecp256",
        "aes128-sha256-modp3072-ke1_modp3072-ke1_ecp256",
        "aes128-sha256-modp3072-ke1_ecp256",
        False,
    ),
    (
        IKE,
        "aes128-sha256-ecp256-ke1_modp3072",
        "aes128-sha256-modp3072-ecp256-ke1_ecp256-ke2_ecp384",
        None,
        False,
    ),
]


@pytest.mark.parametrize(("protocol", "ours", "theirs", "expected", "skip_ke"), STRONGSWAN_SELECT)
def test_select_like_strongswan(
    protocol: ProtocolId, ours: str, theirs: str, expected: str | None, skip_ke: bool
) -> None:
    mine = [parse_proposal(ours, protocol)]
    peer = [parse_proposal(theirs, protocol)]
    if expected is None:
        with pytest.raises(NoProposalChosen) as info:
            select_proposal(mine, peer, protocol, skip_ke=skip_ke)
        assert info.value.notify is NotifyType.NO_PROPOSAL_CHOSEN
        assert isinstance(info.value, ProtocolError)
    else:
        chosen = select_proposal(mine, peer, protocol, skip_ke=skip_ke)
        assert display(chosen) == display(parse_proposal(expected, protocol))


# strongSwan's select_proposal_data: lists of proposals, our order vs. the peer's.
@pytest.mark.parametrize(
    ("ours", "theirs", "expected", "prefer_supplied", "skip_ke"),
    [
        (["aes128"], ["aes256"], None, False, False),
        (["aes128"], ["aes128"], "aes128", False, False),
        (["aes128", "aes256"], ["aes256", "aes128"], "aes128", False, False),
        (["aes128", "aes256"], ["aes256", "aes128"], "aes256", True, False),
        (
            ["aes128-modp1024", "aes256-modp1024"],
            ["aes256-modp2048", "aes128-modp2048"],
            None,
            False,
            False,
        ),
        (
            ["aes128-modp1024", "aes256-modp1024"],
            ["aes256-modp2048", "aes128-modp2048"],
            "aes128",
            False,
            True,
        ),
        (
            ["aes128-modp1024", "aes256-modp1024"],
            ["aes256-modp2048", "aes128-modp2048"],
            "aes256",
            True,
            True,
        ),
    ],
)
def test_select_list_like_strongswan(
    ours: list[str],
    theirs: list[str],
    expected: str | None,
    prefer_supplied: bool,
    skip_ke: bool,
) -> None:
    mine = parse_proposals(ours, ESP)
    peer = parse_proposals(theirs, ESP)
    if expected is None:
        with pytest.raises(NoProposalChosen):
            select_proposal(mine, peer, ESP, prefer_supplied=prefer_supplied, skip_ke=skip_ke)
    else:
        chosen = select_proposal(mine, peer, ESP, prefer_supplied=prefer_supplied, skip_ke=skip_ke)
        assert display(chosen) == display(parse_proposal(expected, ESP))


# The strings of issue 2 with their charon log (%P) and swanctl --list-sas forms.
DISPLAY_TABLE = [
    (
        IKE,
        "aes256gcm16-prfsha256-x25519",
        "IKE:AES_GCM_16_256/PRF_HMAC_SHA2_256/CURVE_25519",
        "AES_GCM_16-256/PRF_HMAC_SHA2_256/CURVE_25519",
    ),
    (
        IKE,
        "aes128gcm16-prfsha384-ecp384",
        "IKE:AES_GCM_16_128/PRF_HMAC_SHA2_384/ECP_384",
        "AES_GCM_16-128/PRF_HMAC_SHA2_384/ECP_384",
    ),
    (
        IKE,
        "chacha20poly1305-prfsha512-x448",
        "IKE:CHACHA20_POLY1305/PRF_HMAC_SHA2_512/CURVE_448",
        "CHACHA20_POLY1305/PRF_HMAC_SHA2_512/CURVE_448",
    ),
    (
        IKE,
        "aes256-sha256-modp3072",
        "IKE:AES_CBC_256/HMAC_SHA2_256_128/PRF_HMAC_SHA2_256/MODP_3072",
        "AES_CBC-256/HMAC_SHA2_256_128/PRF_HMAC_SHA2_256/MODP_3072",
    ),
    (
        IKE,
        "aes128-sha1-modp2048",
        "IKE:AES_CBC_128/HMAC_SHA1_96/PRF_HMAC_SHA1/MODP_2048",
        "AES_CBC-128/HMAC_SHA1_96/PRF_HMAC_SHA1/MODP_2048",
    ),
    (
        IKE,
        "aes128-sha256-modp2048",
        "IKE:AES_CBC_128/HMAC_SHA2_256_128/PRF_HMAC_SHA2_256/MODP_2048",
        "AES_CBC-128/HMAC_SHA2_256_128/PRF_HMAC_SHA2_256/MODP_2048",
    ),
    (
        IKE,
        "aes128-aes256-sha256-sha384-x25519-ecp256",
        "IKE:AES_CBC_128/AES_CBC_256/HMAC_SHA2_256_128/HMAC_SHA2_384_192/"
        "PRF_HMAC_SHA2_256/PRF_HMAC_SHA2_384/CURVE_25519/ECP_256",
        None,
    ),
    (
        IKE,
        "aes256gcm16-prfsha384-mlkem768",
        "IKE:AES_GCM_16_256/PRF_HMAC_SHA2_384/ML_KEM_768",
        "AES_GCM_16-256/PRF_HMAC_SHA2_384/ML_KEM_768",
    ),
    (
        IKE,
        "aes256gcm16-prfsha384-x25519-ke1_mlkem768",
        "IKE:AES_GCM_16_256/PRF_HMAC_SHA2_384/CURVE_25519/KE1_ML_KEM_768",
        "AES_GCM_16-256/PRF_HMAC_SHA2_384/CURVE_25519/KE1_ML_KEM_768",
    ),
    (ESP, "aes256gcm16", "ESP:AES_GCM_16_256/NO_EXT_SEQ", "AES_GCM_16-256"),
    (ESP, "aes128gcm16", "ESP:AES_GCM_16_128/NO_EXT_SEQ", "AES_GCM_16-128"),
    (ESP, "chacha20poly1305", "ESP:CHACHA20_POLY1305/NO_EXT_SEQ", "CHACHA20_POLY1305"),
    (
        ESP,
        "aes256-sha256",
        "ESP:AES_CBC_256/HMAC_SHA2_256_128/NO_EXT_SEQ",
        "AES_CBC-256/HMAC_SHA2_256_128",
    ),
    (
        ESP,
        "aes128-sha512",
        "ESP:AES_CBC_128/HMAC_SHA2_512_256/NO_EXT_SEQ",
        "AES_CBC-128/HMAC_SHA2_512_256",
    ),
    (
        ESP,
        "aes256gcm16-x25519",
        "ESP:AES_GCM_16_256/CURVE_25519/NO_EXT_SEQ",
        "AES_GCM_16-256/CURVE_25519",
    ),
    (
        ESP,
        "aes128-sha256-esn",
        "ESP:AES_CBC_128/HMAC_SHA2_256_128/EXT_SEQ",
        "AES_CBC-128/HMAC_SHA2_256_128/ESN",
    ),
    (AH, "sha256", "AH:HMAC_SHA2_256_128/NO_EXT_SEQ", "HMAC_SHA2_256_128"),
]


@pytest.mark.parametrize(("protocol", "text", "log_form", "swanctl_form"), DISPLAY_TABLE)
def test_round_trip_and_display(
    protocol: ProtocolId, text: str, log_form: str, swanctl_form: str | None
) -> None:
    proposal = parse_proposal(text, protocol)
    assert proposal.number == 1 and proposal.protocol is protocol and proposal.spi == b""
    assert to_strongswan(proposal) == text
    assert parse_proposal(to_strongswan(proposal), protocol) == proposal
    assert display(proposal) == log_form
    assert display(proposal, with_protocol=False) == log_form.split(":", 1)[1]
    if swanctl_form is not None:  # only meaningful for a proposal with one of each
        assert display_swanctl(proposal) == swanctl_form


def test_noesn_is_the_default_and_renders_short() -> None:
    explicit = parse_proposal("aes128-sha256-noesn", ESP)
    assert explicit == parse_proposal("aes128-sha256", ESP)
    assert to_strongswan(explicit) == "aes128-sha256"


def test_wire_model_of_a_parsed_proposal() -> None:
    proposal = parse_proposal("aes256-sha256-modp3072", IKE)
    assert proposal.transforms == [
        Transform(TransformType.ENCR, EncrId.ENCR_AES_CBC, 256),
        Transform(TransformType.INTEG, IntegId.AUTH_HMAC_SHA2_256_128, None),
        Transform(TransformType.PRF, PrfId.PRF_HMAC_SHA2_256, None),  # implied by sha256
        Transform(TransformType.KE, KeId.MODP_3072, None),
    ]
    esp = parse_proposal("aes256gcm16-x25519", ESP)
    assert esp.transforms == [
        Transform(TransformType.ENCR, EncrId.ENCR_AES_GCM_16, 256),
        Transform(TransformType.KE, KeId.CURVE25519, None),
        Transform(TransformType.ESN, EsnId.NO_ESN, None),
    ]
    addke = parse_proposal("aes256gcm16-prfsha256-x25519-ke1_mlkem768", IKE)
    assert addke.transforms[-1] == Transform(TransformType.ADDKE1, KeId.ML_KEM_768, None)


def test_aliases_and_case() -> None:
    assert parse_proposal("AES256GCM128-PRFSHA256-CURVE25519", IKE) == parse_proposal(
        "aes256gcm16-prfsha256-x25519", IKE
    )
    assert to_strongswan(parse_proposal("aes-sha2_256-modp2048", IKE)) == "aes128-sha256-modp2048"


def test_list_numbering_and_default() -> None:
    proposals = parse_proposals("aes256gcm16-prfsha256-x25519, default", IKE)
    assert [p.number for p in proposals] == [1, 2, 3]
    assert display(proposals[0]) == "IKE:AES_GCM_16_256/PRF_HMAC_SHA2_256/CURVE_25519"
    assert proposals[1:] == [
        Proposal(n + 2, p.protocol, p.spi, p.transforms)
        for n, p in enumerate(default_proposals(IKE))
    ]
    esp = parse_proposals(["aes128gcm16", "aes256-sha256"], ESP)
    assert [p.number for p in esp] == [1, 2] and all(p.protocol is ESP for p in esp)


def test_unknown_keyword_is_named() -> None:
    with pytest.raises(ProposalSyntaxError, match="aes257") as info:
        parse_proposal("aes257-sha256-modp2048", IKE)
    assert info.value.keyword == "aes257"
    assert isinstance(info.value, ValueError)
    with pytest.raises(ProposalSyntaxError, match="private-use"):
        parse_proposal("serpent256-sha256-modp2048", IKE)
    with pytest.raises(ProposalSyntaxError, match="ke9_mlkem768"):
        parse_proposal("aes256gcm16-prfsha256-x25519-ke9_mlkem768", IKE)
    with pytest.raises(ProposalSyntaxError, match="esn"):
        parse_proposal("aes256gcm16-prfsha256-x25519-esn", IKE)
    with pytest.raises(ProposalSyntaxError):
        parse_proposals("aes256gcm16,,aes128gcm16", ESP)


def test_select_returns_peer_number_and_spi() -> None:
    ours = parse_proposals("aes256gcm16-x25519-none", ESP)
    peer = parse_proposals("aes128-sha256, aes256gcm16-aes128gcm16", ESP)
    for p in peer:
        p.spi = bytes([0xC0, 0, 0, p.number])
    chosen = select_proposal(ours, peer, ESP)
    assert chosen.number == 2 and chosen.spi == b"\xc0\x00\x00\x02"
    assert display(chosen) == "ESP:AES_GCM_16_256/NO_EXT_SEQ"
    assert check_selected_proposal(peer, chosen, ESP, expect_ke=False) is peer[1]


def test_prefer_configured_is_the_default() -> None:
    ours = parse_proposals("aes256gcm16-prfsha256-ecp256-x25519", IKE)
    peer = parse_proposals("aes256gcm16-prfsha256-x25519-ecp256", IKE)
    assert chosen_transform(select_proposal(ours, peer, IKE), TransformType.KE).id == KeId.ECP_256
    chosen = select_proposal(ours, peer, IKE, prefer_supplied=True)
    assert chosen_transform(chosen, TransformType.KE).id == KeId.CURVE25519


def test_mismatch_explanation_names_the_type() -> None:
    ours = parse_proposals("aes256gcm16-prfsha256-x25519-ecp256", IKE)
    peer = parse_proposals("aes256gcm16-prfsha256-modp1024", IKE)
    with pytest.raises(NoProposalChosen) as info:
        select_proposal(ours, peer, IKE)
    assert info.value.reason == (
        "no common KE method: we offer x25519, ecp256; peer offers modp1024"
    )
    assert info.value.notify is NotifyType.NO_PROPOSAL_CHOSEN

    with pytest.raises(NoProposalChosen) as info:
        select_proposal(
            parse_proposals("aes256-sha256", ESP), parse_proposals("aes128-sha1", ESP), ESP
        )
    assert "no common encryption algorithm: we offer aes256; peer offers aes128" in (
        info.value.reason
    )
    assert "no common integrity algorithm: we offer sha256; peer offers sha1" in info.value.reason

    with pytest.raises(NoProposalChosen) as info:
        select_proposal(
            parse_proposals("aes128gcm16-prfsha256-x25519, aes128-sha256-ecp256", IKE),
            parse_proposals("aes128gcm16-prfsha256-ecp256, aes128-sha256-x25519", IKE),
            IKE,
        )
    assert "no single proposal combines them" in info.value.reason

    with pytest.raises(NoProposalChosen, match="no ESP proposal received"):
        select_proposal(parse_proposals("aes128gcm16", ESP), parse_proposals("sha256", AH), ESP)


def test_key_length_must_match_exactly() -> None:
    with pytest.raises(NoProposalChosen, match="aes256gcm16; peer offers aes128gcm16"):
        select_proposal(
            parse_proposals("aes256gcm16-prfsha256-x25519", IKE),
            parse_proposals("aes128gcm16-prfsha256-x25519", IKE),
            IKE,
        )


def test_esn_must_overlap() -> None:
    with pytest.raises(NoProposalChosen, match="ESN"):
        select_proposal(
            parse_proposals("aes128gcm16-esn", ESP), parse_proposals("aes128gcm16", ESP), ESP
        )


def test_unknown_transform_type_in_peer_proposal_is_not_chosen() -> None:
    peer = parse_proposals("aes128gcm16", ESP)
    peer[0].transforms.append(Transform(13, 1))  # a type we do not know: reject (sec. 3.3.6)
    with pytest.raises(NoProposalChosen, match="transform type 13"):
        select_proposal(parse_proposals("aes128gcm16", ESP), peer, ESP)


def test_ike_auth_strips_ke() -> None:
    ours = default_proposals(ESP)
    stripped = [without_key_exchange(p) for p in ours]
    assert all(
        t.type not in (TransformType.KE, TransformType.ADDKE1)
        for p in stripped
        for t in p.transforms
    )
    # the peer (like charon in IKE_AUTH) sends no KE: our optional KE (with "none") accepts
    chosen = select_proposal(ours, parse_proposals("aes256gcm16", ESP), ESP)
    assert display(chosen) == "ESP:AES_GCM_16_256/NO_EXT_SEQ"


def test_check_selected_proposal_rejects_what_we_did_not_offer() -> None:
    offered = parse_proposals("aes256gcm16-prfsha256-x25519, aes128-sha256-modp2048", IKE)
    good = Proposal(
        1,
        IKE,
        b"",
        [
            Transform(TransformType.ENCR, EncrId.ENCR_AES_GCM_16, 256),
            Transform(TransformType.PRF, PrfId.PRF_HMAC_SHA2_256),
            Transform(TransformType.KE, KeId.CURVE25519),
        ],
    )
    assert check_selected_proposal(offered, good, IKE) is offered[0]

    def expect_failure(chosen: Proposal, pattern: str) -> None:
        with pytest.raises(ProtocolError, match=pattern) as info:
            check_selected_proposal(offered, chosen, IKE)
        assert info.value.notify is NotifyType.NO_PROPOSAL_CHOSEN

    wrong_key = Proposal(1, IKE, b"", [*good.transforms])
    wrong_key.transforms[0] = Transform(TransformType.ENCR, EncrId.ENCR_AES_GCM_16, 128)
    expect_failure(wrong_key, "aes128gcm16 was not in proposal 1")
    expect_failure(Proposal(3, IKE, b"", good.transforms), "number 3")
    expect_failure(Proposal(1, IKE, b"", good.transforms[:2]), "no KE method chosen")
    expect_failure(
        Proposal(1, IKE, b"", [*good.transforms, Transform(TransformType.KE, KeId.CURVE25519)]),
        "more than one KE method",
    )
    mixed = Proposal(2, IKE, b"", [*good.transforms])  # proposal 2 is AES-CBC
    expect_failure(mixed, "was not in proposal 2")
    expect_failure(Proposal(1, ESP, b"", good.transforms), "protocol ESP")


def test_display_list_is_charons_hash_p() -> None:
    proposals = parse_proposals("aes128gcm16-prfsha256-x25519, aes256-sha384-ecp384", IKE)
    assert display_list(proposals) == (
        "IKE:AES_GCM_16_128/PRF_HMAC_SHA2_256/CURVE_25519, "
        "IKE:AES_CBC_256/HMAC_SHA2_384_192/PRF_HMAC_SHA2_384/ECP_384"
    )


# ======================================================================================
# Against a real charon (strongSwan 5.9.8 here): two charons in namespaces negotiate; the
# responder's log lines (configured proposals / selected proposal / received proposals) and
# swanctl --list-sas are what display(), display_list(), display_swanctl() and
# select_proposal() must reproduce for the same configuration.
# ======================================================================================


CHARON_CASES = [
    pytest.param(
        "aes128gcm16-aes256gcm16-prfsha256-prfsha384-x25519-ecp256,aes256-sha256-modp3072",
        "aes256-sha256-modp3072,aes256gcm16-aes128gcm16-prfsha384-prfsha256-x25519-ecp256",
        "aes128gcm16-chacha20poly1305",
        "chacha20poly1305-aes128gcm16",
        True,
        id="responder-order-wins-with-invalid-ke-retry",
    ),
    pytest.param(
        "aes128-aes256-sha256-sha384-ecp384-x25519",
        "aes256-aes128-sha384-sha256-x25519-ecp384",
        "aes128-sha256,aes256-sha384",
        "aes256-sha384",
        True,
        id="implied-prf-and-classic-esp",
    ),
    pytest.param(
        "chacha20poly1305-prfsha512-x448",
        "aes256gcm16-prfsha256-x25519,chacha20poly1305-prfsha512-x448",
        "aes256gcm16-x25519",
        "aes256gcm16-x25519-modp3072",
        True,
        id="chacha-x448-and-pfs-in-config",
    ),
    pytest.param(
        "aes128gcm16-prfsha256-x25519",
        "aes256gcm16-prfsha256-x25519",
        "aes256gcm16",
        "aes256gcm16",
        False,
        id="mismatch",
    ),
]


def _log_values(log: str, label: str) -> list[str]:
    return re.findall(rf"\] <[^>]*> {label}: (.*)$", log, flags=re.MULTILINE)


@pytest.mark.interop
@pytest.mark.timeout(120)
@pytest.mark.needs("root", "charon")
@pytest.mark.parametrize(("ike_i", "ike_r", "esp_i", "esp_r", "succeeds"), CHARON_CASES)
def test_display_and_selection_match_charon(
    ike_i: str, ike_r: str, esp_i: str, esp_r: str, succeeds: bool
) -> None:
    from aioipsec.interop.charon import Charon, CharonError
    from aioipsec.interop.peers import swanctl_conf
    from aioipsec.interop.scenario import Scenario
    from aioipsec.interop.topology import build_topology
    from aioipsec.netns import Lab

    ours = {"ike": parse_proposals(ike_r, IKE), "esp": parse_proposals(esp_r, ESP)}
    peer = {"ike": parse_proposals(ike_i, IKE), "esp": parse_proposals(esp_i, ESP)}
    proposals = {"initiator": (ike_i, esp_i), "responder": (ike_r, esp_r)}
    workdir = Path(tempfile.mkdtemp(prefix="aioipsec-pr-", dir="/tmp"))
    scenario = Scenario(name="prop")
    try:
        with Lab("pr") as lab:
            topology = build_topology(lab, scenario)
            charons = {}
            for side in ("initiator", "responder"):
                text = swanctl_conf(scenario, topology, side)
                ike, esp = proposals[side]
                text = text.replace(
                    "    proposals = aes256gcm16-prfsha256-x25519", f"    proposals = {ike}"
                ).replace("esp_proposals = aes256gcm16", f"esp_proposals = {esp}")
                assert f"proposals = {ike}" in text and f"esp_proposals = {esp}" in text
                charon = Charon(lab, topology.namespace(side), workdir / side)
                charon.start()
                charon.load(text)
                charons[side] = charon
            try:
                charons["initiator"].initiate("prop", "prop", timeout=15)
            except CharonError:
                if succeeds:
                    raise
            time.sleep(0.3)
            log = charons["responder"].log_path.read_text()
            sas = charons["responder"].list_sas() if succeeds else {}
            listing = charons["responder"].swanctl("--list-sas") if succeeds else ""
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    configured = _log_values(log, "configured proposals")
    received = _log_values(log, "received proposals")
    assert display_list(ours["ike"]) in configured, configured
    if not succeeds:
        assert display_list(peer["ike"]) in received, received
        assert "no acceptable ENCRYPTION_ALGORITHM found" in log, log[-1500:]
        assert "N(NO_PROP)" in log
        with pytest.raises(NoProposalChosen) as info:
            select_proposal(ours["ike"], peer["ike"], IKE)
        assert info.value.reason == "no common encryption algorithm: we offer aes256gcm16; " + (
            "peer offers aes128gcm16"
        )
        return
    assert display_list(ours["esp"]) in configured, configured
    selected = _log_values(log, "selected proposal")
    ike_selected = [s for s in selected if s.startswith("IKE:")][-1]
    esp_selected = [s for s in selected if s.startswith("ESP:")][-1]
    ike_choice = select_proposal(ours["ike"], peer["ike"], IKE)
    # IKE_AUTH carries no KE: charon strips KE from the ESP proposals it sends there
    esp_choice = select_proposal(
        ours["esp"], [without_key_exchange(p) for p in peer["esp"]], ESP, skip_ke=True
    )
    assert display(ike_choice) == ike_selected
    assert display(esp_choice) == esp_selected
    assert display_swanctl(ike_choice) in listing.splitlines()[3], listing
    assert f"ESP:{display_swanctl(esp_choice)}" in listing, listing
    ike_sa = sas["prop"]
    encr = chosen_transform(ike_choice, TransformType.ENCR)
    assert ike_sa.get("encr-keysize") == (str(encr.key_length) if encr.key_length else None)


# ---- fuzz: arbitrary received proposals never cause anything but NoProposalChosen -------

_transforms = st.builds(
    Transform,
    type=st.sampled_from([1, 2, 3, 4, 5, 6, 7, 13, 255]),
    id=st.sampled_from([0, 1, 2, 3, 12, 14, 19, 20, 28, 31, 36, 1024, 65535]),
    key_length=st.sampled_from([None, 0, 128, 256, 65535]),
)
_proposals = st.builds(
    Proposal,
    number=st.integers(0, 255),
    protocol=st.sampled_from([0, 1, 2, 3, 200]),
    spi=st.binary(max_size=8),
    transforms=st.lists(_transforms, max_size=12),
)


@settings(max_examples=400, deadline=None)
@given(theirs=st.lists(_proposals, max_size=4), protocol=st.sampled_from([IKE, ESP, AH]))
def test_fuzz_selection(theirs: list[Proposal], protocol: ProtocolId) -> None:
    from ikev2.policy import DEFAULT_POLICY

    ours = default_proposals(protocol)
    for candidates in (theirs, DEFAULT_POLICY.filter_proposals(theirs)):
        try:
            chosen = select_proposal(ours, candidates, protocol)
        except NoProposalChosen as error:
            assert error.reason
            continue
        types = [int(t.type) for t in chosen.transforms]
        assert len(types) == len(set(types))  # one transform per type
        assert chosen.number in [p.number for p in candidates]
        display(chosen)
        display_swanctl(chosen)
        to_strongswan(chosen)


@settings(max_examples=300, deadline=None)
@given(chosen=_proposals)
def test_fuzz_check_selected(chosen: Proposal) -> None:
    offered = parse_proposals("aes256gcm16-prfsha256-x25519, aes128-sha256-modp2048", IKE)
    try:
        check_selected_proposal(offered, chosen, IKE)
    except ProtocolError as error:
        assert error.notify is NotifyType.NO_PROPOSAL_CHOSEN


_WORDS = [
    "aes128",
    "aes256",
    "aes128gcm16",
    "aes256gcm",
    "aes192ccm12",
    "aes128gmac",
    "chacha20poly1305",
    "3des",
    "null",
    "sha1",
    "sha256",
    "sha384",
    "sha512",
    "md5",
    "aesxcbc",
    "prfsha256",
    "prfsha384",
    "prfaescmac",
    "x25519",
    "curve448",
    "ecp256",
    "modp2048",
    "modp1024",
    "mlkem768",
    "ke1_mlkem768",
    "ke2_ecp384",
    "ke1_none",
    "none",
    "esn",
    "noesn",
    "bogus",
]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.lists(st.sampled_from(_WORDS), min_size=1, max_size=7), min_size=1, max_size=3))
def test_fuzz_proposal_strings(words: list[list[str]]) -> None:
    text = ", ".join("-".join(item) for item in words)
    parsed_any = False
    for protocol in (IKE, ESP, AH):
        try:
            proposals = parse_proposals(text, protocol)
        except ProposalSyntaxError as error:
            assert str(error)
            continue
        parsed_any = True
        again = parse_proposals([to_strongswan(p) for p in proposals], protocol)
        assert again == proposals
        assert [display(p) for p in again] == [display(p) for p in proposals]
    if "bogus" in text:
        assert not parsed_any
