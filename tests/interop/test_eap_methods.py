"""EAP-MD5, EAP-TTLS and eap-dynamic with a real strongSwan, both roles (issue 19's corpus
methods; docs/remote-access.md, "EAP methods").

One lab for all rows (their daemons' start is most of a row's cost)::

    carol (charon, 10.200.1.2) --veth-- moon (aioipsec, 10.200.1.1/10.200.2.1)
    dave (charon without eap-md5, 10.200.2.2) --veth--/

Each side holds a gateway connection per method (authenticating itself by certificate) and
a client connection per method; the responder picks the connection by the initiator's IKE
identity (``<method>@example``). Rows:

* charon as client against our gateway: eap-md5, eap-ttls (inner EAP-MD5, strongSwan's
  default phase 2), eap-ttls from dave (it Naks our inner EAP-MD5 in the tunnel, inner
  EAP-MSCHAPv2 runs), and eap-md5 against our ``eap-dynamic`` gateway (we propose EAP-TLS,
  charon Naks it for MD5, RFC 3748 sec. 5.3.1);
* our client against a charon gateway: eap-md5 and eap-ttls (charon's TTLS server with
  phase 2 EAP-MD5);
* EAP-only authentication (RFC 5998) with EAP-TTLS, both ways, in the shape of strongSwan's
  ikev2/rw-eap-ttls-only (gateway ``local { auth = eap-ttls }``, client ``auth = eap``).

Checked: the IKE SA and its Child SA are up on both sides, and charon's own log says
which EAP method ran and whether it made an MSK (EAP-MD5: none; the AUTH payloads are then
keyed with SK_pi/SK_pr, RFC 7296 sec. 2.16, which charon verifies).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from aioipsec.interop.charon import DEFAULT_CHARON_PLUGINS, Charon
from aioipsec.interop.ours import AioipsecPeer
from aioipsec.netns import Lab

pytestmark = [pytest.mark.needs("root", "charon", "swanctl"), pytest.mark.timeout(240)]

PASSWORD = "Ar3etTnp-eap-methods"
MOON, CAROL = "10.200.1.1", "10.200.1.2"
# Each side's protected subnet.
LANS = {"moon": "10.2.0.0/24", "carol": "10.3.0.0/24"}
PLUGINS = DEFAULT_CHARON_PLUGINS + " eap-identity eap-md5 eap-ttls"

GATEWAY_CONN = """\
   gw-{name} {{
      local {{
         auth = pubkey
         certs = {cert}
         id = {gateway}
      }}
      remote {{
         auth = {auth}
         id = {client}
         eap_id = %any
      }}
      children {{
         gw-{name} {{
            local_ts = {lan}
            remote_ts = {peer_lan}
            esp_proposals = aes256gcm16
         }}
      }}
   }}
"""

CLIENT_CONN = """\
   rw-{name} {{
      remote_addrs = {gateway_addr}
      local {{
         auth = {auth}
         id = {client}
         eap_id = carol
      }}
      remote {{
         auth = pubkey
         id = {gateway}
      }}
      children {{
         rw-{name} {{
            local_ts = {lan}
            remote_ts = {peer_lan}
            esp_proposals = aes256gcm16
         }}
      }}
   }}
"""

# EAP-only (RFC 5998) with EAP-TTLS, as strongSwan's ikev2/rw-eap-ttls-only: the gateway's
# own round is EAP-TTLS (its certificate inside TLS), the client's "any EAP method", and the
# client expects the gateway to authenticate by EAP-TTLS.
EAP_ONLY_GATEWAY = """\
   gw-only {{
      local {{
         auth = eap-ttls
         certs = {cert}
         id = {gateway}
      }}
      remote {{
         auth = eap-ttls
         id = {client}
         eap_id = %any
      }}
      children {{
         gw-only {{
            local_ts = {lan}
            remote_ts = {peer_lan}
            esp_proposals = aes256gcm16
         }}
      }}
   }}
"""

EAP_ONLY_CLIENT = """\
   rw-only {{
      remote_addrs = {gateway_addr}
      local {{
         auth = eap
         id = {client}
         eap_id = carol
      }}
      remote {{
         auth = eap-ttls
         id = {gateway}
      }}
      children {{
         rw-only {{
            local_ts = {lan}
            remote_ts = {peer_lan}
            esp_proposals = aes256gcm16
         }}
      }}
   }}
