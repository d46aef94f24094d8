"""Token keys in the configuration, the way strongSwan writes them.

* swanctl.conf (or the TOML file): ``secrets { token-NAME { handle = <hex CKA_ID, or a
  TPM persistent handle such as 0x81010003>  slot = N  module = NAME  pin = ... } }``;
* TOML ``[pkcs11.modules.NAME] path = "..."`` (strongSwan's
  ``charon.plugins.pkcs11.modules.NAME.path``);
* TOML ``[tpm] tcti = "device:/dev/tpmrm0"`` or ``"swtpm:host=...,port=N"``.

A connection with ``auth = pubkey`` whose certificate matches no key file gets the token
key whose public key matches the certificate (strongSwan finds keys the same way). The
tokens are opened here, at load: a wrong PIN or a missing module fails the start with
its reason. A file holding a PIN follows the rule of PSK files: group/others may not
read it (refused, unless ``[daemon] allow_readable_secret_files``).
"""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives import serialization

from aioipsec.config.model import ConfigError, Configuration, ConnectionSettings
from aioipsec.tokens import TokenError, describe_key
from aioipsec.tokens.registry import describe, open_signer
from aioipsec.tokens.spec import TokenKey, TokenSettings

__all__ = [
    "TOKEN_SECTIONS",
    "build_token_key",
    "build_token_sections",
    "find_token_signer",
    "token_settings",
]

TOKEN_SECTIONS = ("pkcs11", "tpm")
_TOKEN_KEYS = "handle, slot, module, pin"


def token_settings(configuration: Configuration) -> TokenSettings:
    """The token part of ``configuration``."""
    return configuration.tokens


def _text(value: Any) -> str:
    if isinstance(value, list | dict):
        raise ValueError("expected one value")
    return str(value).strip()


def _parse_handle(text: str) -> bytes:
    """``0x81010003`` (TPM), ``01a2...`` or ``0x01a2`` or ``01:a2`` (CKA_ID octets)."""
    digits = text.lower().removeprefix("0x").replace(":", "")
    if not digits or len(digits) % 2:
        digits = "0" + digits if digits else digits
    return bytes.fromhex(digits)


def build_token_key(source: Any, name: str, table: dict[str, Any]) -> TokenKey:
    """``secrets.token<suffix>`` into a :class:`TokenKey` (``source``: the RawSource)."""
    key = TokenKey(name=name, handle=b"", source=source.path)
    for item, value in table.items():
        path = ("secrets", name, item)
        try:
            text = _text(value)
            if item == "handle":
                key.handle = _parse_handle(text)
            elif item == "slot":
                key.slot = int(text, 0)
            elif item == "module":
                key.module = text
            elif item == "pin":
                key.pin = text
                source.note_secret(path)  # the rule of PSK files: chmod 600, or refused
            else:
                raise source.error(
                    path, f"unknown key {item!r} in a token secret", f"known keys: {_TOKEN_KEYS}"
                )
        except ValueError:
            raise source.error(
                path,
                f"token secret {name}: {item} = ... is not valid",
                "handle: hex CKA_ID or 0x81xxxxxx; slot: a number",
            ) from None
    if not key.handle:
        raise source.error(
            ("secrets", name),
            "a token secret needs handle = <hex CKA_ID or TPM persistent handle>",
            "aioipsec token list --module NAME shows the keys and their IDs",
        )
    return key


def build_token_sections(source: Any, configuration: Configuration) -> None:
    """TOML ``[pkcs11.modules.NAME] path`` and ``[tpm] tcti``."""
    settings = token_settings(configuration)
    pkcs11 = source.data.get("pkcs11")
    if pkcs11 is not None:
        if not isinstance(pkcs11, dict) or set(pkcs11) - {"modules"}:
            raise source.error(("pkcs11",), "[pkcs11] holds only modules.NAME tables")
        for name, module in pkcs11.get("modules", {}).items():
            path = ("pkcs11", "modules", name)
            if not isinstance(module, dict) or set(module) != {"path"}:
                raise source.error(path, "a PKCS#11 module has exactly one key: path",
                                   'path = "/usr/lib/softhsm/libsofthsm2.so"')  # fmt: skip
            settings.modules[name] = str(module["path"])
    tpm = source.data.get("tpm")
    if tpm is not None:
        if not isinstance(tpm, dict) or set(tpm) - {"tcti"}:
            raise source.error(("tpm",), "[tpm] holds one key: tcti",
                               'tcti = "device:/dev/tpmrm0"')  # fmt: skip
        settings.tpm_tcti = str(tpm["tcti"])


def _spki(public: Any) -> bytes:
    return bytes(
        public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def find_token_signer(
    configuration: Configuration, connection: ConnectionSettings, leaf: Any
) -> Any | None:
    """The open signer of the token key matching ``leaf`` (our certificate), None when no
    token key is configured. A key whose type differs from the certificate's is refused,
    naming both."""
    settings = token_settings(configuration)
    if not settings.keys:
        return None
    wanted = _spki(leaf.public_key())
    others: list[str] = []
    for key in settings.keys:
        try:
            signer = open_signer(key, settings)
        except TokenError as error:
            raise ConfigError(
                f"token key {key.name}: {error.reason}",
                file=key.source,
                key=f"secrets.{key.name}",
                hint=error.hint or None,
            ) from None
        public = signer.public_key()
        if _spki(public) == wanted:
            return signer
        others.append(f"{describe(key)} holds a {describe_key(public)} key")
    cert_path = connection.local.certs[0] if connection.local.certs else "our certificate"
    raise ConfigError(
        f"certificate {cert_path} has a {describe_key(leaf.public_key())} key that no token key "
        f"matches: {'; '.join(others)}",
        file=connection.source,
        key=f"connections.{connection.name}.local.certs",
        hint="issue the certificate for the token key's public key (pki --issue --type pub "
        "--in <public key>), or point handle at the key the certificate was issued for",
    )
