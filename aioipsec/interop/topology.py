"""The namespaces of a scenario: initiator and responder joined by a veth pair, or
through a middle namespace that masquerades (NAT), rebinds and/or drops packets."""

from __future__ import annotations

import ipaddress

from aioipsec.interop.scenario import NAT_REBIND_TIMEOUT, Scenario, Side, Topology
from aioipsec.netns import Lab, Namespace, add_masquerade, add_random_loss, set_udp_mapping_timeout


def _host(network: str, index: int) -> str:
    return str(ipaddress.ip_network(network)[index])


def _with_prefix(network: str, index: int) -> str:
    net = ipaddress.ip_network(network)
    return f"{net[index]}/{net.prefixlen}"


def build_topology(lab: Lab, scenario: Scenario) -> Topology:
    """Namespaces, links, addresses, routes and (optionally) the NAT/loss router."""
    initiator = lab.namespace("i")
    responder = lab.namespace("r")
    router: Namespace | None = None
    interfaces: dict[str, str] = {}
    responder_outer = _host(scenario.public_net, 2)
    if scenario.needs_router:
        router = lab.namespace("n")
        router.enable_forwarding()
        private_net = scenario.private_net if scenario.nat else scenario.public_net
        if not scenario.nat:
            # Without NAT the router simply forwards between two halves of the public range.
            public = ipaddress.ip_network(scenario.public_net)
            halves = list(public.subnets(prefixlen_diff=1))
            private_net, public_net = str(halves[0]), str(halves[1])
            responder_outer = _host(public_net, 2)
        else:
            public_net = scenario.public_net
        initiator_if, router_inside = lab.veth(
            initiator, _with_prefix(private_net, 1), router, _with_prefix(private_net, -2)
        )
        router_outside, responder_if = lab.veth(
            router,
            _with_prefix(public_net, -2),
            responder,
            f"{responder_outer}/{ipaddress.ip_network(public_net).prefixlen}",
        )
        initiator.ip("route", "add", "default", "via", _host(private_net, -2))
        initiator_outer = _host(private_net, 1)
        if scenario.nat:
            add_masquerade(router, router_outside, random_ports=scenario.nat_rebind)
            if scenario.nat_rebind:
                set_udp_mapping_timeout(router, NAT_REBIND_TIMEOUT)
            seen_as = _host(public_net, -2)
        else:
            responder.ip("route", "add", private_net, "via", _host(public_net, -2))
            seen_as = initiator_outer
        if scenario.loss_percent and scenario.loss_direction == "both":
            add_random_loss(router, scenario.loss_percent, hook="forward")
        elif scenario.loss_percent:
            # Everything the initiator sends goes to UDP 500 or 4500 (no NAT in between).
            router.nft(
                "table inet aioipsec_loss {\n"
                "    chain forward {\n"
                "        type filter hook forward priority filter; policy accept;\n"
                f'        iifname "{router_inside}" udp dport {{ 500, 4500 }} '
                f"numgen random mod 100 < {scenario.loss_percent} counter drop\n"
                "    }\n"
                "}\n"
            )
        interfaces.update(
            initiator=initiator_if,
            responder=responder_if,
            router_inside=router_inside,
            router_outside=router_outside,
        )
    else:
        initiator_outer = _host(scenario.public_net, 1)
        prefix = ipaddress.ip_network(scenario.public_net).prefixlen
        initiator_if, responder_if = lab.veth(
            initiator, f"{initiator_outer}/{prefix}", responder, f"{responder_outer}/{prefix}"
        )
        seen_as = initiator_outer
        interfaces.update(initiator=initiator_if, responder=responder_if)
    if not initiator.wait_reachable(responder_outer):
        raise RuntimeError(f"the responder's outer address {responder_outer} does not answer")
    sides: tuple[tuple[Side, Namespace], ...] = (("initiator", initiator), ("responder", responder))
    for side, namespace in sides:
        inner = ipaddress.ip_address(scenario.inner_address(side))
        namespace.add_address("lo", f"{inner}/{inner.max_prefixlen}")
    return Topology(
        scenario,
        initiator,
        responder,
        router,
        initiator_outer,
        responder_outer,
        seen_as,
        interfaces,
    )
