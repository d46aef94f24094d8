"""Shared pieces of the VICI tests: swanctl run against a daemon's VICI socket, and a pair
of our daemons (tests/e2e's) whose VICI sockets sit beside their control sockets."""

from __future__ import annotations

import os
import re
import shutil
import socket as socket_module
import struct
import subprocess
from pathlib import Path

import pytest

from aioipsec.vici.codec import Packet, decode_packet

SWANCTL = shutil.which("swanctl") or "swanctl"


def receive_packet(sock: socket_module.socket) -> Packet:
    """The next VICI packet on ``sock``: a 4-octet length, then that many octets."""
    (length,) = struct.unpack("!I", _read_exact(sock, 4))
    return decode_packet(_read_exact(sock, length))


def _read_exact(sock: socket_module.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def swanctl_or_skip() -> None:
    if shutil.which(SWANCTL) is None:
        pytest.skip("swanctl is not installed (make debian-deps: strongswan-swanctl)")


def swanctl(
    socket: Path,
    *args: str,
    check: bool = True,
    timeout: float = 60,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``swanctl --uri unix://SOCKET ARGS`` (the command first, as swanctl wants it)."""
    command, *rest = args
    result = subprocess.run(
        [SWANCTL, command, "--uri", f"unix://{socket}", *rest],
        capture_output=True, text=True, timeout=timeout, check=False,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    if check and result.returncode != 0:
        raise AssertionError(
            f"swanctl {' '.join(args)} exited {result.returncode}:\n"
            f"{result.stdout}\n{result.stderr}"
        )
    return result


_MASKS = [
    (re.compile(r"\b[0-9a-f]{16}_([ir])\*?"), r"SPI_\1"),  # IKE SPIs (and the initiator star)
    (re.compile(r"\b(in|out) +[0-9a-f]{8}\b"), r"\1 SPI"),  # ESP SPIs
    (re.compile(r"\b\d+(s ago| seconds| minutes)"), r"N\1"),
    (re.compile(r"(rekeying|expires|reauth) in \d+s"), r"\1 in Ns"),
    (re.compile(r"expires in \d+ \w+\)"), "expires in N)"),  # certificates (list-certs)
    (re.compile(r"\b(\d{1,3}\.){3}\d{1,3}\b"), "ADDR"),
    (re.compile(r"#\d+"), "#N"),
    (re.compile(r"\{\d+\}"), "{N}"),
    (re.compile(r"\[\d+\]"), "[N]"),
    (re.compile(r"reqid \d+"), "reqid N"),
    (re.compile(r" +\d+ (bytes|packets)"), r" N \1"),
]


def mask(text: str) -> str:
    """SPIs, times, addresses, ids and counters out: what may differ between daemons."""
    for pattern, replacement in _MASKS:
        text = pattern.sub(replacement, text)
    return text
