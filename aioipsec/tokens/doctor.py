"""``aioipsec doctor``'s token checks: for every configured token key, the module loads,
the slot holds the token, the PIN is accepted, and a test signature verifies with the
key's public key (every RFC 7427 scheme the key can be asked for, PSS included)."""

from __future__ import annotations

import os
import time
from typing import Any

from aioipsec.tokens import TokenError, describe_key
from aioipsec.tokens.registry import describe, open_signer
from aioipsec.tokens.spec import TokenKey, TokenSettings
from ikev2.crypto.auth import (
    AuthenticationError,
    choose_signature_scheme,
    sign_auth,
    verify_signature_auth,
)
from ikev2.enums import HashAlgorithm

__all__ = ["token_checks"]

_PEER_HASHES = [HashAlgorithm.SHA2_256, HashAlgorithm.SHA2_384, HashAlgorithm.SHA2_512]


def _check_key(key: TokenKey, settings: TokenSettings) -> tuple[str, str, str]:
    """(status, detail, fix) for one key; status is OK, WARN or FAIL."""
    if not key.is_tpm:
        path = settings.modules.get(key.module or "")
        if path is not None and not os.path.exists(path):
            return (
                "FAIL",
                f"module {key.module}: {path} does not exist",
                ("install the module's package or fix [pkcs11.modules.NAME] path"),
            )
    try:
        signer = open_signer(key, settings)
    except TokenError as error:
        return "FAIL", error.reason, error.hint
    public = signer.public_key()
    octets = os.urandom(64)
    timings = []
    for pss in (False, True) if describe_key(public).startswith("RSA") else (False,):
        method, scheme = choose_signature_scheme(signer, _PEER_HASHES, rsa_pss=pss)
        try:
            started = time.perf_counter()
            data = sign_auth(signer, octets, method, scheme)
            timings.append(f"{scheme.name} {1000 * (time.perf_counter() - started):.1f} ms")
            verify_signature_auth(public, method, data, octets)
        except AuthenticationError as error:
            return (
                "FAIL",
                f"test signature ({scheme.name}): {error.reason}",
                ("check the token; `aioipsec token list` shows its keys"),
            )
    return "OK", f"{describe_key(public)} key; test signature verifies ({', '.join(timings)})", ""


def token_checks(configuration: Any | None) -> list[tuple[str, str, str, str]]:
    """(name, status, detail, fix) per configured token key (none without tokens)."""
    if configuration is None:
        return []
    settings: TokenSettings = configuration.tokens
    results = []
    for key in settings.keys:
        status, detail, fix = _check_key(key, settings)
        results.append((f"token {key.name}", status, f"{describe(key)}: {detail}", fix))
    return results
