"""swanctl.conf as strongSwan lays it out (issue 19's configuration side, issue 13 F8/F9),
without the corpus: keys and certificates made here with cryptography (and one key
encrypted by OpenSSL, from tests/data/config), in swanctl's folders."""

from __future__ import annotations

import datetime
import os
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from aioipsec.config import ConfigError, Configuration, load_configuration, to_engine_configs

DATA = Path(__file__).resolve().parents[1] / "data" / "config"

PSK_CONF = """\
connections {
   gw {
      remote_addrs = 192.0.2.2
      local {
         auth = psk
         id = moon.example
      }
      remote {
         auth = psk
         id = sun.example
      }
      children {
         net {
            local_ts = 10.1.0.0/16
            remote_ts = 10.2.0.0/16
         }
      }
   }
}
"""
PSK_SECRET = """\
secrets {
   ike-1 {
      id = sun.example
      secret = 0x0102030405060708
   }
}
"""
PUBKEY_CONF = """\
connections {
   gw {
      remote_addrs = 192.0.2.2
      local {
         auth = pubkey
         id = ID
      }
      remote {
         auth = pubkey
         id = sun.example
      }
      children {
         net {
            local_ts = 10.1.0.0/16
            remote_ts = 10.2.0.0/16
         }
      }
   }
}
"""


def write(path: Path, text: str | bytes, mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    path.chmod(mode)
    return path


def load(folder: Path) -> Configuration:
    return load_configuration(swanctl_path=folder / "swanctl.conf")


def error_of(folder: Path) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(folder)
    return info.value


def _pem_key(key: ec.EllipticCurvePrivateKey, passphrase: bytes | None = None) -> bytes:
    encryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, encryption
    )


def _certificate(subject: str, key: object, issuer_key: object, ca: bool, san: str | None):
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")]))
        .public_key(key.public_key())  # type: ignore[attr-defined]  # any key type
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if san:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(san)]), critical=False
        )
    certificate = builder.sign(issuer_key, hashes.SHA256())  # type: ignore[arg-type]  # EC key
    return certificate.public_bytes(serialization.Encoding.PEM)


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    """A swanctl folder: x509ca/caCert.pem, x509/moonCert.pem (SAN moon.example) and its
    key in private/, plus an unrelated certificate with its key."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    write(tmp_path / "x509ca" / "caCert.pem", _certificate("test CA", ca_key, ca_key, True, None))
    for name in ("moon", "other"):
        key = ec.generate_private_key(ec.SECP256R1())
        write(tmp_path / "private" / f"{name}Key.pem", _pem_key(key))
        cert = _certificate(f"{name} gateway", key, ca_key, False, f"{name}.example")
        write(tmp_path / "x509" / f"{name}Cert.pem", cert)
    return tmp_path


# --------------------------------------------------------------------------- credentials


def test_local_pubkey_without_certs_is_found_by_identity(pki: Path) -> None:
    """strongSwan finds our certificate by the round's id among the loaded ones."""
    write(pki / "swanctl.conf", PUBKEY_CONF.replace("ID", "moon.example"))
    (ike,) = to_engine_configs(load(pki))
    assert ike.local.certs[0].subject.rfc4514_string() == "CN=moon gateway"
    assert ike.local.private_key is not None
    write(pki / "swanctl.conf", PUBKEY_CONF.replace("ID", "nobody.example"))
    error = error_of(pki)
    assert error.key == "connections.gw.local" and "'nobody.example'" in error.reason


