"""Hash and URL certificates (RFC 7296 sec. 3.6, strongSwan's ``cert_uri_base``) between
two engines: the responder announces HTTP_CERT_LOOKUP_SUPPORTED, the initiator sends the
SHA-1 of its certificate and the URL under its cert_uri_base instead of the certificate,
and the responder fetches it over real HTTP (the revocation store's httpx client, a
``http.server`` on 127.0.0.1) and checks the hash."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from aioipsec.revocation import RevocationStore
from ikev2.events import AuthenticationFailed, ChildSaEstablished
from tests.engine.test_certs import cert_pair, leaf


@pytest.fixture
def server() -> Iterator[tuple[str, dict[str, bytes], list[str]]]:
    """(base URL, path -> body served, paths asked)."""
    files: dict[str, bytes] = {}
    asked: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            body = files.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/certs/", files, asked
    httpd.shutdown()
    httpd.server_close()


def _run(base: str, served: bytes | None, files: dict[str, bytes]) -> Any:
    net = cert_pair("ecdsa", "ecdsa")
    (config_a,) = net.a.ctx.configs
    (config_b,) = net.b.ctx.configs
    config_a.local.cert_uri_base = base
    config_b.remote.fetch_certificate = RevocationStore().certificate
    der = leaf("ecdsa", "a.example")[1].public_bytes(Encoding.DER)
    if served is not None:
        files["/certs/" + hashlib.sha1(der).hexdigest()] = served
    net.a.initiate("conn", "net", now=0.0)
    net.pump()
    return net


def test_the_certificate_is_fetched_by_its_url(server) -> None:
    base, files, asked = server
    der = leaf("ecdsa", "a.example")[1].public_bytes(Encoding.DER)
    net = _run(base, der, files)
    assert net.events("b", ChildSaEstablished) and net.events("a", ChildSaEstablished)
    # The IKE_AUTH request named the certificate by URL: the responder fetched it.
    assert asked == ["/certs/" + hashlib.sha1(der).hexdigest()]


@pytest.mark.parametrize("case", ["another certificate", "not found"])
def test_a_url_that_does_not_give_the_certificate(server, case: str) -> None:
    base, files, _ = server
    other = leaf("ecdsa", "b.example")[1].public_bytes(Encoding.DER)
    net = _run(base, other if case == "another certificate" else None, files)
    assert not net.events("b", ChildSaEstablished)
    (failure,) = net.events("b", AuthenticationFailed)
    assert failure.check == "bad-certificate", failure.reason
    assert ("SHA-1 differs" if case == "another certificate" else "cannot fetch") in failure.reason


def test_no_url_without_the_peers_announcement() -> None:
    """A responder that cannot fetch announces nothing: the certificate itself is sent."""
    net = cert_pair("ecdsa", "ecdsa")
    (config_a,) = net.a.ctx.configs
    config_a.local.cert_uri_base = "http://127.0.0.1:9/certs/"
    net.a.initiate("conn", "net", now=0.0)
    net.pump()
    assert net.events("b", ChildSaEstablished)
