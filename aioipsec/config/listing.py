"""Listing: connections as VICI ``list-conns`` would show them (the ``conns`` command).

Charon's key names and value forms, so tools written for ``swanctl --list-conns`` read
it; never contains a secret.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aioipsec.config.credentials import load_certificate, strongswan_dn
from aioipsec.config.engine import child_rekey_limits
from aioipsec.config.model import AuthSettings, ConfigError, Configuration

# --------------------------------------------------------------------------- listings


_VICI_ACTIONS = {"none": "none", "clear": "none", "start": "start", "restart": "start",
                 "trap": "trap"}  # fmt: skip


def _cert_names(paths: list[Path]) -> list[str]:
    names = []
    for path in paths:
        try:
            names.append(strongswan_dn(load_certificate(path).subject))
        except ConfigError:
            names.append(str(path))
    return names


def connection_listing(configuration: Configuration) -> list[dict[str, Any]]:
    """Connections as VICI ``list-conns`` events (one ``{name: {...}}`` per connection),
    with charon's key names and value forms (strings, lists of strings); a few keys VICI
    does not have are added (``proposals``, ``esp_proposals``, ``start_action``, ...).

    What the control socket's ``conns`` command returns; never contains secrets.
    """
    listing = []
    for connection in configuration.connections.values():
        rekey_time = connection.rekey_time
        if rekey_time is None:
            rekey_time = 0.0 if connection.reauth_time else 14400.0
        entry: dict[str, Any] = {
            "local_addrs": list(connection.local_addrs),
            "remote_addrs": list(connection.remote_addrs),
            "version": "IKEv2",
            "reauth_time": str(int(connection.reauth_time or 0)),
            "rekey_time": str(int(rekey_time)),
        }
        if connection.dpd_delay:
            entry["dpd_delay"] = str(int(connection.dpd_delay))
        entry.update(
            local_port=str(connection.local_port),
            remote_port=str(connection.remote_port),
            encap="yes" if connection.encap else "no",
            proposals=list(connection.proposals),
            source=connection.source,
        )
        for side in ("local", "remote"):
            auth: AuthSettings = getattr(connection, side)
            round_entry: dict[str, Any] = {}
            certs = _cert_names(auth.certs)
            if auth.id is not None:
                round_entry["id"] = auth.id
            elif side == "local" and certs:
                round_entry["id"] = certs[0]  # charon's default: the certificate subject
            round_entry.update(
                {
                    "class": "pre-shared key" if auth.auth == "psk" else "public key",
                    "certs": certs,
                    "cacerts": _cert_names(auth.cacerts),
                }
            )
            entry[f"{side}-1"] = round_entry
        children = {}
        for child in connection.children.values():
            child_rekey_time, rekey_bytes, rekey_packets = child_rekey_limits(child)
            children[child.name] = {
                "mode": child.mode.upper(),
                "rekey_time": str(child_rekey_time),
                "rekey_bytes": str(rekey_bytes),
                "rekey_packets": str(rekey_packets),
                "dpd_action": _VICI_ACTIONS[child.dpd_action],
                "close_action": _VICI_ACTIONS[child.close_action],
                "start_action": _VICI_ACTIONS[child.start_action],
                "esp_proposals": list(child.esp_proposals),
                "ah_proposals": list(child.ah_proposals),
                "local-ts": list(child.local_ts),
                "remote-ts": list(child.remote_ts),
            }
        entry["children"] = children
        listing.append({connection.name: entry})
    return listing
