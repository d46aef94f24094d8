"""EAP-only authentication (RFC 5998) between two real Dispatchers on the virtual clock.

The gateway's own round (``local``) is an EAP method, as strongSwan configures it
(``leftauth=eap-tls`` in its rw-eap-tls-only test): its first IKE_AUTH response carries IDr
and the EAP Request but no AUTH, only to a client that announced EAP_ONLY_AUTHENTICATION,
and only with a safe method (EAP-TLS, EAP-TTLS; not EAP-MSCHAPv2). The gateways have no
PSK: had they built a PSK AUTH of their own, the exchange would fail.
"""

from __future__ import annotations

import time

import pytest

from ikev2.config import AuthConfig, AuthMethodName
from ikev2.crypto.auth import AuthenticationError
from ikev2.dispatcher import Dispatcher
from ikev2.enums import EapType
from ikev2.events import (
    AuthenticationFailed,
    ChildSaEstablished,
    IkeSaDeleted,
    IkeSaEstablished,
)
from ikev2.identity import Identity
from ikev2.tasks.ike_eap import MUTUAL_KEY_GENERATING, check_eap_only_gateway, check_eap_only_method
from tests.conftest_pki import Pki, pki_fixture  # noqa: F401  (the pki fixture)
from tests.engine.harness import Network, make_config, seeded_rng

GATEWAY = "192.0.2.1"
CLIENT = "192.0.2.10"
PASSWORDS = {"carol": "Ar3etTnp"}


def no_psk(local: str, remote: str) -> bytes | None:
    return None


def gateway(local: AuthConfig, remote: AuthConfig) -> Dispatcher:
    config = make_config(
        "rw", local=GATEWAY, remote="%any", local_id="moon.example.org", remote_id="%any",
        local_ts=["10.2.0.0/16"], remote_ts=["dynamic"],
    )  # fmt: skip
    config.local, config.remote = local, remote
    return Dispatcher(
        [config], no_psk, rng=seeded_rng(99), eap_lookup=PASSWORDS.get,
        wall_time_offset=time.time(),
    )  # fmt: skip


def client(local: AuthConfig, remote: AuthConfig, password: str = "Ar3etTnp") -> Dispatcher:
    config = make_config(
        "home", local=CLIENT, remote=GATEWAY, local_id="carol@example.org",
        remote_id="moon.example.org", local_ts=["dynamic"], remote_ts=["10.2.0.0/16"],
    )  # fmt: skip
    config.local, config.remote = local, remote
    return Dispatcher(
        [config], no_psk, rng=seeded_rng(1), eap_lookup=lambda identity: password,
        wall_time_offset=time.time(),
    )  # fmt: skip


def tls_pair(pki: Pki, gw_auth: AuthMethodName = "eap-tls", rw_remote: AuthMethodName = "eap-tls"):
    moon, sun, ca = pki["rsa"], pki["ecdsa256"], pki["ca"].cert
    gw = gateway(
        AuthConfig(auth=gw_auth, id="moon.example.org", certs=[moon.cert], private_key=moon.key),
        AuthConfig(auth=gw_auth, id="%any", cacerts=[ca]),
    )
    rw = client(
        AuthConfig(auth="eap-tls", id="sun.example.org", certs=[sun.cert], private_key=sun.key),
        AuthConfig(auth=rw_remote, id="moon.example.org", cacerts=[ca]),
    )
    return rw, gw


def run(rw: Dispatcher, gw: Dispatcher) -> Network:
    net = Network(rw, gw)
    net.a.initiate("home", "net", now=net.now)
    net.pump()
    return net


@pytest.mark.parametrize("gw_auth", ["eap-tls", "eap"])
def test_eap_only_tls_establishes_without_a_gateway_auth(pki: Pki, gw_auth) -> None:
    """With auth = eap (any method) the EAP-only gateway proposes only the safe ones."""
    net = run(*tls_pair(pki, gw_auth=gw_auth))
    assert not net.events("a", AuthenticationFailed), net.events("a", AuthenticationFailed)
    assert not net.events("b", AuthenticationFailed), net.events("b", AuthenticationFailed)
    (up_a,) = net.events("a", IkeSaEstablished)
    (up_b,) = net.events("b", IkeSaEstablished)
    assert up_a.remote_id == "moon.example.org" and up_b.remote_id == "sun.example.org"
    (child_a,) = net.events("a", ChildSaEstablished)
    (child_b,) = net.events("b", ChildSaEstablished)
    assert child_a.spi_in == child_b.spi_out


