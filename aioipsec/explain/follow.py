"""``--follow``: a live daemon's IKE messages and events (control command ``subscribe``)
as the same ladder; no keys travel on the stream."""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from aioipsec.config.model import DEFAULT_CONTROL_SOCKET
from aioipsec.control import ControlClient, ControlError
from aioipsec.explain.runner import (
    WIDTH,
    ExplainError,
)


def follow_socket_path(path: str | None) -> str:
    return path or os.environ.get("AIOIPSEC_SOCKET") or DEFAULT_CONTROL_SOCKET


def _clock(stamp: Any) -> str:
    if not isinstance(stamp, int | float):
        return "--:--:--.---"
    return time.strftime("%H:%M:%S", time.localtime(stamp)) + f".{int(stamp * 1000) % 1000:03d}"


def _address_text(address: Any) -> str:
    if isinstance(address, list | tuple) and len(address) == 2:
        host, port = address
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(address)


def render_follow_record(record: dict[str, Any]) -> list[str]:
    """Ladder lines for one ``subscribe`` record: the daemon on the left, the peer right."""
    kind = record.get("type")
    if kind == "subscribed":
        lines = [f"aioipsec explain --follow: live IKE of the daemon (pid {record.get('pid')})"]
        tables = record.get("decryption_tables")
        if tables:
            lines.append(
                "session keys: the daemon runs with --save-keys and writes them to "
                + (", ".join(tables) if isinstance(tables, list) else str(tables))
                + " (for Wireshark / aioipsec decode; never sent here)"
            )
        lines += ["", "  This daemon".ljust(WIDTH - 10) + "Peer".rjust(10)]
        lines.append("  |".ljust(WIDTH - 1) + "|")
        return lines
    if kind == "event":
        fields = record.get("fields") or {}
        shown = ", ".join(
            f"{key}={value}"
            for key, value in fields.items()
            if key in ("remote_addr", "remote_id", "child", "spi_in", "spi_out", "reason",
                       "action", "udp_encap", "error", "notify")
        )  # fmt: skip
        text = f"  |  {_clock(record.get('time'))} * {record.get('event')} "
        text += f"{record.get('connection')} #{record.get('ike_sa_id')}"
        return [text + (f" ({shown})" if shown else "")]
    if kind != "ike":
        return [f"  |  {record}"]
    outgoing = record.get("direction") == "out"
    peer = _address_text(record.get("remote"))
    us = _address_text(record.get("local"))
    if "error" in record:
        title = f"unparsable IKE datagram of {record.get('length')} octets: {record['error']}"
        names: list[str] = []
    else:
        role = "response" if record.get("response") else "request"
        title = f"{record.get('exchange')} {role} (Message ID {record.get('message_id')})"
        names = ["HDR", *record.get("payloads", [])]
    rows = [f"  |  {_clock(record.get('time'))} {title}".ljust(WIDTH - 1) + "|"]
    span = WIDTH - 10
    text = ", ".join(names)
    while text:
        cut = text[:span]
        if len(text) > span and ", " in cut:
            cut = cut[: cut.rindex(", ") + 1]
        rows.append(f"  |  {cut.strip()}".ljust(WIDTH - 1) + "|")
        text = text[len(cut) :].strip()
    line = "-" * (WIDTH - 5)
    rows.append(f"  |{line[:-1]}>|" if outgoing else f"  |<{line[:-1]}|")
    route = f"{us} -> {peer}" if outgoing else f"{peer} -> {us}"
    rows.append(f"      UDP {route}, {record.get('length')} octets")
    return rows


def follow(socket_path: str, *, count: int | None = None) -> int:
    """Print the daemon's ``subscribe`` stream as a ladder until it ends, Ctrl-C, or
    ``count`` IKE messages."""
    seen = 0
    try:
        with ControlClient(socket_path, timeout=10.0) as client:
            for record in client.stream("subscribe"):
                if not isinstance(record, dict):
                    continue
                sys.stdout.write("\n".join(render_follow_record(record)) + "\n")
                sys.stdout.flush()
                if record.get("type") == "ike":
                    seen += 1
                    if count is not None and seen >= count:
                        return 0
    except ControlError as error:
        raise ExplainError(str(error)) from None
    except KeyboardInterrupt:
        return 0
    return 0
