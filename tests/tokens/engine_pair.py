"""Two engines authenticating with certificates, one or both keys in a token."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from ikev2.config import AuthConfig
from ikev2.crypto.auth import SignatureScheme, Signer, SignerError
from ikev2.dispatcher import Dispatcher
from ikev2.enums import HashAlgorithm
from ikev2.events import AuthenticationFailed, IkeSaEstablished
from tests.engine.harness import Network, pair_configs, psk_lookup_for, seeded_rng
from tests.tokens.fixtures import Pki, load_cert


def cert_network(
    pki: Pki,
    signer_a: object,
    cert_a: Path,
    *,
    signer_b: object | None = None,
    cert_b: Path | None = None,
    rsa_pss: bool = False,
    signature_auth: str = "rfc7427",
) -> Network:
    """A (id a.example) initiates with ``signer_a``; B (b.example) answers with
    ``signer_b`` or an in-memory key issued by the same CA."""
    if signer_b is None or cert_b is None:
        key_path, cert_b = pki.issue_key("b.example")
        signer_b = serialization.load_pem_private_key(key_path.read_bytes(), None)
    ca = load_cert(pki.ca_cert)
    a_conf, b_conf = pair_configs()
    a_conf.local = AuthConfig(
        auth="pubkey",
        id="a.example",
        certs=[load_cert(cert_a)],
        private_key=signer_a,
        rsa_pss=rsa_pss,
        signature_auth=signature_auth,  # type: ignore[arg-type]  # a Literal from the test
    )
    a_conf.remote = AuthConfig(auth="pubkey", id="b.example", cacerts=[ca])
    b_conf.local = AuthConfig(
        auth="pubkey", id="b.example", certs=[load_cert(cert_b)], private_key=signer_b
    )
    b_conf.remote = AuthConfig(auth="pubkey", id="%any", cacerts=[ca])
    # pki issues certificates valid from now: the engines' wall clock is the real one.
    now = time.time()
    a = Dispatcher([a_conf], psk_lookup_for(), rng=seeded_rng(1), wall_time_offset=now)
    b = Dispatcher([b_conf], psk_lookup_for(), rng=seeded_rng(2), wall_time_offset=now)
    return Network(a, b)


def auth_method_seen_by_b(net: Network) -> int:
    """The AUTH method of A's AUTH payload, as B's only IKE SA recorded it."""
    (info,) = net.b.sas()
    return int(net.b.ike_sa(info.ike_sa_id).peer.auth_method)


def establish_then_lose_the_token(
    net: Network,
    signer: Signer,
    *,
    remove: Callable[[], None],
    restore: Callable[[], None],
    description: str,
) -> None:
    """A signs with ``signer``: with the token gone (``remove``) A's next IKE_AUTH fails
    with a SignerError naming ``description`` while the established SA stays; once the
    token is back (``restore``) the attempt after works."""
    net.a.initiate("conn", "net", now=0.0)
    net.pump()
    (first,) = net.events("a", IkeSaEstablished)

    remove()
    net.a.initiate("conn", "net", now=net.now)
    net.pump()
    assert len(net.events("a", IkeSaEstablished)) == 1
    assert first.ike_sa_id in {info.ike_sa_id for info in net.a.sas()}
    with pytest.raises(SignerError, match=description):
        signer.sign(b"x", SignatureScheme("ecdsa", HashAlgorithm.SHA2_256))

    restore()
    net.a.initiate("conn", "net", now=net.now)
    net.pump()
    assert len(net.events("a", IkeSaEstablished)) == 2
    assert not net.events("b", AuthenticationFailed)
