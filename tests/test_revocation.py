"""Revocation checks (aioipsec/revocation.py) against real sources: CRLs signed by
strongSwan's ``pki --signcrl``, read from swanctl's x509crl/ and served over HTTP by
``python -m http.server`` on a namespace address, and ``openssl ocsp`` as the responder on
a namespace address; every policy (strict, ifuri, relaxed) on good, revoked, unreachable
and absent sources."""

from __future__ import annotations

import datetime
import shutil
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509

from aioipsec.config import load_configuration, to_engine_configs
from aioipsec.config.credentials import load_crl_file
from aioipsec.interop.pki import Pki
from aioipsec.netns import Lab, Namespace
from aioipsec.revocation import (
    Authority,
    RevocationChecker,
    RevocationStore,
    Status,
)
from ikev2.crypto.certs import CertificateError
from tests.components import require_component

pytestmark = pytest.mark.needs("root", "ip", "pki", "openssl")

SERVER = "10.77.0.2"
CLIENT = "10.77.0.1"
HTTP = f"http://{SERVER}:8080"
OCSP = f"http://{SERVER}:8888"
OCSP_NOT_SIGNER = f"http://{SERVER}:8889"
DEAD = f"http://{SERVER}:9"  # nothing listens: connection refused at once


@dataclass
class World:
    pki: Pki
    client: Namespace
    lab: Lab
    http: object
    base: Path

    def chain(self, identity: str) -> list[x509.Certificate]:
        credentials = self.pki.credentials(identity)
        return [_load(credentials.cert), _load(credentials.ca_cert)]

    def check(self, store: RevocationStore, policy: str, identity: str) -> None:
        with self.client.entered():
            RevocationChecker(store, policy).check(self.chain(identity), time.time())


def _load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _ocsp_index(pki: Pki, entries: dict[str, bool], path: Path) -> None:
    """openssl ca's index.txt: V (valid) or R (revoked) lines for the identities."""
    lines = []
    for identity, revoked in entries.items():
        cert = _load(pki.credentials(identity).cert)
        expiry = cert.not_valid_after_utc.strftime("%y%m%d%H%M%SZ")
        serial = format(cert.serial_number, "X")
        serial = serial if len(serial) % 2 == 0 else "0" + serial
        when = (
            (datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=1)).strftime(
                "%y%m%d%H%M%SZ"
            )
            + ",keyCompromise"
            if revoked
            else ""
        )
        subject = "/" + "/".join(a.rfc4514_string() for a in cert.subject)
        lines.append("\t".join(("R" if revoked else "V", expiry, when, serial, "unknown", subject)))
    path.write_text("\n".join(lines) + "\n")


