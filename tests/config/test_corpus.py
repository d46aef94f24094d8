"""Every IKEv2 host configuration of strongSwan's own integration tests, loaded as
``aioipsec check --swanctl-conf`` loads it (issue 19).

The corpus (``../shared/reference/swanctl-corpus``, see :mod:`tests.config.corpus`) is
not redistributed in this repository: without it these tests skip, saying so.

What is asserted, for each of the 713 IKEv2 hosts: no traceback (only ConfigError),
no load slower than 5 s, every refusal names its key; and a minimum share accepted.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from tests.config import corpus

pytestmark = pytest.mark.skipif(
    not corpus.CORPUS.is_dir(),
    reason="strongSwan's swanctl corpus is not beside the checkout "
    "(../shared/reference/swanctl-corpus; not redistributed in this repository)",
)

# Measured: 117 of 713 before issue 19's configuration work; 121 with the configuration
# side alone (encrypted keys, templates, IKE-only connections, keyingtries, unique,
# childless, inactivity, PKCS#12...); 399 (56 %) once updown scripts and revocation checks
# run; 495 (69 %) with remote access (pools, vips, EAP-MSCHAPv2/EAP-TLS); 503 with raw
# pubkeys; 536 with EAP-MD5, EAP-TTLS and eap-dynamic; 582 (82 %) with eap-radius, aaa_id,
# groups, PPKs and EAP-only authentication; 588 with child icmp (reqid, priority too);
# 594 (83 %) with RFC 4806 ocsp; 600 (84 %) with cert_policy and Hash and URL
# (cert_uri_base); 603 with PPKs over EAP and ca_id; 607 (85.1 %) with pass/drop shunts;
# 608 with pools = radius, 611 (85.7 %) with pools = dhcp.
# The rest, by refused key: weak algorithms (esp_proposals 26, proposals 25), kernel marks
# (15), EAP-PEAP/-SIM/-AKA (remote.auth 10), pools (5: strongSwan's sql pools), ipcomp (7),
# DNS-held peer keys (remote.cacerts 7), per_cpu_sas (6), mediation (6). Raise this as
# features land: the target, 85 %, is 607.
MIN_ACCEPTED = 611
MAX_SECONDS = 5.0


@pytest.fixture(scope="module")
def outcomes() -> list[corpus.Outcome]:
    results = []
    for host in corpus.ikev2_hosts():
        with tempfile.TemporaryDirectory() as folder:
            results.append(corpus.load_host(host, Path(folder)))
    return results


def test_the_corpus_has_the_hosts_its_readme_counts() -> None:
    assert len(corpus.hosts()) == 883
    assert len(corpus.ikev2_hosts()) == 713


def test_every_host_loads_or_is_refused_by_key(outcomes: list[corpus.Outcome]) -> None:
    """No traceback (load_host lets anything but ConfigError through), no slow load,
    and every refusal names its file and key."""
    slow = [(o.host, round(o.seconds, 1)) for o in outcomes if o.seconds > MAX_SECONDS]
    assert not slow
    keyless = [str(e) for o in outcomes for e in o.errors if not e.key or not e.file]
    assert not keyless


def test_accepted_share(outcomes: list[corpus.Outcome]) -> None:
    accepted, refusals = corpus.summary(outcomes)
    assert accepted >= MIN_ACCEPTED, refusals.most_common(10)


def test_encrypted_and_superfluous_passphrases(outcomes: list[corpus.Outcome]) -> None:
    """strongSwan's layout: encrypted keys in rsa/ (AES-128/192/256-CBC legacy PEM) with
    their passphrase in `secrets`, and passphrases given for keys that are not encrypted
    (ignored, as strongSwan does): no host is refused over reading a private key. (The
    tkm hosts keep their key in strongSwan's Trusted Key Manager, not in a file: they are
    refused because no private key matches their certificate, which is not a read error.)"""
    key_errors = [
        str(e)
        for o in outcomes
        for e in o.errors
        if ("private key" in e.reason or "passphrase" in e.reason or "encrypted" in e.reason)
        and not e.reason.startswith("no private key matches")
    ]
    assert not key_errors


def test_the_16384_bit_keys_load_quickly(outcomes: list[corpus.Outcome]) -> None:
    """ikev2/rw-eap-tls-fragments/moon: cryptography's RSA key validation took ~30 s per
    16384-bit key; keys we load ourselves skip it."""
    (moon,) = [o for o in outcomes if o.host == "ikev2/rw-eap-tls-fragments/moon"]
    assert moon.seconds < MAX_SECONDS
