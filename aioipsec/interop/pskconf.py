"""swanctl.conf text for the PSK road-warrior labs: the RFC 5685 rows (interop/redirect.py)
and the cluster (cluster/lab.py). Rendered by :func:`aioipsec.interop.charon.swanctl_section`
like the matrix's configurations (interop/peers.py), so every lab writes one syntax.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from aioipsec.interop.charon import swanctl_section

PROPOSALS = "aes256gcm16-prfsha256-x25519"
ESP_PROPOSALS = "aes256gcm16"


def psk_connection(*, local: str, remote: str, local_id: str, remote_id: str,
                   local_ts: str | None = None, remote_ts: str | None = None,
                   dpd_delay: str | None = None, dpd_action: str | None = None,
                   pools: str | None = None, vips: str | None = None,
                   child: str = "net") -> dict[str, Any]:  # fmt: skip
    """One connection with one child. A selector left out is ``dynamic`` (swanctl's
    default: the outer address, or the virtual IP when ``vips``/``pools`` assign one)."""
    connection: dict[str, Any] = {
        "version": 2,
        "local_addrs": local,
        "remote_addrs": remote,
        "proposals": PROPOSALS,
    }
    if dpd_delay is not None:
        connection["dpd_delay"] = dpd_delay
    if vips is not None:
        connection["vips"] = vips
    if pools is not None:
        connection["pools"] = pools
    connection["local"] = {"auth": "psk", "id": local_id}
    connection["remote"] = {"auth": "psk", "id": remote_id}
    children: dict[str, Any] = {}
    if local_ts is not None:
        children["local_ts"] = local_ts
    if remote_ts is not None:
        children["remote_ts"] = remote_ts
    children["esp_proposals"] = ESP_PROPOSALS
    if dpd_action is not None:
        children["dpd_action"] = dpd_action
    connection["children"] = {child: children}
    return connection


def psk_conf(connections: Mapping[str, Mapping[str, Any]], *, psk: str, ids: Sequence[str],
             pools: Mapping[str, Mapping[str, Any]] | None = None) -> str:  # fmt: skip
    """``connections``, one shared secret ``ike-rw`` for ``ids``, and ``pools``."""
    secret: dict[str, Any] = {f"id-{n}": identity for n, identity in enumerate(ids)}
    secret["secret"] = f'"{psk}"'
    text = swanctl_section("connections", connections) + "\n"
    if pools:
        text += swanctl_section("pools", pools) + "\n"
    return text + swanctl_section("secrets", {"ike-rw": secret}) + "\n"
