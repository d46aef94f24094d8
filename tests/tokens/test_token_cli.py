"""``aioipsec token list`` against a SoftHSM2 token and a swtpm, and doctor's token
checks (module, slot, PIN, a test signature that verifies)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from aioipsec.config import load_configuration
from aioipsec.doctor import check_tokens
from tests.tokens.fixtures import PIN, Pki, SoftHsm, Swtpm, pki, softhsm, swtpm
from tests.tokens.test_config_tokens import _softhsm_secret, _softhsm_toml, _write

__all__ = ["pki", "softhsm", "swtpm"]  # the fixtures, imported for pytest


def _aioipsec(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aioipsec", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env=os.environ.copy(),  # SOFTHSM2_CONF of the fixture
        check=False,
    )


def test_token_list_shows_keys_and_certificates_without_secrets(
    softhsm: SoftHsm, pki: Pki, tmp_path: Path
) -> None:
    softhsm.generate("ec256", b"\x0a", label="ike-ec")
    cert = pki.issue(softhsm.generate("rsa3072", b"\x0b", label="ike-rsa"), "a.example")
    softhsm.store_certificate(cert, b"\x0b")
    toml = tmp_path / "aioipsec.toml"
    toml.write_text(_softhsm_toml(softhsm))
    public = _aioipsec("token", "list", "--module", "softhsm", "-c", str(toml))
    assert public.returncode == 0, public.stderr
    assert f"slot {softhsm.slot_id}" in public.stdout and "public only" not in public.stdout
    assert "ECDSA P-256" in public.stdout and "RSA-3072" in public.stdout
    assert "id 0a" in public.stdout and "CN=a.example" in public.stdout
    private = _aioipsec("token", "list", "--module", "softhsm", "-c", str(toml), "--pin-stdin",
                        stdin=PIN + "\n")  # fmt: skip
    assert private.returncode == 0, private.stderr
    assert "private key  ECDSA P-256" in private.stdout and PIN not in private.stdout
    wrong = _aioipsec("token", "list", "--module", "softhsm", "-c", str(toml), "--pin-stdin",
                      stdin="1\n")  # fmt: skip
    assert wrong.returncode == 1 and "refused the PIN" in wrong.stderr
    unknown = _aioipsec("token", "list", "--module", "nope", "-c", str(toml))
    assert unknown.returncode == 1 and "'nope' is not configured" in unknown.stderr


def test_token_list_tpm(swtpm: Swtpm) -> None:
    swtpm.create_key(0x81010007)
    result = _aioipsec("token", "list", "--tpm", "--tcti", swtpm.tcti)
    assert result.returncode == 0, result.stderr
    assert "0x81010007  ECDSA P-256" in result.stdout


def test_doctor_checks_each_token_key(softhsm: SoftHsm, pki: Pki, tmp_path: Path) -> None:
    cert = pki.issue(softhsm.generate("rsa2048", b"\x01"), "a.example")
    secret = _softhsm_secret(softhsm, "01")
    toml, conf = _write(tmp_path, cert, pki.ca_cert, secret, _softhsm_toml(softhsm))
    configuration = load_configuration(toml, conf)
    (check,) = check_tokens(configuration)
    assert check.status == "OK", check
    assert "RSA-2048" in check.detail and "test signature verifies" in check.detail
    assert "RSA-PSS" in check.detail and "PKCS#1" in check.detail
    softhsm.remove()  # the token goes away: the check fails and says so
    (check,) = check_tokens(configuration)
    assert check.status == "FAIL" and "could not sign" in check.detail, check
