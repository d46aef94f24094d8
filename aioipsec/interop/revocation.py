"""Revocation sources for the interop rows with ``Scenario.revocation`` (issue 19).

The strongSwan peer's certificate names a CRL distribution point or an OCSP responder at
its own outer address; this module serves them from the strongSwan peer's namespace, with
real processes: ``python -m http.server`` for the CRL (signed by ``pki --signcrl``) and
``openssl ocsp`` as the responder (signing with the CA's key). With ``Scenario.revoked`` the
strongSwan peer's certificate is revoked in both, and our daemon (``revocation = strict``)
must refuse it with AUTHENTICATION_FAILED.
"""

from __future__ import annotations

import datetime
import sys
from pathlib import Path

from cryptography import x509

from aioipsec.interop.pki import Pki
from aioipsec.interop.scenario import Scenario, Side, Topology
from aioipsec.netns import Lab

HTTP_PORT = 8080
OCSP_PORT = 8888


def checked_side(scenario: Scenario) -> Side:
    """The strongSwan side: its certificate is the one our daemon checks."""
    return "initiator" if scenario.initiator == "charon" else "responder"


def source_url(scenario: Scenario, topology: Topology) -> str:
    side = checked_side(scenario)
    address = topology.initiator_outer if side == "initiator" else topology.responder_outer
    host = f"[{address}]" if ":" in address else address
    if scenario.revocation == "crl":
        return f"http://{host}:{HTTP_PORT}/ca.crl"
    return f"http://{host}:{OCSP_PORT}"


def prepare_certificate(scenario: Scenario, topology: Topology, pki: Pki) -> None:
    """Issue the strongSwan peer's certificate with the CRL or OCSP URI (before install)."""
    url = source_url(scenario, topology)
    identity = scenario.identity(checked_side(scenario))
    if scenario.revocation == "crl":
        pki.credentials(identity, crl_uris=[url])
    else:
        pki.credentials(identity, ocsp_uris=[url])


def serve(lab: Lab, scenario: Scenario, topology: Topology, pki: Pki, workdir: Path) -> str:
    """Start the CRL server or the OCSP responder in the strongSwan peer's namespace;
    returns its URL once it listens."""
    side = checked_side(scenario)
    namespace = topology.namespace(side)
    identity = scenario.identity(side)
    url = source_url(scenario, topology)
    folder = workdir / "revocation"
    folder.mkdir(parents=True, exist_ok=True)
    if scenario.revocation == "crl":
        www = folder / "www"
        www.mkdir(exist_ok=True)
        pki.sign_crl([identity] if scenario.revoked else [], www / "ca.crl")
        address = url.split("//")[1].rsplit(":", 1)[0].strip("[]")
        server = lab.start(
            namespace,
            [sys.executable, "-m", "http.server", "--bind", address, str(HTTP_PORT),
             "--directory", str(www)],
            log=folder / "http.log",
        )  # fmt: skip
        ready = "Serving HTTP"
    else:
        cert = x509.load_pem_x509_certificate(pki.credentials(identity).cert.read_bytes())
        expiry = cert.not_valid_after_utc.strftime("%y%m%d%H%M%SZ")
        serial = format(cert.serial_number, "X")
        serial = serial if len(serial) % 2 == 0 else "0" + serial
        revoked_at = datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=1)
        status, when = (
            ("R", revoked_at.strftime("%y%m%d%H%M%SZ") + ",keyCompromise")
            if (scenario.revoked)
            else ("V", "")
        )
        subject = "/" + "/".join(a.rfc4514_string() for a in cert.subject)
        index = folder / "index.txt"
        index.write_text("\t".join((status, expiry, when, serial, "unknown", subject)) + "\n")
        server = lab.start(
            namespace,
            ["openssl", "ocsp", "-index", str(index), "-port", str(OCSP_PORT),
             "-CA", str(pki.ca_cert), "-rsigner", str(pki.ca_cert), "-rkey", str(pki.ca_key),
             "-ndays", "1"],
            log=folder / "ocsp.log",
        )  # fmt: skip
        ready = "waiting for OCSP client connections"
    if not server.wait_for_log(ready, timeout=10.0):
        raise RuntimeError(f"revocation source {url} did not start: {server.log_text()[-500:]}")
    return url
