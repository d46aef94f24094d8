"""Configuration payloads in IKE_AUTH: virtual IPs for road warriors (RFC 7296 sec. 2.19).

Client (``IkeConfig.vips``): the IKE_AUTH request carries a CFG_REQUEST asking for one address
per family (``0.0.0.0``/``::``, or the address we had: sec. 2.19 lets the initiator ask for a
specific one) and the DNS servers; our ``dynamic`` local selector becomes the whole family
(``0.0.0.0/0``), which the gateway narrows to the address it assigns (sec. 2.9). The
CFG_REPLY's addresses become our virtual IPs (``PeerState.local_vips``) and are reported in
:class:`ikev2.events.VirtualIpsAssigned` for the daemon to put on its TUN device.

Gateway (``IkeConfig.pools``): a CFG_REQUEST is answered by the engine's
:class:`ikev2.cp.ConfigProvider` (the daemon's pools, called synchronously with ``now``: no
I/O here). The leased addresses are the peer's ``dynamic`` selector, so the Child SA is
narrowed to them. No address: INTERNAL_ADDRESS_FAILURE instead of the Child SA (sec. 3.15.4),
and no lease is taken. The leases go back to the provider when the IKE SA ends, not when it
is rekeyed (the new IKE SA inherits them).
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address

from ikev2.cp import ConfigAttributes, cp_request
from ikev2.enums import CfgType, NotifyType
from ikev2.errors import ProtocolError
from ikev2.events import VirtualIpsAssigned
from ikev2.payloads import CpPayload
from ikev2.tasks import find
from ikev2.tasks.context import Payload, TaskContext
from ikev2.ts import Ts, parse_ts, parse_ts_list


def client_request(sa: TaskContext) -> CpPayload | None:
    """The CFG_REQUEST of an IKE_AUTH request, when the connection has ``vips``."""
    if not sa.config.vips:
        return None
    wanted: list[IPv4Address | IPv6Address] = []
    for text in sa.config.vips:
        address = ip_address(text)
        # After a reconnect or reauthentication ask for the address we had (sec. 2.19).
        previous = [ip_address(v) for v in sa.peer.local_vips]
        same_family = [p for p in previous if p.version == address.version]
        wanted.append(same_family[0] if same_family and not int(address) else address)
    return cp_request(wanted).to_payload()


def client_reply(sa: TaskContext, payloads: list[Payload]) -> None:
    """Take the gateway's CFG_REPLY; raises ProtocolError when we asked and got nothing."""
    if not sa.config.vips:
        return
    payload = find(payloads, CpPayload)
    if payload is None or int(payload.cfg_type) != CfgType.CFG_REPLY:
        raise ProtocolError(
            "we asked for a virtual IP (vips) but the gateway sent no CFG_REPLY",
            NotifyType.FAILED_CP_REQUIRED,
        )
    reply = ConfigAttributes.from_payload(payload)
    if not reply.virtual_ips:
        raise ProtocolError(
            "the gateway's CFG_REPLY assigns no virtual IP", NotifyType.INTERNAL_ADDRESS_FAILURE
        )
    sa.peer.local_vips = [str(address) for address in reply.virtual_ips]
    sa.emit(
        VirtualIpsAssigned(
            sa.ike_sa_id,
            sa.name,
            local=True,
            identity=sa.local_id,
            addresses=tuple(sa.peer.local_vips),
            dns=tuple(str(a) for a in reply.dns_servers),
            domains=tuple(reply.dns_domains),
            subnets=tuple(str(s) for s in (*reply.ip4_subnets, *reply.ip6_subnets)),
        )
    )


def gateway_reply(
    sa: TaskContext, payloads: list[Payload], now: float, identity: str | None = None
) -> CpPayload | None:
    """Answer the peer's CFG_REQUEST from the pools (before the Child SA is selected, so
    that its selectors are narrowed to the lease). ``identity``: whom the lease is for (the
    EAP identity after EAP, as strongSwan does; else the IKE identity). Raises
    ProtocolError INTERNAL_ADDRESS_FAILURE when no address can be assigned."""
    identity = identity or sa.remote_id
    payload = find(payloads, CpPayload)
    if payload is None or int(payload.cfg_type) != CfgType.CFG_REQUEST:
        return None
    request = ConfigAttributes.from_payload(payload)
    provider = sa.ctx.config_provider
    if not sa.config.pools or provider is None:
        # strongSwan's behaviour: a request we have nothing for is not answered.
        return None
    reply = provider.assign(sa.config.pools, identity, request, now)
    sa.peer.remote_vips = [str(address) for address in reply.virtual_ips]
    sa.peer.remote_vips_identity = identity
    sa.emit(
        VirtualIpsAssigned(
            sa.ike_sa_id,
            sa.name,
            local=False,
            identity=identity,
            addresses=tuple(sa.peer.remote_vips),
            dns=tuple(str(a) for a in reply.dns_servers),
            domains=tuple(reply.dns_domains),
        )
    )
    return reply.to_payload()


def resolve_selectors(
    texts: list[str], ike_address: str, vips: list[str], requested: list[str]
) -> list[Ts]:
    """Configured selectors with ``dynamic`` resolved: to our virtual IPs / the peer's
    leases when there are some, to the whole family of each address still being asked for
    (a client before its CFG_REPLY), else to the IKE address."""
    if not vips and not requested:
        return parse_ts_list(texts, ike_address)
    out: list[Ts] = []
    for text in texts:
        for part in text.split(","):
            part = part.strip()
            if not part:
                continue
            if not part.startswith(("dynamic", "%dynamic")):
                out.extend(parse_ts(part, ike_address))
                continue
            if vips:
                for vip in vips:
                    out.extend(parse_ts(part, vip))
            else:
                for wanted in requested:
                    family = "0.0.0.0/0" if ip_address(wanted).version == 4 else "::/0"
                    out.extend(parse_ts(part, family))
    return out
