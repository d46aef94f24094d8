"""The environment of an updown script, as strongSwan's updown plugin sets it (pure).

strongSwan calls ``updown = COMMAND`` through ``sh -c`` once per policy of a Child SA (each
pair of a local and a remote traffic selector of one IP version) when the Child SA comes
up and when it goes down (not when it is rekeyed). The script learns everything from
``PLUTO_*`` variables; their names and formats here follow strongSwan's
``src/libcharon/plugins/updown/updown_listener.c`` (read, not copied) and the variable list
at the top of its ``_updown`` script:

* ``PLUTO_VERB``: ``up-`` or ``down-``, then ``host`` when the local selector is exactly our
  own address, ``client`` otherwise, then ``-v6`` for IPv6;
* ``PLUTO_MY_CLIENT`` / ``PLUTO_PEER_CLIENT``: the selector as ``address/prefix`` (a range
  that is not a subnet becomes the smallest subnet holding it, as strongSwan does);
* ``PLUTO_MY_PORT`` / ``PLUTO_PEER_PORT``: ``0`` for any port, ``N`` or ``FROM:TO``; for
  ICMP the ICMP type (mine) and code (peer's), RFC 4301 sec. 4.4.1.3;
* ``PLUTO_UDP_ENC``: the peer's port when ESP travels in UDP (RFC 3948);
* ``PLUTO_HOST_ACCESS=1`` with ``hostaccess = yes``.

Nothing here runs anything: :func:`build_environment` is a function of its arguments (the
daemon's :mod:`aioipsec.runtime.updown` runs the script), so it is fuzzed on its own
(``fuzz/targets.py``).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from ikev2.ts_range import TrafficSelectorRange

PLUTO_VERSION = "1.1"  # the interface version strongSwan announces
_ICMP = (1, 58)  # ICMP, IPv6-ICMP: ports carry type/code (RFC 4301 sec. 4.4.1.3)


@dataclass(frozen=True)
class UpdownCall:
    """One call of the script: one policy (``my_ts`` to ``peer_ts``) of one Child SA."""

    up: bool
    connection: str  # the Child SA's configuration name (strongSwan: the child's name)
    interface: str
    reqid: int
    protocol: str  # "esp" or "ah"
    unique_id: int  # the IKE SA's id
    me: str  # our outer address
    my_id: str
    peer: str
    peer_id: str
    my_ts: TrafficSelectorRange
    peer_ts: TrafficSelectorRange
    udp_encap_port: int | None = None  # the peer's UDP port with ESP-in-UDP
    ipcomp: bool = False
    host_access: bool = False
    my_source_ips: tuple[str, ...] = ()  # virtual IPs we received
    peer_source_ips: tuple[str, ...] = ()  # virtual IPs we handed out
    dns: tuple[str, ...] = ()  # DNS servers received (CP attributes)
    xauth_id: str | None = None  # the peer's EAP/XAuth identity
    mark_in: tuple[int, int] | None = None  # (value, mask)
    mark_out: tuple[int, int] | None = None
    if_id_in: int | None = None
    if_id_out: int | None = None


def policy_pairs(
    local_ts: tuple[TrafficSelectorRange, ...], remote_ts: tuple[TrafficSelectorRange, ...]
) -> list[tuple[TrafficSelectorRange, TrafficSelectorRange]]:
    """Every (local, remote) pair of one IP version: the policies of a Child SA."""
    return [
        (mine, theirs)
        for mine in local_ts
        for theirs in remote_ts
        if _version(mine.start) == _version(theirs.start)
    ]


def _version(address: str) -> int:
    return ipaddress.ip_address(address).version


def subnet_of(ts: TrafficSelectorRange) -> str:
    """``address/prefix`` of the smallest subnet that holds the selector's range."""
    start = ipaddress.ip_address(ts.start)
    end = ipaddress.ip_address(ts.end)
    width = start.max_prefixlen
    if end.version != start.version or int(end) < int(start):
        raise ValueError(f"selector {ts} is not a range of one IP version")
    differing = (int(start) ^ int(end)).bit_length()
    base = type(start)(int(start) >> differing << differing)
    network = ipaddress.ip_network(f"{base}/{width - differing}")
    return f"{network.network_address}/{network.prefixlen}"


