"""EAP-MD5, EAP-TTLS, eap-dynamic and ``auth = eap`` inside IKE_AUTH between two real
Dispatchers (the harness of tests/engine/test_eap_ike.py).

EAP-MD5 derives no MSK: both AUTH payloads of the last round are then keyed with SK_pi and
SK_pr (RFC 7296 sec. 2.16); the rows below establish only if both ends agree on that.
"""

from __future__ import annotations

from ikev2.config import AuthConfig, AuthMethodName
from ikev2.events import AuthenticationFailed, ChildSaEstablished, IkeSaEstablished
from tests.engine.harness import Network
from tests.engine.test_eap_ike import client, connect, gateway
from tests.test_eap_md5_ttls import gateway_certificate


def _up(net: Network) -> None:
    assert not net.events("b", AuthenticationFailed), net.events("b", AuthenticationFailed)
    assert not net.events("a", AuthenticationFailed), net.events("a", AuthenticationFailed)
    assert net.events("a", ChildSaEstablished) and net.events("b", ChildSaEstablished)
    assert net.events("b", IkeSaEstablished)[0].remote_id == "carol@example.org"


def test_eap_md5_keys_auth_with_sk_p() -> None:
    net = Network(client(auth="eap-md5"), gateway(auth="eap-md5"))
    connect(net)
    _up(net)


def test_eap_md5_wrong_secret() -> None:
    net = Network(client(password="wrong", auth="eap-md5"), gateway(auth="eap-md5"))
    connect(net)
    (refused,) = net.events("b", AuthenticationFailed)
    assert "wrong EAP-MD5 secret for 'carol'" in refused.reason
    assert not net.events("a", IkeSaEstablished) and not net.events("b", IkeSaEstablished)


def test_eap_dynamic_gateway_takes_the_clients_nak() -> None:
    """The gateway prefers EAP-MSCHAPv2 (no certificate: no TLS methods); an eap-md5
    client Naks it and names MD5, which the gateway then runs."""
    net = Network(client(auth="eap-md5"), gateway(auth="eap-dynamic"))
    connect(net)
    _up(net)


def _ttls_gateway(auth: AuthMethodName = "eap-ttls"):
    cert, key = gateway_certificate()
    local = AuthConfig(auth="pubkey", id="moon.example.org", certs=[cert], private_key=key)
    return gateway(auth=auth, local=local)


def _trusting_client(auth: AuthMethodName):
    remote = AuthConfig(auth="pubkey", id="moon.example.org", cacerts=[gateway_certificate()[0]])
    local = AuthConfig(auth=auth, id="carol@example.org", eap_id="carol")
    return client(local=local, remote=remote)


def test_eap_ttls_both_roles() -> None:
    net = Network(_trusting_client("eap-ttls"), _ttls_gateway())
    connect(net)
    _up(net)


def test_any_eap_client_runs_what_the_dynamic_gateway_proposes() -> None:
    """auth = eap: the client takes the gateway's first choice it has credentials for
    (EAP-TLS needs a client certificate it lacks: it Naks it for EAP-TTLS)."""
    net = Network(_trusting_client("eap"), _ttls_gateway("eap-dynamic"))
    connect(net)
    _up(net)