def test_encrypted_keys_with_their_passphrase_in_secrets(pki: Path) -> None:
    """A key in rsa/ (or ecdsa/, pkcs8/, private/) read with the passphrase its secrets
    entry gives, whatever the order; missing / wrong / superfluous passphrases."""
    key = ec.generate_private_key(ec.SECP256R1())
    write(pki / "ecdsa" / "locked.pem", _pem_key(key, b"right passphrase"))
    base = PSK_CONF + PSK_SECRET[: PSK_SECRET.rindex("}")]
    entry = '   ecdsa-1 {\n      file = locked.pem\n      secret = "PASS"\n   }\n}\n'
    write(pki / "swanctl.conf", base + entry.replace("PASS", "right passphrase"))
    configuration = load(pki)
    assert any(k.file.name == "locked.pem" for k in configuration.private_keys)
    # wrong: the secret's key path and line, "wrong"
    text = base + entry.replace("PASS", "wrong passphrase")
    write(pki / "swanctl.conf", text)
    error = error_of(pki)
    assert error.key == "secrets.ecdsa-1.secret" and "passphrase is wrong" in error.reason
    assert error.line == text.splitlines().index('      secret = "wrong passphrase"') + 1
    assert "wrong passphrase" not in str(error)  # never echo a secret
    # missing: the file, and how to give it
    write(pki / "swanctl.conf", PSK_CONF + PSK_SECRET)
    error = error_of(pki)
    assert "locked.pem is encrypted and no passphrase is given" in error.reason
    assert error.key == "secrets (ecdsa/locked.pem)" and "secret = <passphrase>" in str(error)
    # not needed: a passphrase for a key that is not encrypted is ignored (strongSwan)
    (pki / "ecdsa" / "locked.pem").unlink()
    write(pki / "swanctl.conf", base + entry.replace("locked", "../private/moonKey"))
    load(pki)


def test_legacy_pem_aes192_key_as_openssl_writes_it(pki: Path) -> None:
    """cryptography cannot read AES-192-CBC legacy PEM; strongSwan can, so we do."""
    write(pki / "rsa" / "key.pem", (DATA / "ecKey-aes192.pem").read_bytes())
    base = PSK_CONF + PSK_SECRET[: PSK_SECRET.rindex("}")]
    entry = '   rsa-1 {\n      file = key.pem\n      secret = "PASS"\n   }\n}\n'
    write(pki / "swanctl.conf", base + entry.replace("PASS", "aes192-test-passphrase"))
    load(pki)
    write(pki / "swanctl.conf", base + entry.replace("PASS", "not it"))
    assert "passphrase is wrong" in error_of(pki).reason


# --------------------------------------------------------------------------- sections


def test_top_level_template_section(pki: Path) -> None:
    """A top-level section others are based on lends its settings and is not loaded;
    one nobody is based on is an error, by its name."""
    template = "base-conn {\n   remote_addrs = 192.0.2.9\n   rekey_time = 2h\n}\n"
    text = template + PSK_CONF.replace("   gw {", "   gw : base-conn {").replace(
        "      remote_addrs = 192.0.2.2\n", ""
    )
    write(pki / "swanctl.conf", text + PSK_SECRET)
    gw = load(pki).connections["gw"]
    assert gw.remote_addrs == ["192.0.2.9"] and gw.rekey_time == 7200
    write(pki / "swanctl.conf", template + PSK_CONF + PSK_SECRET)
    error = error_of(pki)
    assert error.key == "base-conn" and "template" in str(error)


def test_connection_without_children_is_an_ike_sa_only(pki: Path) -> None:
    text = PSK_CONF.split("      children {")[0] + "   }\n}\n"
    write(pki / "swanctl.conf", text + PSK_SECRET)
    (ike,) = to_engine_configs(load(pki))
    assert ike.children == []


def test_authorities_cacert_is_a_trust_anchor_with_its_revocation_sources(pki: Path) -> None:
    (pki / "x509ca" / "caCert.pem").rename(pki / "theCA.pem")
    authority = "authorities {\n   ca {\n      cacert = ../theCA.pem\n   }\n}\n"
    write(pki / "swanctl.conf", PUBKEY_CONF.replace("ID", "moon.example") + authority)
    (ike,) = to_engine_configs(load(pki))
    assert [c.subject.rfc4514_string() for c in ike.remote.cacerts] == ["CN=test CA"]
    crl = authority.replace("../theCA.pem", "../theCA.pem\n      crl_uris = http://crl/ca.crl")
    write(pki / "swanctl.conf", PUBKEY_CONF.replace("ID", "moon.example") + crl)
    (ike,) = to_engine_configs(load(pki))
    (authority,) = ike.remote.revocation.store.authorities
    assert authority.crl_uris == ["http://crl/ca.crl"] and authority.cacert.subject == (
        ike.remote.cacerts[0].subject
    )


# --------------------------------------------------------------------------- F8, F9


def test_sections_nested_20000_deep_are_a_configuration_error(tmp_path: Path) -> None:
    write(tmp_path / "swanctl.conf", "a {\n" * 20000 + "}\n" * 20000)
    error = error_of(tmp_path)
    assert "nested deeper than 64" in error.reason and error.line == 65