def _port(mine: TrafficSelectorRange, theirs: TrafficSelectorRange, local: bool) -> str:
    if max(mine.protocol, theirs.protocol) in _ICMP:
        # The ICMP type sits in the high octet of the port, the code in the low one.
        port = max(mine.start_port, theirs.start_port)
        return str(port >> 8 if local else port & 0xFF)
    ts = mine if local else theirs
    if ts.start_port == ts.end_port or (ts.start_port == 0 and ts.end_port == 65535):
        return str(ts.start_port)
    return f"{ts.start_port}:{ts.end_port}"


def _is_host(ts: TrafficSelectorRange, address: str) -> bool:
    try:
        host = ipaddress.ip_address(address)
        return ipaddress.ip_address(ts.start) == host == ipaddress.ip_address(ts.end)
    except ValueError:
        return False


def verb(call: UpdownCall) -> str:
    """``up-client``, ``down-host-v6``...: strongSwan's PLUTO_VERB."""
    host = _is_host(call.my_ts, call.me)
    ipv6 = _version(call.me if host else call.my_ts.start) == 6
    return f"{'up' if call.up else 'down'}-{'host' if host else 'client'}{'-v6' if ipv6 else ''}"


def _numbered(prefix: str, addresses: tuple[str, ...]) -> dict[str, str]:
    """PREFIX4_n / PREFIX6_n, numbered from 1 per IP version."""
    counts = {4: 0, 6: 0}
    out: dict[str, str] = {}
    for address in addresses:
        version = _version(address)
        counts[version] += 1
        out[f"{prefix}{version}_{counts[version]}"] = str(ipaddress.ip_address(address))
    return out


def build_environment(call: UpdownCall, path: str) -> dict[str, str]:
    """The script's whole environment (PATH is the daemon's, as charon passes its own)."""
    env = {
        "PATH": path,
        "PLUTO_VERSION": PLUTO_VERSION,
        "PLUTO_VERB": verb(call),
        "PLUTO_CONNECTION": call.connection,
        "PLUTO_INTERFACE": call.interface or "unknown",
        "PLUTO_REQID": str(call.reqid),
        "PLUTO_PROTO": "ah" if call.protocol == "ah" else "esp",
        "PLUTO_UNIQUEID": str(call.unique_id),
        "PLUTO_ME": str(ipaddress.ip_address(call.me)),
        "PLUTO_MY_ID": call.my_id,
        "PLUTO_MY_CLIENT": subnet_of(call.my_ts),
        "PLUTO_MY_PORT": _port(call.my_ts, call.peer_ts, local=True),
        "PLUTO_MY_PROTOCOL": str(call.my_ts.protocol),
        "PLUTO_PEER": str(ipaddress.ip_address(call.peer)),
        "PLUTO_PEER_ID": call.peer_id,
        "PLUTO_PEER_CLIENT": subnet_of(call.peer_ts),
        "PLUTO_PEER_PORT": _port(call.my_ts, call.peer_ts, local=False),
        "PLUTO_PEER_PROTOCOL": str(call.peer_ts.protocol),
    }
    if call.xauth_id is not None:
        env["PLUTO_XAUTH_ID"] = call.xauth_id
    for side, addresses in (("MY", call.my_source_ips), ("PEER", call.peer_source_ips)):
        if addresses:  # PLUTO_x_SOURCEIP: the first virtual IP, whatever its version
            env[f"PLUTO_{side}_SOURCEIP"] = str(ipaddress.ip_address(addresses[0]))
        env.update(_numbered(f"PLUTO_{side}_SOURCEIP", addresses))
    if call.mark_in is not None:
        env["PLUTO_MARK_IN"] = f"{call.mark_in[0]}/0x{call.mark_in[1]:08x}"
    if call.mark_out is not None:
        env["PLUTO_MARK_OUT"] = f"{call.mark_out[0]}/0x{call.mark_out[1]:08x}"
    if call.if_id_in:
        env["PLUTO_IF_ID_IN"] = str(call.if_id_in)
    if call.if_id_out:
        env["PLUTO_IF_ID_OUT"] = str(call.if_id_out)
    if call.udp_encap_port is not None:
        env["PLUTO_UDP_ENC"] = str(call.udp_encap_port)
    if call.ipcomp:
        env["PLUTO_IPCOMP"] = "1"
    env.update(_numbered("PLUTO_DNS", call.dns))
    if call.host_access:
        env["PLUTO_HOST_ACCESS"] = "1"
    # Identities come from the peer (a certificate's DN may hold any character): what is
    # not printable becomes "?", as strongSwan prints them; NUL cannot be in an environment.
    return {key: _printable(value) for key, value in env.items()}


def _printable(value: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in value)
