"""strongSwan's shunt policies: children with ``mode = pass`` or ``mode = drop``.

Our data path sees only what the tunnel routes (table 220, ``aioipsec.runtime.routes``)
lead into the TUN device; strongSwan's shunts are kernel policies, so ours are kernel
state too, one nftables table ``inet aioipsec-shunts`` (replaced in one transaction at
load and reload, removed at stop and by ``aioipsec cleanup``):

* ``pass`` (bypass): matching packets get ``BYPASS_MARK`` before routing (output and
  prerouting hooks). The policy-routing rule then skips the tunnel table and the
  fail-closed table accepts them (``meta mark 0x2200 accept``): they leave in clear even
  where a tunnel's selectors cover them, as strongSwan's bypass policy does (e.g. the
  LAN or SSH beside a 0.0.0.0/0 tunnel).
* ``drop``: matching packets are dropped, outbound (output and forward) and, for the
  reversed selectors, inbound (input and forward), as strongSwan's drop policies
  (out, in, fwd).

A selector is ``ADDRESS/PREFIX`` or a range with an optional ``[protocol/port]``, as in
swanctl.conf; ``dynamic`` has no meaning without an IKE SA and is refused at load.
"""

from __future__ import annotations

import ipaddress
import re
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .sockets import BYPASS_MARK

TABLE = "aioipsec-shunts"
_TS = re.compile(r"^(?P<net>[^\[\]]+?)\s*(?:\[(?P<proto>[^/\]]*)(?:/(?P<port>[^\]]*))?\])?$")
_PROTOCOLS = {"tcp": "tcp", "udp": "udp", "sctp": "sctp", "icmp": "icmp", "ipv6-icmp": "icmpv6"}


@dataclass(frozen=True)
class Shunt:
    """One pass or drop child: its name (``connection/child``) and selectors."""

    name: str
    action: str  # "pass" or "drop"
    local_ts: tuple[str, ...]
    remote_ts: tuple[str, ...]


class ShuntError(RuntimeError):
    """The shunt table could not be installed (nft's message)."""


def _parse(selector: str) -> tuple[int, str, str | None, str | None]:
    """(IP version, nft address expression, protocol or None, port or None)."""
    match = _TS.match(selector.strip())
    if match is None:
        raise ValueError(f"{selector!r} is not a traffic selector")
    net = match.group("net").strip()
    if "-" in net and "/" not in net:
        first, _, last = net.partition("-")
        version = ipaddress.ip_address(first.strip()).version
        address = f"{first.strip()}-{last.strip()}"
    else:
        network = ipaddress.ip_network(net, strict=False)
        version, address = network.version, str(network)
    proto = (match.group("proto") or "").strip().lower() or None
    port = (match.group("port") or "").strip().lower() or None
    if proto in ("%any", "any", "0"):
        proto = None
    if port in ("%any", "any", "0"):
        port = None
    return version, address, proto, port


def _rules(local: str, remote: str, verdict: str) -> list[str]:
    """nft rules matching packets from ``local`` to ``remote`` (selector texts)."""
    l_version, l_addr, l_proto, l_port = _parse(local)
    r_version, r_addr, r_proto, r_port = _parse(remote)
    if l_version != r_version:
        return []
    family = "ip" if l_version == 4 else "ip6"
    proto = l_proto or r_proto
    if l_proto and r_proto and l_proto != r_proto:
        return []
    match = f"{family} saddr {l_addr} {family} daddr {r_addr}"
    if proto is not None:
        keyword = _PROTOCOLS.get(proto, proto)
        if l_port is None and r_port is None:
            match += f" meta l4proto {keyword}"
        if l_port is not None:
            match += f" {keyword} sport {l_port}"
        if r_port is not None:
            match += f" {keyword} dport {r_port}"
    return [f"{match} {verdict}"]


def table_script(shunts: Iterable[Shunt]) -> str:
    """The nft commands that replace our shunt table with these shunts (none: remove)."""
    passing: list[str] = []
    out_drop: list[str] = []
    in_drop: list[str] = []
    for shunt in shunts:
        for local in shunt.local_ts:
            for remote in shunt.remote_ts:
                if shunt.action == "pass":
                    mark = f"meta mark set {BYPASS_MARK:#x}"
                    passing += _rules(local, remote, mark) + _rules(remote, local, mark)
                else:
                    out_drop += _rules(local, remote, "counter drop")
                    in_drop += _rules(remote, local, "counter drop")
    passing, out_drop, in_drop = (list(dict.fromkeys(r)) for r in (passing, out_drop, in_drop))
    script = [f"table inet {TABLE}", f"delete table inet {TABLE}"]
    if not (passing or out_drop or in_drop):
        return "\n".join(script) + "\n"

    def chain(name: str, hook: str, kind: str, priority: str, rules: list[str]) -> str:
        body = "".join(f"    {rule}\n" for rule in rules)
        return (
            f"  chain {name} {{\n    type {kind} hook {hook} priority {priority}; policy accept;\n"
            f"{body}  }}\n"
        )

    script.append(
        f"table inet {TABLE} {{\n"
        + chain("output", "output", "route", "mangle", passing + out_drop)
        + chain("prerouting", "prerouting", "filter", "mangle", passing)
        + chain("forward", "forward", "filter", "filter - 1", out_drop + in_drop)
        + chain("input", "input", "filter", "filter - 1", in_drop)
        + "}"
    )
    return "\n".join(script) + "\n"


def shunts_of(connections: Mapping[str, Any]) -> list[Shunt]:
    """The pass and drop children of the loaded connections (``ConnectionSettings``)."""
    return [
        Shunt(f"{name}/{child.name}", child.mode, tuple(child.local_ts), tuple(child.remote_ts))
        for name, connection in connections.items()
        for child in connection.children.values()
        if child.mode in ("pass", "drop")
    ]


def apply(shunts: Iterable[Shunt]) -> None:
    """Install exactly these shunts (one nft transaction); ShuntError on failure."""
    script = table_script(list(shunts))
    try:
        result = subprocess.run(
            ["nft", "-f", "-"], input=script, capture_output=True, text=True, timeout=10,
            check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as error:
        raise ShuntError(f"nft -f -: {error}") from None
    if result.returncode != 0:
        raise ShuntError(f"nft refused the shunt table: {result.stderr.strip()}")


def remove() -> None:
    """Remove the shunt table (nothing when there is none)."""
    apply(())
