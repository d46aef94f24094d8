"""Hash and URL certificates (RFC 7296 sec. 3.6, ``cert_uri_base``) against a real charon
(its curl plugin and ``hash_and_url = yes``), both ways in one exchange: we initiate, each
side announces HTTP_CERT_LOOKUP_SUPPORTED with its CERTREQ and sends its certificate as
the SHA-1 and URL under its authority's cert_uri_base; each fetches the other's from an
``http.server`` in charon's namespace that holds both DER files under their hex SHA-1.
"""

from __future__ import annotations

import hashlib
import sys
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from aioipsec.interop.charon import DEFAULT_CHARON_PLUGINS, Charon, swanctl_section
from aioipsec.interop.ours import AioipsecPeer
from aioipsec.interop.pki import Pki
from aioipsec.interop.scenario import Scenario
from aioipsec.interop.topology import build_topology
from aioipsec.netns import Lab
from tests.interop.charon_pair import wait_child, workdir_for

pytestmark = [pytest.mark.interop, pytest.mark.needs("root", "charon", "pki")]

NAME = "hu"
PORT = 8088


def _conf(local: str, remote: str, me: str, peer: str, cert: str, base: str, ts: tuple) -> str:
    connection = {
        "version": 2,
        "local_addrs": local,
        "remote_addrs": remote,
        "proposals": "aes256gcm16-prfsha256-x25519",
        "local": {"auth": "pubkey", "id": me, "certs": cert},
        "remote": {"auth": "pubkey", "id": peer},
        "children": {NAME: {"local_ts": ts[0], "remote_ts": ts[1]}},
    }
    authorities = {"ca": {"cacert": "ca.pem", "cert_uri_base": base}}
    return (
        swanctl_section("connections", {NAME: connection})
        + "\n"
        + swanctl_section("authorities", authorities)
    )


@pytest.mark.timeout(150)
def test_hash_and_url_with_charon() -> None:
    scenario = Scenario(name="hu", initiator="aioipsec", responder="charon")
    with workdir_for("hashurl") as workdir, Lab("hu") as lab:
        topology = build_topology(lab, scenario)
        pki = Pki(workdir / "pki", "ecdsa")
        www = workdir / "www"
        www.mkdir()
        for identity in ("ours.example", "charon.example"):
            cert = x509.load_pem_x509_certificate(pki.credentials(identity).cert.read_bytes())
            der = cert.public_bytes(Encoding.DER)
            (www / hashlib.sha1(der).hexdigest()).write_bytes(der)
        base = f"http://{topology.responder_outer}:{PORT}/"
        server = lab.start(
            topology.responder,
            [sys.executable, "-m", "http.server", "--bind", topology.responder_outer,
             str(PORT), "--directory", str(www)],
            log=workdir / "http.log",
        )  # fmt: skip
        charon = Charon(
            lab, topology.responder, workdir / "charon",
            plugins=DEFAULT_CHARON_PLUGINS + " curl", extra_charon_settings="hash_and_url = yes\n",
        )  # fmt: skip
        charon_cert = pki.install("charon.example", charon.workdir)
        charon.start()
        ours = AioipsecPeer(lab, topology.initiator, workdir / "ours")
        our_cert = pki.install("ours.example", ours.workdir)
        i_out, r_out = topology.initiator_outer, topology.responder_outer
        nets = ("10.1.0.0/24", "10.2.0.0/24")
        charon.load(_conf(r_out, i_out, "charon.example", "ours.example", charon_cert, base,
                          nets[::-1]))  # fmt: skip
        ours.load(_conf(i_out, r_out, "ours.example", "charon.example", our_cert, base, nets))
        deadline = time.monotonic() + 10
        while (
            "Serving HTTP" not in (workdir / "http.log").read_text() and time.monotonic() < deadline
        ):
            time.sleep(0.05)
        try:
            ours.call("initiate", ike=NAME, child=NAME, timeout=30.0)
            wait_child(charon, NAME)
            wait_child(ours, NAME)
        finally:
            ours.stop()
            server.stop()
        log = charon.log_text()
        fetched = (workdir / "http.log").read_text()
    # Both certificates went as Hash and URL and were fetched, each by the other side.
    assert "N(HTTP_CERT_LOOK)" in log or "HTTP_CERT_LOOKUP" in log, log[-3000:]
    assert fetched.count('"GET /') == 2, fetched
    assert f"{topology.initiator_outer} - -" in fetched, fetched  # we fetched charon's
