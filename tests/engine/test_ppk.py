"""RFC 8784 postquantum preshared keys between two engines, on the virtual clock: USE_PPK
in IKE_SA_INIT, PPK_IDENTITY and NO_PPK_AUTH in IKE_AUTH, SK_d/SK_pi/SK_pr re-derived with
the PPK (``Keymat.apply_ppk``), ``ppk_required`` on either side. The charon rows are in
tests/interop/test_ppk.py."""

from __future__ import annotations

from typing import Any

import pytest

from ikev2.config import AuthMethodName
from ikev2.events import (
    AuthenticationFailed,
    ChildSaEstablished,
    IkeSaEstablished,
    NegotiationFailed,
)
from tests.engine.harness import Network, make_pair, rekey_child_then_ike

PPK = bytes(range(32))
OTHER_PPK = bytes(range(1, 33))
PPK_ID = b"ppk-a@example.org"


def _pair(*, a: dict[str, Any], b: dict[str, Any], auth: str = "psk") -> Network:
    net = make_pair(seed=5)
    for dispatcher, settings in ((net.a, a), (net.b, b)):
        (config,) = dispatcher.ctx.configs
        for key, value in settings.items():
            setattr(config, key, value)
    return net


def _sa(net: Network, side: str) -> Any:
    dispatcher = net.a if side == "a" else net.b
    (info,) = dispatcher.sas()
    return dispatcher.ike_sa(info.ike_sa_id)


def _run(net: Network) -> None:
    net.a.initiate("conn", "net", now=0.0)
    net.pump()


def test_both_have_the_ppk() -> None:
    net = _pair(
        a={"ppk_id": "ppk-a@example.org", "ppks": {PPK_ID: PPK}},
        b={"ppks": {PPK_ID: PPK}},
    )
    _run(net)
    assert net.events("a", ChildSaEstablished) and net.events("b", ChildSaEstablished)
    sa_a, sa_b = _sa(net, "a"), _sa(net, "b")
    assert sa_a.peer.ppk_id == sa_b.peer.ppk_id == "ppk-a@example.org"
    assert sa_a.keymat.keys.sk_d == sa_b.keymat.keys.sk_d
    # The PPK is in the keys: the same exchange without it gives another SK_d.
    plain = _pair(a={}, b={})
    _run(plain)
    assert _sa(plain, "a").keymat.keys.sk_d != sa_a.keymat.keys.sk_d
    assert not _sa(plain, "a").peer.use_ppk


def test_responder_without_the_ppk_uses_no_ppk_auth() -> None:
    """The initiator does not require the PPK: the responder, which lacks it, checks
    NO_PPK_AUTH and the IKE SA comes up with the original keys."""
    net = _pair(
        a={"ppk_id": "ppk-a@example.org", "ppks": {PPK_ID: PPK}},
        b={"ppks": {b"someone-else": OTHER_PPK}},
    )
    _run(net)
    assert net.events("a", IkeSaEstablished) and net.events("b", ChildSaEstablished)
    assert _sa(net, "a").peer.ppk_id == _sa(net, "b").peer.ppk_id == ""
    assert _sa(net, "a").peer.use_ppk


@pytest.mark.parametrize(
    "a,b,failed_side",
    [
        # The initiator requires it, the responder lacks it: no NO_PPK_AUTH, AUTH fails.
        (
            {"ppk_id": "ppk-a@example.org", "ppks": {PPK_ID: PPK}, "ppk_required": True},
            {"ppks": {b"someone-else": OTHER_PPK}},
            "b",
        ),
        # The responder requires one, the initiator has no ppk_id.
        ({}, {"ppks": {PPK_ID: PPK}, "ppk_required": True}, "b"),
        # The responder's ppk_id pattern does not match the initiator's PPK_ID.
        (
            {"ppk_id": "ppk-a@example.org", "ppks": {PPK_ID: PPK}},
            {"ppk_id": "*@example.net", "ppks": {PPK_ID: PPK}},
            "b",
        ),
        # The same PPK_ID, two different PPKs: the AUTH over SK_pi does not verify.
        (
            {"ppk_id": "ppk-a@example.org", "ppks": {PPK_ID: PPK}},
            {"ppks": {PPK_ID: OTHER_PPK}},
            "b",
        ),
        # The initiator requires it, the responder announces no USE_PPK (no PPKs).
        ({"ppk_id": "ppk-a@example.org", "ppks": {PPK_ID: PPK}, "ppk_required": True}, {}, "a"),
    ],
)
def test_ppk_failures(a: dict[str, Any], b: dict[str, Any], failed_side: str) -> None:
    net = _pair(a=a, b=b)
    _run(net)
    assert not net.events("a", ChildSaEstablished) and not net.events("b", IkeSaEstablished)
    failures = net.events(failed_side, AuthenticationFailed)
    if failed_side == "a":
        # Our own requirement fails the initiation before IKE_AUTH is sent, naming it.
        (failed,) = net.events("a", NegotiationFailed)
        assert "ppk_required" in failed.reason and "USE_PPK" in failed.reason
        return
    assert failures, (net.events_a, net.events_b)
    assert failures[0].check in ("ppk", "psk-mismatch"), failures[0]


