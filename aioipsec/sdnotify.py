"""systemd's readiness protocol (sd_notify(3)), written out in a few lines.

With ``Type=notify`` systemd passes ``NOTIFY_SOCKET``: the path of a Unix datagram socket,
or, starting with ``@``, a name in the abstract namespace (the ``@`` stands for the leading
NUL octet). The service sends newline-separated ``KEY=VALUE`` assignments in one datagram:
``READY=1`` once it serves, ``RELOADING=1`` and ``READY=1`` around a reload, ``STOPPING=1``
when it goes down, ``STATUS=...`` for ``systemctl status``, ``MAINPID=``. Without the
variable (not started by systemd) every call does nothing. A failure to send is logged once
and never stops the daemon: systemd then times the start out and says so.
"""

from __future__ import annotations

import os
import socket

import structlog

log = structlog.get_logger("aioipsec.sdnotify")


def notify_address(value: str | None) -> str | bytes | None:
    """The socket address NOTIFY_SOCKET names (bytes for the abstract namespace), or None
    when it names nothing usable (sd_notify accepts absolute paths and ``@`` names)."""
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None


def notify(*assignments: str, environ: dict[str, str] | None = None) -> bool:
    """Send ASSIGNMENTS (``"READY=1"``, ``"STATUS=..."``) as one datagram. True when sent."""
    value = (os.environ if environ is None else environ).get("NOTIFY_SOCKET")
    address = notify_address(value)
    if address is None:
        if value:
            log.warning("NOTIFY_SOCKET is neither a path nor an @name: not notifying systemd",
                        notify_socket=value)  # fmt: skip
        return False
    message = "\n".join(assignments).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message)
    except OSError as exc:
        log.warning("could not notify systemd", notify_socket=value, error=str(exc))
        return False
    return True