"""

SECRETS = f"""\
secrets {{
   eap-carol {{
      id = carol
      secret = "{PASSWORD}"
   }}
}}
"""


def swanctl_conf(cert: str, gateway: str, peer_gateway: str, peer_addr: str, ours: str) -> str:
    """Our gateway connections (clients ``<name>@<peer>``) and our client connections
    (``<name>@<ours>``) towards the other side's gateway."""
    peer = "carol" if ours == "moon" else "moon"
    conns = [
        GATEWAY_CONN.format(name=name, cert=cert, gateway=gateway, auth=auth, lan=LANS[ours],
                            peer_lan=LANS[peer],
                            client=f"{name}@{peer}.example")
        for name, auth in (("md5", "eap-md5"), ("ttls", "eap-ttls"), ("dyn", "eap-dynamic"))
    ] + [
        CLIENT_CONN.format(name=name, gateway_addr=peer_addr, auth=auth, gateway=peer_gateway,
                           lan=LANS[ours], peer_lan=LANS[peer],
                           client=f"{name}@{ours}.example")
        for name, auth in (("md5", "eap-md5"), ("ttls", "eap-ttls"), ("dyn", "eap-md5"))
    ] + [
        EAP_ONLY_GATEWAY.format(cert=cert, gateway=gateway, client=f"only@{peer}.example",
                                lan=LANS[ours], peer_lan=LANS[peer]),
        EAP_ONLY_CLIENT.format(gateway_addr=peer_addr, gateway=peer_gateway,
                               client=f"only@{ours}.example", lan=LANS[ours],
                               peer_lan=LANS[peer]),
    ]  # fmt: skip
    return "connections {\n" + "".join(conns) + "}\n" + SECRETS


# A second charon whose client has no EAP-MD5: inside the EAP-TTLS tunnel it Naks our
# phase-2 EAP-MD5, and the gateway runs EAP-MSCHAPv2 instead.
DAVE = "10.200.2.2"
Peers = tuple[AioipsecPeer, Charon, Charon]  # ours, carol, dave
DAVE_PLUGINS = DEFAULT_CHARON_PLUGINS + " eap-identity eap-ttls eap-mschapv2 md4 des"


@pytest.fixture(scope="module")
def peers(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[AioipsecPeer, Charon, Charon]]:
    from aioipsec.interop.pki import Pki

    tmp = tmp_path_factory.mktemp("eap-methods")
    with Lab("eapm") as lab:
        moon, carol, dave = (lab.namespace(name) for name in ("moon", "carol", "dave"))
        lab.veth(moon, f"{MOON}/24", carol, f"{CAROL}/24")
        lab.veth(moon, "10.200.2.1/24", dave, f"{DAVE}/24")
        # Subnet-to-subnet (host selectors would collide with the IKE traffic's route in
        # charon's kernel-libipsec); each routes from an address of its own in its LAN.
        carol.ip("addr", "add", "10.3.0.1/32", "dev", "lo")
        moon.ip("addr", "add", "10.2.0.1/32", "dev", "lo")
        dave.ip("addr", "add", "10.4.0.1/32", "dev", "lo")
        pki = Pki(tmp / "pki")
        ours = AioipsecPeer(lab, moon, tmp / "moon")
        moon_cert = pki.install("moon.example", ours.workdir)
        charons = [Charon(lab, carol, tmp / "carol", plugins=PLUGINS),
                   Charon(lab, dave, tmp / "dave", plugins=DAVE_PLUGINS)]  # fmt: skip
        carol_cert = pki.install("carol.example", charons[0].workdir)
        pki.install("dave.example", charons[1].workdir)  # the CA; dave's own is unused
        for charon in charons:
            charon.start()
        charons[0].load(swanctl_conf(carol_cert, "carol.example", "moon.example", MOON, "carol"))
        dave_client = CLIENT_CONN.format(name="mschap", gateway_addr="10.200.2.1",
                                         auth="eap-ttls", gateway="moon.example",
                                         client="mschap@dave.example", lan="10.4.0.0/24",
                                         peer_lan=LANS["moon"])  # fmt: skip
        charons[1].load("connections {\n" + dave_client + "}\n" + SECRETS)
        our_conf = swanctl_conf(moon_cert, "moon.example", "carol.example", CAROL, "moon")
        dave_gateway = GATEWAY_CONN.format(name="mschap", cert=moon_cert, gateway="moon.example",
                                           auth="eap-ttls", client="mschap@dave.example",
                                           lan=LANS["moon"], peer_lan="10.4.0.0/24")  # fmt: skip
        ours.load(our_conf.replace("connections {\n", "connections {\n" + dave_gateway, 1))
        try:
            yield ours, charons[0], charons[1]
        finally:
            ours.stop()
            for charon in charons:
                charon.stop()