def test_an_included_non_configuration_file_is_never_echoed(tmp_path: Path) -> None:
    """F9: ``include`` of a symlink to /etc/shadow (here: a file shaped like it)."""
    shadow = write(tmp_path / "shadow", "root:$6$secrethash$XyZ:19000:0:99999:7:::\n")
    os.symlink(shadow, tmp_path / "evil.conf")
    write(tmp_path / "swanctl.conf", "connections {\n}\ninclude evil.conf\n")
    error = error_of(tmp_path)
    assert error.file == str(tmp_path / "evil.conf") and error.line == 1
    assert "not in swanctl.conf syntax" in error.reason
    shown = f"{error.reason} {error.hint} {error.key}"
    for word in ("root", "secrethash", "XyZ", "19000"):
        assert word not in shown


def test_secret_file_modes_same_rule_as_toml(tmp_path: Path) -> None:
    """A swanctl.conf (or a file it includes) holding a PSK that group/others may read is
    refused, as a TOML file is; the TOML [daemon] setting allows it with a warning."""
    write(tmp_path / "swanctl.conf", PSK_CONF + PSK_SECRET, mode=0o644)
    error = error_of(tmp_path)
    assert error.file == str(tmp_path / "swanctl.conf") and error.key == "secrets.ike-1.secret"
    assert "readable or writable by group/others (mode 0644)" in error.reason
    # the include holding the secret is checked on its own
    write(tmp_path / "swanctl.conf", PSK_CONF + "include secrets.conf\n")
    write(tmp_path / "secrets.conf", PSK_SECRET, mode=0o640)
    error = error_of(tmp_path)
    assert error.file == str(tmp_path / "secrets.conf")
    allow = write(tmp_path / "a.toml", "[daemon]\nallow_readable_secret_files = true\n")
    configuration = load_configuration(allow, tmp_path / "swanctl.conf")
    assert any("secrets.conf" in w and "chmod 600" in w for w in configuration.warnings)


def test_a_file_in_x509crl_that_is_no_crl_is_named(pki: Path) -> None:
    """strongSwan checks peers' certificates against x509crl/ (aioipsec/revocation.py
    does too): a file there that is no CRL is an error naming it."""
    write(pki / "x509crl" / "ca.crl", b"-----BEGIN X509 CRL-----\n")
    write(pki / "swanctl.conf", PUBKEY_CONF.replace("ID", "moon.example"))
    error = error_of(pki)
    assert error.key == "x509crl/ca.crl" and "not an X.509 CRL" in error.reason


def test_pkcs12_container_with_its_passphrase_in_secrets(tmp_path: Path) -> None:
    """A PKCS#12 container in pkcs12/ (key, certificate and CA, as strongSwan's
    net2net-pkcs12): the key signs, our certificate is found by identity, the CA in it is
    a trust anchor."""
    from cryptography.hazmat.primitives.serialization import pkcs12

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = x509.load_pem_x509_certificate(_certificate("test CA", ca_key, ca_key, True, None))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = x509.load_pem_x509_certificate(
        _certificate("moon gateway", key, ca_key, False, "moon.example")
    )
    container = pkcs12.serialize_key_and_certificates(
        b"moon", key, cert, [ca], serialization.BestAvailableEncryption(b"p12 passphrase")
    )
    write(tmp_path / "pkcs12" / "moon.p12", container)
    entry = 'secrets {\n   pkcs12-1 {\n      file = moon.p12\n      secret = "PASS"\n   }\n}\n'
    conf = PUBKEY_CONF.replace("ID", "moon.example")
    write(tmp_path / "swanctl.conf", conf + entry.replace("PASS", "p12 passphrase"))
    (ike,) = to_engine_configs(load(tmp_path))
    assert ike.local.certs[0].subject.rfc4514_string() == "CN=moon gateway"
    assert ike.local.private_key is not None
    assert [c.subject.rfc4514_string() for c in ike.remote.cacerts] == ["CN=test CA"]
    write(tmp_path / "swanctl.conf", conf + entry.replace("PASS", "not it"))
    error = error_of(tmp_path)
    assert error.key == "secrets.pkcs12-1.secret" and "passphrase is wrong" in error.reason
    write(tmp_path / "swanctl.conf", conf)
    error = error_of(tmp_path)
    assert "moon.p12 is encrypted and no passphrase" in error.reason