def test_rekeys_after_a_ppk() -> None:
    """SK_d carries the PPK into Child SA and IKE SA rekeys (sec. 3: only once, in
    IKE_AUTH); both sides keep agreeing (the harness checks the data plane)."""
    net = _pair(
        a={"ppk_id": "ppk-a@example.org", "ppks": {PPK_ID: PPK}, "ppk_required": True},
        b={"ppks": {PPK_ID: PPK}, "ppk_required": True},
    )
    ike_id = net.a.initiate("conn", "net", now=0.0)
    net.pump()
    (child,) = net.events("a", ChildSaEstablished)
    rekey_child_then_ike(net, ike_id, child.child_sa_id)


@pytest.mark.parametrize("responder_has_it", [True, False])
def test_ppk_with_signatures(responder_has_it: bool) -> None:
    """Certificate authentication: the AUTH signature over the PPK's SK_pi, and a second
    signature in NO_PPK_AUTH for a responder without the PPK."""
    from tests.engine.test_certs import cert_pair

    net = cert_pair("ecdsa", "ecdsa")
    (config_a,) = net.a.ctx.configs
    (config_b,) = net.b.ctx.configs
    config_a.ppk_id, config_a.ppks = "ppk-a@example.org", {PPK_ID: PPK}
    config_b.ppks = {PPK_ID: PPK} if responder_has_it else {b"x": OTHER_PPK}
    _run(net)
    assert net.events("a", ChildSaEstablished) and net.events("b", ChildSaEstablished)
    expected = "ppk-a@example.org" if responder_has_it else ""
    assert _sa(net, "a").peer.ppk_id == _sa(net, "b").peer.ppk_id == expected


@pytest.mark.parametrize("method", ["eap-mschapv2", "eap-md5"])
@pytest.mark.parametrize("gateway_has_it", [True, False])
def test_ppk_with_eap(method: AuthMethodName, gateway_has_it: bool) -> None:
    """RFC 8784 with EAP (strongSwan's rw-eap-md5-id-rsa-ppk): the PPK goes with the
    client's last IKE_AUTH request, the one with the MSK-keyed AUTH (EAP-MD5 has no MSK:
    its AUTH key is SK_pi, which the PPK changes too); NO_PPK_AUTH for a gateway without
    it. The gateway's first AUTH (its signature, before EAP) has no PPK in it."""
    from tests.engine.test_eap_ike import client, connect, gateway

    rw, gw = client(auth=method), gateway(auth=method)
    (config_rw,) = rw.ctx.configs
    (config_gw,) = gw.ctx.configs
    config_rw.ppk_id, config_rw.ppks = "ppk-a@example.org", {PPK_ID: PPK}
    config_gw.ppks = {PPK_ID: PPK} if gateway_has_it else {b"x": OTHER_PPK}
    net = Network(rw, gw)
    connect(net)
    assert net.events("a", ChildSaEstablished) and net.events("b", ChildSaEstablished)
    expected = "ppk-a@example.org" if gateway_has_it else ""
    assert _sa(net, "a").peer.ppk_id == _sa(net, "b").peer.ppk_id == expected
    assert _sa(net, "a").keymat.keys.sk_d == _sa(net, "b").keymat.keys.sk_d


def test_ppk_required_with_eap_and_a_gateway_without_it() -> None:
    from tests.engine.test_eap_ike import client, connect, gateway

    rw, gw = client(), gateway()
    (config_rw,) = rw.ctx.configs
    config_rw.ppk_id, config_rw.ppks = "ppk-a@example.org", {PPK_ID: PPK}
    config_rw.ppk_required = True
    (config_gw,) = gw.ctx.configs
    config_gw.ppks = {b"x": OTHER_PPK}
    net = Network(rw, gw)
    connect(net)
    assert not net.events("a", ChildSaEstablished)
    assert net.events("b", AuthenticationFailed)
