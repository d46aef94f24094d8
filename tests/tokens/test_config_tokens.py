"""Token keys in the configuration as strongSwan writes them: swanctl ``secrets {
token-NAME { handle slot module pin } }``, TOML ``[pkcs11.modules.NAME] path`` and
``[tpm] tcti``; the key found for the connection's certificate, a wrong PIN at load, a
key whose type differs from the certificate's, a readable file holding a PIN."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from aioipsec.config import ConfigError, load_configuration, to_engine_configs
from ikev2.crypto.auth import Signer
from tests.tokens.fixtures import PIN, Pki, SoftHsm, Swtpm, pki, softhsm, swtpm

__all__ = ["pki", "softhsm", "swtpm"]  # the fixtures, imported for pytest


def _write(tmp_path: Path, cert: Path, ca: Path, secret: str, toml: str) -> tuple[Path, Path]:
    conf = tmp_path / "swanctl.conf"
    conf.write_text(
        f"""
connections {{
    site {{
        remote_addrs = 192.0.2.2
        local {{
            auth = pubkey
            certs = {cert}
        }}
        remote {{
            auth = pubkey
            id = b.example
            cacerts = {ca}
        }}
        children {{
            net {{
                local_ts = 10.1.0.0/16
                remote_ts = 10.2.0.0/16
            }}
        }}
    }}
}}
secrets {{
    token-a {{
{secret}
    }}
}}
"""
    )
    os.chmod(conf, 0o600)
    toml_path = tmp_path / "aioipsec.toml"
    toml_path.write_text(toml)
    return toml_path, conf


def _softhsm_secret(hsm: SoftHsm, handle: str, pin: str = PIN) -> str:
    """The body of a swanctl ``token-a`` secret for a key in the SoftHSM token."""
    return f"handle = {handle}\n slot = {hsm.slot_id}\n module = softhsm\n pin = {pin}"


def _softhsm_toml(hsm: SoftHsm) -> str:
    return f'[pkcs11.modules.softhsm]\npath = "{hsm.module}"\n'


def test_swanctl_token_secret_with_softhsm(softhsm: SoftHsm, pki: Pki, tmp_path: Path) -> None:
    cert = pki.issue(softhsm.generate("ec256", b"\x01\x02"), "a.example")
    secret = _softhsm_secret(softhsm, "0102")
    toml, conf = _write(tmp_path, cert, pki.ca_cert, secret, _softhsm_toml(softhsm))
    configuration = load_configuration(toml, conf)
    (engine,) = to_engine_configs(configuration)
    signer = engine.local.private_key
    assert isinstance(signer, Signer) and "pkcs11:softhsm" in signer.description
    assert PIN not in repr(configuration.tokens) and PIN not in repr(engine)
    # A readable file holding a PIN: the PSK rule (refused, saying what to do).
    os.chmod(conf, 0o644)
    with pytest.raises(ConfigError) as caught:
        load_configuration(toml, conf)
    assert f"chmod 600 {conf}" in str(caught.value) and PIN not in str(caught.value)


def test_wrong_pin_fails_the_load_with_the_reason(
    softhsm: SoftHsm, pki: Pki, tmp_path: Path
) -> None:
    cert = pki.issue(softhsm.generate("ec256", b"\x01"), "a.example")
    secret = _softhsm_secret(softhsm, "01", pin="0000")
    toml, conf = _write(tmp_path, cert, pki.ca_cert, secret, _softhsm_toml(softhsm))
    with pytest.raises(ConfigError) as caught:
        load_configuration(toml, conf)
    assert "refused the PIN" in str(caught.value) and "0000" not in str(caught.value)
    assert caught.value.key == "secrets.token-a"


def test_key_type_differing_from_the_certificate_is_refused_naming_both(
    softhsm: SoftHsm, pki: Pki, tmp_path: Path
) -> None:
    softhsm.generate("rsa2048", b"\x07")
    _, cert = pki.issue_key("a.example")  # an ECDSA certificate for another key
    secret = _softhsm_secret(softhsm, "07")
    toml, conf = _write(tmp_path, cert, pki.ca_cert, secret, _softhsm_toml(softhsm))
    with pytest.raises(ConfigError) as caught:
        load_configuration(toml, conf)
    message = str(caught.value)
    assert "ECDSA P-256" in message and "RSA-2048" in message and "token-a" in message


def test_unknown_module_named(softhsm: SoftHsm, pki: Pki, tmp_path: Path) -> None:
    cert = pki.issue(softhsm.generate("ec256", b"\x01"), "a.example")
    toml, conf = _write(tmp_path, cert, pki.ca_cert, "handle = 01\n module = hsm", "")
    with pytest.raises(ConfigError, match="module 'hsm' is not configured"):
        load_configuration(toml, conf)


def test_tpm_key_by_persistent_handle(swtpm: Swtpm, pki: Pki, tmp_path: Path) -> None:
    cert = pki.issue(swtpm.create_key(0x81010004), "a.example")
    toml, conf = _write(
        tmp_path, cert, pki.ca_cert, "handle = 0x81010004", f'[tpm]\ntcti = "{swtpm.tcti}"\n'
    )
    (engine,) = to_engine_configs(load_configuration(toml, conf))
    assert "tpm:swtpm" in engine.local.private_key.description