def _wait_port(namespace: Namespace, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    with namespace.entered():
        while time.monotonic() < deadline:
            try:
                socket.create_connection((SERVER, port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
    raise AssertionError(f"nothing listens on {SERVER}:{port}")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    require_component("root", "ip", "pki", "openssl")
    base = tmp_path_factory.mktemp("revocation")
    pki = Pki(base / "pki", "ecdsa")
    for identity in ("valid.crl.example", "revoked.crl.example"):
        pki.credentials(identity, crl_uris=[f"{HTTP}/ca.crl"])
    for identity in ("valid.ocsp.example", "revoked.ocsp.example"):
        pki.credentials(identity, ocsp_uris=[OCSP])
    pki.credentials("dead.example", crl_uris=[f"{DEAD}/ca.crl"], ocsp_uris=[DEAD])
    pki.credentials("ocsp.responder", flags=["ocspSigning"])
    for identity in ("plain.example", "revoked.nocdp.example"):
        pki.credentials(identity)
    www = base / "www"
    www.mkdir()
    pki.sign_crl(["revoked.crl.example", "revoked.nocdp.example"], www / "ca.crl")
    index = base / "index.txt"
    _ocsp_index(
        pki,
        {"valid.ocsp.example": False, "revoked.ocsp.example": True, "plain.example": False},
        index,
    )
    with Lab("rv") as lab:
        server, client = lab.namespace("srv"), lab.namespace("cli")
        lab.veth(client, f"{CLIENT}/24", server, f"{SERVER}/24")
        http = lab.start(
            server,
            [
                sys.executable,
                "-m",
                "http.server",
                "--bind",
                SERVER,
                "8080",
                "--directory",
                str(www),
            ],
            log=base / "http.log",
        )
        responder = pki.credentials("ocsp.responder")
        not_signer = pki.credentials("plain.example")
        for port, signer in ((8888, responder), (8889, not_signer)):
            ocsp = lab.start(
                server,
                ["openssl", "ocsp", "-index", str(index), "-port", str(port),
                 "-CA", str(pki.ca_cert), "-rsigner", str(signer.cert), "-rkey", str(signer.key),
                 "-ndays", "1"],
                log=base / f"ocsp-{port}.log",
            )  # fmt: skip
            # openssl ocsp serves one connection at a time: no probe connection, its log.
            assert ocsp.wait_for_log("waiting for OCSP client connections"), ocsp.log_text()
        _wait_port(client, 8080)
        yield World(pki, client, lab, http, base)


def _expect_refused(world: World, store: RevocationStore, policy: str, identity: str) -> str:
    with pytest.raises(CertificateError) as caught:
        world.check(store, policy, identity)
    return f"{caught.value.check}: {caught.value}"


def test_crl_file_in_x509crl_refuses_the_revoked_certificate(world: World) -> None:
    """swanctl's x509crl/ holds a pki --signcrl CRL: the revoked certificate is refused with
    its serial and the file named; the valid one passes, also under strict."""
    swanctl = world.base / "swanctl"
    world.pki.install("moon.example", swanctl)
    (swanctl / "x509crl").mkdir()
    shutil.copy(world.base / "www" / "ca.crl", swanctl / "x509crl" / "ca.crl")
    (swanctl / "swanctl.conf").write_text(
        "connections {\n gw {\n  remote_addrs = 192.0.2.2\n"
        "  local {\n   auth = pubkey\n   certs = moon.example.pem\n  }\n"
        "  remote {\n   auth = pubkey\n   id = %any\n   revocation = strict\n  }\n"
        "  children {\n   net {\n    local_ts = 10.1.0.0/16\n   }\n  }\n }\n}\n"
    )
    configuration = load_configuration(None, swanctl / "swanctl.conf")
    assert configuration.crls == [swanctl / "x509crl" / "ca.crl"]
    (ike,) = to_engine_configs(configuration)
    checker = ike.remote.revocation
    assert isinstance(checker, RevocationChecker) and checker.policy == "strict"
    revoked = world.chain("revoked.nocdp.example")
    with pytest.raises(CertificateError) as caught:
        checker.check(revoked, time.time())
    assert caught.value.check == "revoked"
    assert format(revoked[0].serial_number, "x") in str(caught.value)
    assert "CRL file" in str(caught.value) and "ca.crl" in str(caught.value)
    assert "keyCompromise" in str(caught.value)
    checker.check(world.chain("plain.example"), time.time())


def test_http_crl_from_the_distribution_point_is_fetched_and_cached(world: World) -> None:
    store = RevocationStore()
    message = _expect_refused(world, store, "relaxed", "revoked.crl.example")
    assert message.startswith("revoked:") and f"CRL {HTTP}/ca.crl" in message
    world.check(store, "strict", "valid.crl.example")
    assert "GET /ca.crl" in world.http.log_text()  # type: ignore[attr-defined]  # BackgroundProcess
    requests = world.http.log_text().count("GET /ca.crl")  # type: ignore[attr-defined]  # same
    # Cached until its nextUpdate (15 days): no second request.
    world.check(store, "strict", "valid.crl.example")
    assert world.http.log_text().count("GET /ca.crl") == requests  # type: ignore[attr-defined]  # same


def test_authority_crl_uris_cover_certificates_without_a_distribution_point(
    world: World,
) -> None:
    ca = _load(world.pki.ca_cert)
    store = RevocationStore(authorities=[Authority("ca", ca, crl_uris=[f"{HTTP}/ca.crl"])])
    message = _expect_refused(world, store, "relaxed", "revoked.nocdp.example")
    assert message.startswith("revoked:") and f"{HTTP}/ca.crl" in message
    world.check(store, "strict", "plain.example")


def test_ocsp_responder_with_a_delegated_signer(world: World) -> None:
    """openssl ocsp signs with a certificate the CA issued with id-kp-OCSPSigning."""
    store = RevocationStore()
    message = _expect_refused(world, store, "relaxed", "revoked.ocsp.example")
    chain = world.chain("revoked.ocsp.example")
    assert message.startswith("revoked:") and f"OCSP responder {OCSP}" in message
    assert format(chain[0].serial_number, "x") in message and "keyCompromise" in message
    world.check(store, "strict", "valid.ocsp.example")
    with world.client.entered():
        result = store.status(chain[0], chain[1], time.time())  # cached answer
    assert result.status is Status.REVOKED


def test_ocsp_response_signed_without_ocsp_signing_is_not_an_answer(world: World) -> None:
    """A responder certificate from the CA but without id-kp-OCSPSigning (RFC 6960 sec.
    4.2.2.2): no answer, so strict refuses and relaxed lets the peer in."""
    ca = _load(world.pki.ca_cert)
    store = RevocationStore(authorities=[Authority("ca", ca, ocsp_uris=[OCSP_NOT_SIGNER])])
    message = _expect_refused(world, store, "strict", "plain.example")
    assert message.startswith("revocation-unknown:") and "id-kp-OCSPSigning" in message
    message = _expect_refused(world, store, "ifuri", "plain.example")
    assert message.startswith("revocation-unknown:")
    world.check(store, "relaxed", "plain.example")


def test_policies_when_nobody_answers_or_nobody_is_named(world: World) -> None:
    """strongSwan's policies: strict needs a good status, ifuri fails only when a URI was
    given and gave no answer, relaxed only refuses a certificate known to be revoked."""
    store = RevocationStore()
    world.check(store, "relaxed", "dead.example")
    for policy in ("ifuri", "strict"):
        message = _expect_refused(world, store, policy, "dead.example")
        assert message.startswith("revocation-unknown:") and DEAD in message
    world.check(store, "relaxed", "plain.example")
    world.check(store, "ifuri", "plain.example")
    message = _expect_refused(world, store, "strict", "plain.example")
    assert "no CRL and no OCSP responder" in message


def test_a_crl_not_signed_by_the_issuer_is_ignored(world: World) -> None:
    """A CRL with our CA's name, revoking our certificate, signed by another key (a second
    throw-away PKI has the same CA name) revokes nothing (RFC 5280 sec. 6.3.3 (f))."""
    other = Pki(world.base / "other", "ecdsa")
    target = world.pki.credentials("revoked.nocdp.example").cert
    forged = other.sign_crl([target], world.base / "forged.crl")
    crl = x509.load_der_x509_crl(forged.read_bytes())
    assert crl.issuer == _load(world.pki.ca_cert).subject
    assert crl.get_revoked_certificate_by_serial_number(_load(target).serial_number)
    store = RevocationStore(crls=[(crl, "CRL file forged.crl")])
    world.check(store, "relaxed", "revoked.nocdp.example")
    message = _expect_refused(world, store, "strict", "revoked.nocdp.example")
    assert message.startswith("revocation-unknown:")


def test_refresh_fetches_the_authorities_crls_ahead_of_any_peer(world: World) -> None:
    """The daemon's refresher (revocation.keep_fresh) fetches crl_uris before a peer asks;
    the check then needs no fetch, even with the CRL server unreachable."""
    ca = _load(world.pki.ca_cert)
    uri = f"{HTTP}/ca.crl?refresh"  # its own cache entry and its own line in the server log
    store = RevocationStore(authorities=[Authority("ca", ca, crl_uris=[uri])])
    before = world.http.log_text().count("GET /ca.crl?refresh")  # type: ignore[attr-defined]  # BackgroundProcess
    with world.client.entered():
        delay = store.refresh(time.time())
    assert world.http.log_text().count("GET /ca.crl?refresh") == before + 1  # type: ignore[attr-defined]  # same
    # 15 days of CRL validity: the next refresh is capped at an hour.
    assert delay == 3600.0
    # Checked from the root namespace, where the server's address is not reachable.
    message = _expect_refused_here(store, "relaxed", world.chain("revoked.nocdp.example"))
    assert message.startswith("revoked:") and uri in message


def _expect_refused_here(store: RevocationStore, policy: str, chain: list[x509.Certificate]) -> str:
    with pytest.raises(CertificateError) as caught:
        RevocationChecker(store, policy).check(chain, time.time())
    return f"{caught.value.check}: {caught.value}"


def test_keep_fresh_is_the_daemons_task(world: World) -> None:
    """keep_fresh refreshes every store it is given in a worker thread, then sleeps."""
    import asyncio

    from aioipsec.revocation import keep_fresh

    ca = _load(world.pki.ca_cert)
    uri = f"{HTTP}/ca.crl?task"
    store = RevocationStore(authorities=[Authority("ca", ca, crl_uris=[uri])])

    async def two_seconds() -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(keep_fresh(lambda: [store]), timeout=2.0)

    with world.client.entered():  # the executor's threads start in here: they inherit it
        asyncio.run(two_seconds())
    assert world.http.log_text().count("GET /ca.crl?task") == 1  # type: ignore[attr-defined]  # BackgroundProcess
    assert "revoked:" in _expect_refused_here(
        store, "relaxed", world.chain("revoked.nocdp.example")
    )


def test_our_own_ocsp_response_for_rfc4806(world: World) -> None:
    """ocsp = reply: the store fetches our certificate's status from the openssl ocsp
    responder its AIA names, keeps the DER answer, and the peer's store accepts it as
    the peer's own (stapled) answer without asking anyone (RFC 4806)."""
    store = RevocationStore()
    cert, issuer = world.chain("valid.ocsp.example")
    with world.client.entered():
        der = store.own_response(cert, issuer, time.time())
    assert der is not None
    assert store.own_response(cert, issuer, time.time()) == der  # kept until nextUpdate
    fetched: list[str] = []

    def offline(uri: str, *args: object) -> bytes:
        fetched.append(uri)
        raise ValueError("offline")

    peer_store = RevocationStore(fetch=offline)
    RevocationChecker(peer_store, "strict").check([cert, issuer], time.time(), stapled=[der])
    assert fetched == []
    # An answer for another certificate does not stand in for this one.
    revoked, _ = world.chain("revoked.ocsp.example")
    with pytest.raises(CertificateError) as caught:
        RevocationChecker(peer_store, "strict").check([revoked, issuer], time.time(), stapled=[der])
    assert caught.value.check == "revocation-unknown"


def test_delta_crls_from_pki_signcrl(world: World, tmp_path: Path) -> None:
    """RFC 5280 sec. 5.2.4: a complete CRL revoking one certificate and a delta CRL to it
    (``pki --signcrl --basecrl``) revoking another. Both are refused, the delta's entry
    named as such; a third certificate is good by the pair. A delta CRL alone says
    nothing about certificates it does not list; it keeps an expired complete CRL current."""
    pki = world.pki
    base = pki.sign_crl(["revoked.crl.example"], tmp_path / "base.crl", lifetime_days=1)
    delta = pki.sign_crl(["revoked.nocdp.example"], tmp_path / "delta.crl", base_crl=base)
    crls = [(load_crl_file(path), f"CRL file {path.name}") for path in (base, delta)]
    assert crls[1][0].extensions.get_extension_for_class(x509.DeltaCRLIndicator)
    now = time.time()
    store = RevocationStore(crls=crls)
    for identity, crl in (
        ("revoked.crl.example", "base.crl"),
        ("revoked.nocdp.example", "delta.crl"),
    ):
        with pytest.raises(CertificateError) as caught:
            RevocationChecker(store, "relaxed").check(world.chain(identity), now)
        assert caught.value.check == "revoked" and crl in str(caught.value), caught.value
    assert "(delta CRL)" in str(caught.value)
    RevocationChecker(store, "strict").check(world.chain("plain.example"), now)
    # Two days on the complete CRL has expired; the delta (15 days) keeps the pair current.
    RevocationChecker(store, "strict").check(world.chain("plain.example"), now + 2 * 86400)
    # The delta alone: its own entry refuses, everything else is unknown, not good.
    alone = RevocationStore(crls=crls[1:])
    with pytest.raises(CertificateError) as caught:
        RevocationChecker(alone, "strict").check(world.chain("plain.example"), now)
    assert caught.value.check == "revocation-unknown"
    with pytest.raises(CertificateError):
        RevocationChecker(alone, "relaxed").check(world.chain("revoked.nocdp.example"), now)
