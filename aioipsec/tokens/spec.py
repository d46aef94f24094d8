"""What the configuration says about tokens (plain values, no token I/O).

swanctl.conf ``secrets { token-NAME { handle, slot, module, pin } }`` becomes a
:class:`TokenKey`; TOML ``[pkcs11.modules.NAME] path`` and ``[tpm] tcti`` fill
:class:`TokenSettings`. A key with a ``module`` is in that PKCS#11 module; a key without
one whose handle is a TPM persistent handle (0x81000000-0x81FFFFFF) is in the TPM.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["TPM_PERSISTENT_FIRST", "TPM_PERSISTENT_LAST", "TokenKey", "TokenSettings"]

# TPM 2.0 Part 2 sec. 7.2: persistent object handles (TPM_HT_PERSISTENT, 0x81).
TPM_PERSISTENT_FIRST = 0x81000000
TPM_PERSISTENT_LAST = 0x81FFFFFF


@dataclass
class TokenKey:
    """``secrets.token<suffix>``: a private key that stays in a token."""

    name: str
    handle: bytes  # PKCS#11: the CKA_ID octets; TPM: the persistent handle, 4 octets
    slot: int | None = None
    module: str | None = None
    pin: str | None = field(default=None, repr=False)
    source: str = ""

    @property
    def is_tpm(self) -> bool:
        return (
            self.module is None
            and len(self.handle) == 4
            and (TPM_PERSISTENT_FIRST <= int.from_bytes(self.handle, "big") <= TPM_PERSISTENT_LAST)
        )

    @property
    def tpm_handle(self) -> int:
        return int.from_bytes(self.handle, "big")


@dataclass
class TokenSettings:
    """The PKCS#11 modules by name (path) and the TPM's TCTI."""

    modules: dict[str, str] = field(default_factory=dict)
    tpm_tcti: str | None = None
    keys: list[TokenKey] = field(default_factory=list)
