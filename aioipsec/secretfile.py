"""Reading a file that holds a secret (the RADIUS shared secret, the Redis password):
refused while group or others may access it, the rule every secret file of the daemon
follows (PSK files and token PINs in the configuration apply it too)."""

from __future__ import annotations

import stat
from pathlib import Path


class SecretFileError(Exception):
    """The file cannot be read, or group/others may access it (``str()`` says what to do)."""


def read_secret_file(path: Path, holds: str) -> bytes:
    """The content of ``path``, a file holding ``holds`` ("the RADIUS secret", ...);
    SecretFileError when it cannot be read or its mode lets group or others in."""
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except OSError as error:
        raise SecretFileError(f"cannot read {path}, {holds} file: {error.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SecretFileError(
            f"{path} holds {holds} and is readable or writable by group/others "
            f"(mode {stat.S_IMODE(mode):04o}): chmod 600 {path}"
        )
    return data