def _established(ours: AioipsecPeer, name: str) -> dict:
    """Our IKE SA of connection NAME once it is up with its Child SA (list-sas form)."""
    deadline = time.monotonic() + 20
    while True:
        ike = ours.list_sas().get(name, {})
        if ike.get("state") == "ESTABLISHED" and ike.get("child-sas"):
            return ike
        assert time.monotonic() < deadline, f"{name} not up: {ike}\n{ours.log_tail(30)}"
        time.sleep(0.1)


def _charon_row(peers: Peers, name: str, which: int = 1) -> str:
    """charon (carol, or dave: WHICH 2) initiates rw-NAME to our gw-NAME; its log lines of
    this row."""
    ours, charon = peers[0], peers[which]
    before = len(charon.log_text())
    charon.initiate(f"rw-{name}", f"rw-{name}")
    try:
        _established(ours, f"gw-{name}")
        return charon.log_text()[before:]
    finally:
        charon.terminate(f"rw-{name}")


def _our_row(peers: Peers, name: str) -> str:
    """We initiate rw-NAME to carol's gw-NAME; charon's log lines of this row."""
    ours, charon = peers[0], peers[1]
    before = len(charon.log_text())
    ours.initiate(f"rw-{name}", f"rw-{name}")
    try:
        _established(ours, f"rw-{name}")
        charon.wait_for_sa(f"gw-{name}")
        return charon.log_text()[before:]
    finally:
        ours.terminate(f"rw-{name}")


def test_charon_eap_md5_client_against_our_gateway(peers) -> None:
    log = _charon_row(peers, "md5")
    assert "EAP method EAP_MD5 succeeded, no MSK established" in log, log


def test_charon_eap_ttls_client_against_our_gateway(peers) -> None:
    log = _charon_row(peers, "ttls")
    assert "EAP method EAP_TTLS succeeded, MSK established" in log, log


def test_charon_ttls_client_naks_inner_md5_for_mschapv2(peers) -> None:
    log = _charon_row(peers, "mschap", which=2)
    assert "sending tunneled EAP-TTLS AVP [EAP/RES/NAK]" in log, log
    assert "server requested EAP_MSCHAPV2 authentication" in log, log
    assert "EAP method EAP_TTLS succeeded, MSK established" in log, log


def test_charon_md5_client_naks_our_eap_dynamic_proposal(peers) -> None:
    log = _charon_row(peers, "dyn")
    assert "sending EAP_NAK" in log and "EAP method EAP_MD5 succeeded" in log, log


def test_our_eap_md5_client_against_charon(peers) -> None:
    log = _our_row(peers, "md5")
    assert "EAP method EAP_MD5 succeeded" in log and "authentication of 'md5@moon" in log, log


def test_our_eap_ttls_client_against_charon(peers) -> None:
    log = _our_row(peers, "ttls")
    assert "EAP_TTLS phase2 authentication of 'carol' with EAP_MD5 successful" in log, log


def test_charon_eap_only_ttls_client_against_our_gateway(peers) -> None:
    """strongSwan's rw-eap-ttls-only: our gateway sends no AUTH of its own, EAP-TTLS
    authenticates it (RFC 5998), charon's client accepts that."""
    log = _charon_row(peers, "only")
    assert "parsed IKE_AUTH response 1 [ IDr EAP/REQ/ID ]" in log, log  # no AUTH, no CERT
    assert "allow mutual EAP-only authentication" in log, log
    assert "EAP method EAP_TTLS succeeded, MSK established" in log, log
    assert "authentication of 'moon.example' with EAP successful" in log, log


def test_our_eap_only_ttls_client_against_charon(peers) -> None:
    """The same with charon as the EAP-only EAP-TTLS gateway and our client."""
    log = _our_row(peers, "only")
    assert "generating IKE_AUTH response 1 [ IDr EAP/REQ/ID ]" in log, log  # no AUTH
    assert "EAP_TTLS phase2 authentication of 'carol' with EAP_MD5 successful" in log, log
    assert "authentication of 'carol.example' (myself) with EAP" in log, log
