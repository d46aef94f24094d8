"""Our certificate for auth = pubkey / eap-tls when ``certs`` is left out, as swanctl.conf
and VICI ``load-conn`` allow: the engine conversion picks it by our id (strongSwan's rule)
or says why there is none. Only the file loader's credential check did that before, so a
connection from load-conn reached the private-key lookup with no certificate and the
daemon answered ``internal error in load-conn: list index out of range``."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from aioipsec.config import (
    ConfigError,
    Configuration,
    PrivateKey,
    RawSource,
    build_configuration,
    to_engine_configs,
)


def _load_conn(auth: str, configuration: Configuration) -> Configuration:
    """What the daemon's load-conn does: a swanctl-kind section, then the running
    credentials beside it."""
    section = {
        "local_addrs": ["192.0.2.1"],
        "remote_addrs": ["192.0.2.2"],
        "local": {"auth": auth, "id": "left.example"},
        "remote": {"auth": "pubkey", "id": "right.example"},
        "children": {"net": {"local_ts": ["10.1.0.0/24"], "remote_ts": ["10.2.0.0/24"]}},
    }
    source = RawSource(
        path="load-conn",
        data={"connections": {"loaded": section}},
        locate=lambda key_path: ("load-conn", None),
        kind="swanctl",
    )
    built = build_configuration(source, Configuration())
    configuration.connections.update(built.connections)
    return configuration


def _certificate(tmp_path: Path, name: str) -> tuple[Path, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    path = tmp_path / f"{name}.crt"
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return path, key


@pytest.mark.parametrize("auth", ["eap-tls", "pubkey"])
def test_no_certificate_is_a_config_error_naming_the_auth(tmp_path: Path, auth: str) -> None:
    ca, _ = _certificate(tmp_path, "ca.example")
    configuration = _load_conn(auth, Configuration(authorities=[ca]))
    with pytest.raises(ConfigError) as raised:
        to_engine_configs(configuration)
    assert f"auth = {auth} needs our certificate" in str(raised.value)
    assert "'left.example'" in str(raised.value)  # the id it looked for
    assert raised.value.hint and "certs" in raised.value.hint


@pytest.mark.parametrize("auth", ["eap-tls", "pubkey"])
def test_certificate_picked_by_our_id(tmp_path: Path, auth: str) -> None:
    other, other_key = _certificate(tmp_path, "other.example")
    ours, our_key = _certificate(tmp_path, "left.example")
    configuration = Configuration(
        certificates=[other, ours],
        authorities=[other],
        private_keys=[
            PrivateKey(name="other", file=tmp_path / "other.key", key=other_key),
            PrivateKey(name="left", file=tmp_path / "left.key", key=our_key),
        ],
    )
    configuration = _load_conn(auth, configuration)
    (engine_config,) = to_engine_configs(configuration)
    local = engine_config.local
    assert [c.subject.rfc4514_string() for c in local.certs] == ["CN=left.example"]
    assert local.private_key is our_key
    assert configuration.connections["loaded"].local.certs == [ours]