def test_gateway_refuses_eap_only_with_mschapv2() -> None:
    """EAP-MSCHAPv2 is not safe for EAP-only (RFC 5998 sec. 4; strongSwan agrees)."""
    gw = gateway(
        AuthConfig(auth="eap-mschapv2", id="moon.example.org"),
        AuthConfig(auth="eap-mschapv2", id="%any"),
    )
    rw = client(
        AuthConfig(auth="eap-mschapv2", id="carol@example.org", eap_id="carol"),
        AuthConfig(auth="eap-mschapv2", id="moon.example.org"),
    )
    net = run(rw, gw)
    (refused,) = net.events("b", AuthenticationFailed)
    assert refused.check == "method-mismatch" and "RFC 5998 sec. 4" in refused.reason
    assert net.events("a", AuthenticationFailed)
    assert not net.events("a", IkeSaEstablished) and not net.events("b", IkeSaEstablished)
    assert net.events("a", IkeSaDeleted) and net.events("b", IkeSaDeleted)


def test_client_expecting_a_certificate_refuses_an_eap_only_gateway(pki: Pki) -> None:
    net = run(*tls_pair(pki, rw_remote="pubkey"))
    (refused,) = net.events("a", AuthenticationFailed)
    assert refused.check == "method-mismatch" and "RFC 5998" in refused.reason
    assert "remote auth = eap-tls (or eap-ttls, eap)" in refused.reason
    assert not net.events("a", IkeSaEstablished) and not net.events("b", IkeSaEstablished)
    assert not net.events("a", ChildSaEstablished) and not net.events("b", ChildSaEstablished)


def test_client_expecting_eap_only_refuses_a_gateway_that_signs(pki: Pki) -> None:
    moon, ca = pki["rsa"], pki["ca"].cert
    gw = gateway(
        AuthConfig(auth="pubkey", id="moon.example.org", certs=[moon.cert],
                   private_key=moon.key),
        AuthConfig(auth="eap-mschapv2", id="%any"),
    )  # fmt: skip
    rw = client(
        AuthConfig(auth="eap-mschapv2", id="carol@example.org", eap_id="carol"),
        AuthConfig(auth="eap-tls", id="moon.example.org", cacerts=[ca]),
    )
    net = run(rw, gw)
    (refused,) = net.events("a", AuthenticationFailed)
    assert refused.check == "method-mismatch" and "expects EAP-only" in refused.reason
    assert not net.events("a", IkeSaEstablished)


def test_gateway_refuses_eap_only_to_a_client_that_did_not_announce_it() -> None:
    rw_config = make_config(
        "rw", local=GATEWAY, remote="%any", local_id="moon.example.org", remote_id="%any"
    )
    rw_config.local = AuthConfig(auth="eap-tls", id="moon.example.org")
    rw_config.remote = AuthConfig(auth="eap-tls", id="%any")
    with pytest.raises(AuthenticationError, match="did not announce EAP_ONLY_AUTHENTICATION"):
        check_eap_only_gateway(rw_config, False, Identity.parse("carol@example.org"))
    check_eap_only_gateway(rw_config, True, Identity.parse("carol@example.org"))


def test_client_accepts_eap_only_only_for_mutual_key_generating_methods() -> None:
    assert {EapType.TLS, EapType.TTLS} == MUTUAL_KEY_GENERATING
    for method in MUTUAL_KEY_GENERATING:
        check_eap_only_method(method, "moon.example.org")
    for unsafe in (EapType.MSCHAPV2, EapType.MD5_CHALLENGE, None):
        with pytest.raises(AuthenticationError, match="mutual, key-generating"):
            check_eap_only_method(unsafe, "moon.example.org")
