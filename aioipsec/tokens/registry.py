"""Open the signer of a configured token key, once per process (and again when its
configuration changes): the daemon's start, ``config check``, reload and ``doctor`` share
the open sessions, so a PIN is presented once, not at every IKE_AUTH."""

from __future__ import annotations

import hashlib
from typing import Any

from aioipsec.tokens import TokenError
from aioipsec.tokens.spec import TokenKey, TokenSettings

__all__ = ["close_all", "describe", "open_signer"]

_OPEN: dict[tuple[Any, ...], Any] = {}


def describe(key: TokenKey) -> str:
    """Where the key is, for messages: ``token-a (pkcs11:softhsm/slot 3/id 01)``."""
    if key.is_tpm:
        return f"{key.name} (tpm:0x{key.tpm_handle:08x})"
    slot = "any slot" if key.slot is None else f"slot {key.slot}"
    return f"{key.name} (pkcs11:{key.module}/{slot}/id {key.handle.hex()})"


def _cache_key(key: TokenKey, settings: TokenSettings) -> tuple[Any, ...]:
    pin = hashlib.sha256((key.pin or "").encode()).digest()
    if key.is_tpm:
        return ("tpm", settings.tpm_tcti, key.tpm_handle, pin)
    return ("pkcs11", settings.modules.get(key.module or ""), key.slot, key.handle, pin)


def open_signer(key: TokenKey, settings: TokenSettings) -> Any:
    """The ``ikev2.crypto.auth.Signer`` of ``key`` (a Pkcs11Signer or TpmSigner).

    Raises :class:`TokenError` (missing module, no slot, wrong PIN, no such key)."""
    cache_key = _cache_key(key, settings)
    signer = _OPEN.get(cache_key)
    if signer is not None:
        return signer
    if key.is_tpm:
        from aioipsec.tokens.tpm import TpmKeySpec, TpmSigner

        signer = TpmSigner(TpmKeySpec(settings.tpm_tcti, key.tpm_handle, key.pin))
    else:
        from aioipsec.tokens.pkcs11 import Pkcs11KeySpec, Pkcs11Signer

        if not key.module:
            raise TokenError(
                f"token key {key.name}: no module, and handle {key.handle.hex()} is not a TPM "
                "persistent handle (0x81000000-0x81ffffff)",
                "add module = NAME ([pkcs11.modules.NAME] path = ... in the TOML file), or "
                "give the TPM handle as 0x81xxxxxx",
            )
        path = settings.modules.get(key.module)
        if path is None:
            known = ", ".join(sorted(settings.modules)) or "none"
            raise TokenError(
                f"token key {key.name}: PKCS#11 module {key.module!r} is not configured "
                f"(configured: {known})",
                f'add [pkcs11.modules.{key.module}] path = "/usr/lib/.../module.so" to the '
                "TOML file",
            )
        signer = Pkcs11Signer(Pkcs11KeySpec(key.module, path, key.handle, key.slot, key.pin))
    _OPEN[cache_key] = signer
    return signer


def close_all() -> None:
    """Close every open signer (tests; the daemon at exit)."""
    for signer in _OPEN.values():
        close = getattr(signer, "close", None)
        if close is not None:
            close()
    _OPEN.clear()
