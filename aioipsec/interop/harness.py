"""Interop scenarios: one description, both peers' configurations, a topology, and checks.

A :class:`Scenario` says who talks to whom (roles and implementations), how they authenticate,
which IKE and ESP proposals they offer, which subnets they protect, whether a NAT sits between
them and how much loss the path has. From it the harness

1. builds the topology in namespaces (:func:`build_topology`): initiator and responder joined by
   a veth pair, or through a middle namespace that masquerades (NAT) and/or drops packets;
2. writes each peer's configuration: strongSwan's ``swanctl.conf`` (:func:`swanctl_conf`) for
   charon; for our daemon the same ``swanctl.conf`` handed to the daemon through the hook
   :data:`AIOIPSEC_PEER_FACTORY` (see docs/interop-harness.md);
3. starts both peers (:class:`CharonPeer`, or the aioipsec peer from the hook), initiates from
   the initiator, pings across the tunnel between the two protected subnets;
4. checks both sides' view of the SAs (:func:`check_sa_pair`): ESTABLISHED / INSTALLED, the
   negotiated algorithms, crosswise SPIs, UDP encapsulation on port 4500.

The SA views use VICI ``list-sas`` vocabulary (what ``swanctl --list-sas`` shows), which our
daemon's control socket speaks as well, so one check serves both implementations.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import ipaddress
import json
import re
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from aioipsec.interop.charon import Charon, child_sas, swanctl_section
from aioipsec.interop.pki import Pki
from aioipsec.netns import (
    Capture,
    Lab,
    Namespace,
    add_masquerade,
    add_random_loss,
    set_udp_mapping_timeout,
)

Implementation = Literal["charon", "aioipsec"]

ACTIONS = (
    "rekey-child",
    "rekey-ike",
    "terminate",
    # Lifetime-driven: SIDE gets a short rekey_time / reauth_time (LIFETIME) in its
    # swanctl.conf and the run waits until that side has rekeyed / reauthenticated by itself.
    "expire-child",
    "expire-ike",
    "expire-reauth",
    # SIDE goes silent (nftables drops all its UDP); the other side, which has dpd_delay
    # DPD_DELAY, must notice the dead peer and delete the IKE SA (RFC 7296 sec. 2.4).
    "vanish",
)
LIFETIME = "4s"
OVER_TIME = "10s"
DPD_DELAY = "1s"

NAT_REBIND_TIMEOUT = 1  # seconds an idle UDP mapping survives in the rebinding NAT
NAT_REBIND_PAUSE = 3.0  # seconds without traffic: the mapping is gone
Side = Literal["initiator", "responder"]

# strongSwan's display names (list-sas "encr-alg", "integ-alg", "prf-alg", "dh-group") of the
# proposal keywords the matrix uses. This is the harness's own table, written from what
# charon prints, so that our daemon is checked against charon's vocabulary, not against itself.
_AEAD_ICV = {"8": "8", "12": "12", "16": "16", "64": "8", "96": "12", "128": "16"}
_INTEG = {
    "sha1": "HMAC_SHA1_96",
    "sha256": "HMAC_SHA2_256_128",
    "sha384": "HMAC_SHA2_384_192",
    "sha512": "HMAC_SHA2_512_256",
}
_PRF = {
    "prfsha1": "PRF_HMAC_SHA1",
    "prfsha256": "PRF_HMAC_SHA2_256",
    "prfsha384": "PRF_HMAC_SHA2_384",
    "prfsha512": "PRF_HMAC_SHA2_512",
}
_KE = {
    "x25519": "CURVE_25519",
    "curve25519": "CURVE_25519",
    "x448": "CURVE_448",
    "curve448": "CURVE_448",
    "ecp256": "ECP_256",
    "ecp384": "ECP_384",
    "ecp521": "ECP_521",
    "modp2048": "MODP_2048",
    "modp3072": "MODP_3072",
    "modp4096": "MODP_4096",
}


@dataclass(frozen=True)
class ExpectedAlgorithms:
    """What list-sas shows for the first proposal (None: not shown / not checked)."""

    encr: str
    keysize: str | None = None
    integ: str | None = None
    prf: str | None = None
    dh: str | None = None


def expected_display(proposal: str) -> ExpectedAlgorithms:
    """strongSwan's display names for the first algorithm of each kind in PROPOSAL."""
    encr: str | None = None
    keysize = integ = prf = dh = explicit_prf = None
    for keyword in proposal.split("-"):
        if match := re.fullmatch(r"aes(128|192|256)(gcm|ccm)(\d+)", keyword):
            if encr is None:
                mode = match.group(2).upper()
                encr, keysize = f"AES_{mode}_{_AEAD_ICV[match.group(3)]}", match.group(1)
        elif match := re.fullmatch(r"aes(128|192|256)(ctr)?", keyword):
            if encr is None:
                encr = "AES_CTR" if match.group(2) else "AES_CBC"
                keysize = match.group(1)
        elif keyword == "chacha20poly1305":
            encr = encr or "CHACHA20_POLY1305"
        elif keyword in _INTEG:
            integ = integ or _INTEG[keyword]
            # IKE without an explicit PRF: strongSwan derives it from the integrity algorithm.
            prf = prf or _PRF.get(f"prf{keyword}")
        elif keyword in _PRF:
            explicit_prf = explicit_prf or _PRF[keyword]
        elif keyword in _KE:
            dh = dh or _KE[keyword]
    if encr is None:
        raise ValueError(f"no cipher known to the harness in {proposal!r}")
    return ExpectedAlgorithms(encr, keysize, integ, explicit_prf or prf, dh)


@dataclass(frozen=True)
class Scenario:
    """One interop case. Defaults: the baseline (PSK, AES-GCM-256, X25519, subnet to subnet)."""

    name: str = "baseline"
    initiator: Implementation = "charon"
    responder: Implementation = "charon"
    auth: Literal["psk", "pubkey"] = "psk"
    key_type: Literal["rsa", "ecdsa", "ed25519"] = "ecdsa"  # with auth="pubkey" (pki --gen)
    psk: str = "aioipsec-interop-psk-0123456789"
    initiator_id: str = "initiator.example"
    responder_id: str = "responder.example"
    ike_proposals: tuple[str, ...] = ("aes256gcm16-prfsha256-x25519",)
    esp_proposals: tuple[str, ...] = ("aes256gcm16",)
    # Protected subnets; the first host of each is put on the peer's loopback as its inner
    # address (pings go from one to the other).
    initiator_subnet: str = "10.1.0.0/24"
    responder_subnet: str = "10.2.0.0/24"
    mode: Literal["tunnel"] = "tunnel"
    # Outer addressing: the responder is always at .2 of the "public" link.
    public_net: str = "10.200.0.0/24"
    private_net: str = "192.168.100.0/24"  # only with nat=True: the initiator's side
    nat: bool = False  # a masquerading router between the peers (initiator behind it)
    loss_percent: int = 0  # random loss of UDP 500/4500 on the path (nftables numgen)
    # "both": each packet either way is drawn; "to-responder": only the initiator's packets
    # (IKE requests, its ESP-in-UDP) are dropped, the responder's answers all pass.
    loss_direction: Literal["both", "to-responder"] = "both"
    # With nat=True: the NAT forgets idle mappings after 1 s and picks random ports, and the run
    # pauses after the first ping, so the initiator reappears from a new public port; the
    # responder must follow it (RFC 7296 sec. 2.23) for the second ping to come back.
    nat_rebind: bool = False
    # After the first ping, in order: "<side>:rekey-child", "<side>:rekey-ike",
    # "<side>:terminate" (side = initiator/responder). Each rekey must give new SPIs on both
    # sides and a working tunnel; terminate must remove the SA on both sides.
    actions: tuple[str, ...] = ()
    # IKE_AUTH is expected to travel in RFC 7383 fragments both ways (large certificates):
    # checked in charon's log ("splitting IKE message", "reassembled fragmented IKE message").
    expect_ike_fragments: bool = False
    # > 0: after the checks, iperf3 TCP from the initiator's inner address to the responder's
    # for this many seconds (a figure, not a check: the run records it in iperf_mbps).
    iperf_seconds: float = 0.0
    # NAT-T keepalive interval for both peers (charon: keep_alive in strongswan.conf; ours:
    # [daemon] keep_alive). With nat=True the run then stays idle for 3 intervals and counts
    # the 0xFF keepalives (RFC 3948 sec. 2.3) the NATed initiator sends, on the NAT's outside.
    keep_alive: float | None = None
    # The responder's own IKE proposals when they differ from the initiator's (mismatch rows).
    responder_ike_proposals: tuple[str, ...] | None = None
    # What the initiator proposes as the remote traffic selector when it is not exactly the
    # responder's subnet: wider (the responder narrows it, RFC 7296 sec. 2.9) or disjoint.
    initiator_remote_ts: str | None = None
    # The notify the exchange must fail with (NO_PROPOSAL_CHOSEN, TS_UNACCEPTABLE): the run
    # then checks that no SA (or, for TS_UNACCEPTABLE, no Child SA) exists on either side and
    # that both peers' logs name the notify.
    expect_failure: str | None = None
    # Both sides initiate at the same moment (the responder knows the initiator's address):
    # whatever the peers make of the collision, both must end with a working tunnel.
    collision: bool = False
    # A ping (every 0.1 s) runs through all the actions: no echo may be lost.
    ping_during_actions: bool = False
    encap: bool = False  # force UDP encapsulation (kernel-libipsec always does it anyway)
    ping_count: int = 3
    establish_timeout: float = 20.0

    def __post_init__(self) -> None:
        if self.loss_percent and not 0 < self.loss_percent < 100:
            raise ValueError("loss_percent must be 0..99")
        versions = {
            ipaddress.ip_network(net).version
            for net in (self.initiator_subnet, self.responder_subnet)
        }
        if len(versions) != 1:
            raise ValueError("both protected subnets must be of one IP version")
        outer_version = ipaddress.ip_network(self.public_net).version
        for action in self.actions:
            side, _, verb = action.partition(":")
            if side not in ("initiator", "responder") or verb not in ACTIONS:
                raise ValueError(f"unknown action {action!r} (side:{'/'.join(ACTIONS)})")
        if self.keep_alive is not None and self.keep_alive <= 0:
            raise ValueError("keep_alive must be positive")
        if self.nat_rebind and not self.nat:
            raise ValueError("nat_rebind needs nat=True")
        if self.nat and outer_version == 6:
            raise ValueError("the NAT topology is IPv4 only (NAT66 is not a thing to test)")

    @classmethod
    def ipv6(cls, **overrides: Any) -> Scenario:
        """The same scenario with IPv6 outside and inside (fd00::/8 unique local ranges)."""
        settings: dict[str, Any] = {
            "public_net": "fd00:200::/64",
            "initiator_subnet": "fd00:1::/64",
            "responder_subnet": "fd00:2::/64",
        }
        settings.update(overrides)
        return cls(**settings)

    @property
    def expects_udp_encap(self) -> bool:
        """ESP in UDP on 4500: behind a NAT, when forced, or with charon on either side
        (kernel-libipsec always encapsulates and fakes a NAT to get there)."""
        return self.nat or self.encap or "charon" in (self.initiator, self.responder)

    @property
    def needs_router(self) -> bool:
        return self.nat or self.loss_percent > 0

    @property
    def connection_name(self) -> str:
        return re.sub(r"[^A-Za-z0-9_-]", "_", self.name) or "interop"

    def inner_address(self, side: Side) -> str:
        subnet = self.initiator_subnet if side == "initiator" else self.responder_subnet
        return str(next(iter(ipaddress.ip_network(subnet).hosts())))  # a /32 gives a list

    def identity(self, side: Side) -> str:
        return self.initiator_id if side == "initiator" else self.responder_id

    def implementation(self, side: Side) -> Implementation:
        return self.initiator if side == "initiator" else self.responder


@dataclass
class Topology:
    scenario: Scenario
    initiator: Namespace
    responder: Namespace
    router: Namespace | None
    initiator_outer: str  # the initiator's own outer address
    responder_outer: str
    # The initiator's address as the responder sees it (the NAT's public side with nat=True).
    initiator_seen_as: str
    interfaces: dict[str, str] = field(default_factory=dict)  # role -> outer interface name

    def namespace(self, side: Side) -> Namespace:
        return self.initiator if side == "initiator" else self.responder


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
    for side, namespace in (("initiator", initiator), ("responder", responder)):
        inner = ipaddress.ip_address(scenario.inner_address(side))  # type: ignore[arg-type]
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


# --- configuration writers -------------------------------------------------------------------


def swanctl_conf(
    scenario: Scenario, topology: Topology, side: Side, cert_file: str | None = None
) -> str:
    """strongSwan swanctl.conf for SIDE of SCENARIO (also the input of our daemon's hook).

    With ``auth = pubkey``, CERT_FILE is SIDE's certificate in ``x509/`` (see
    :func:`install_credentials`); the CA in ``x509ca/`` is trusted as swanctl does.
    """
    initiating = side == "initiator"
    local_addr = topology.initiator_outer if initiating else topology.responder_outer
    remote_addr = topology.responder_outer if initiating else "%any"
    if scenario.collision and not initiating:
        remote_addr = topology.initiator_outer
    local_subnet = scenario.initiator_subnet if initiating else scenario.responder_subnet
    remote_subnet = (
        (scenario.initiator_remote_ts or scenario.responder_subnet)
        if initiating
        else scenario.initiator_subnet
    )
    proposals = scenario.ike_proposals
    if not initiating and scenario.responder_ike_proposals is not None:
        proposals = scenario.responder_ike_proposals
    other: Side = "responder" if initiating else "initiator"
    name = scenario.connection_name
    verbs = {a.partition(":")[2] for a in scenario.actions if a.startswith(f"{side}:")}
    other_verbs = {a.partition(":")[2] for a in scenario.actions if a.startswith(f"{other}:")}
    connection: dict[str, Any] = {
        "version": 2,
        "local_addrs": local_addr,
        "remote_addrs": remote_addr,
        "proposals": list(proposals),
        "encap": scenario.encap,
        "local": {"auth": scenario.auth, "id": scenario.identity(side)},
        "remote": {"auth": scenario.auth, "id": scenario.identity(other)},
        "children": {
            name: {
                "local_ts": local_subnet,
                "remote_ts": remote_subnet,
                "esp_proposals": list(scenario.esp_proposals),
                "mode": scenario.mode,
            }
        },
    }
    if "expire-ike" in verbs:
        connection["rekey_time"] = LIFETIME
    if "expire-reauth" in verbs:
        connection["reauth_time"] = LIFETIME
        connection["rekey_time"] = "0"
    if verbs & {"expire-ike", "expire-reauth"}:
        # Explicit, because charon's default (10 % of 4 s) rounds down to 0 s: its hard
        # lifetime then fires together with the rekey and deletes the new IKE SA.
        connection["over_time"] = OVER_TIME
    if "expire-child" in verbs:
        connection["children"][name]["rekey_time"] = LIFETIME
    if "vanish" in other_verbs:
        connection["dpd_delay"] = DPD_DELAY
    if scenario.auth == "pubkey":
        if cert_file is None:
            raise ValueError("auth = pubkey needs the certificate file name")
        connection["local"]["certs"] = cert_file
        secrets_text = ""
    else:
        secrets = {
            "ike-interop": {
                "id-1": scenario.initiator_id,
                "id-2": scenario.responder_id,
                "secret": f'"{scenario.psk}"',
            }
        }
        secrets_text = swanctl_section("secrets", secrets) + "\n"
    return (
        "# written by aioipsec.interop.harness for scenario "
        f"{scenario.name} ({side})\n"
        + swanctl_section("connections", {name: connection})
        + "\n"
        + secrets_text
    )


# --- peers ------------------------------------------------------------------------------------


class InteropPeer(Protocol):
    """What the harness needs from either implementation."""

    implementation: str

    def start(self) -> None: ...

    def load(self, swanctl_conf_text: str) -> None: ...

    def initiate(self, child: str, ike: str) -> None: ...

    def list_sas(self) -> dict[str, dict[str, Any]]: ...

    def rekey(self, *, ike: str, child: str | None = None) -> None: ...

    def terminate(self, ike: str) -> None: ...

    def log_tail(self, lines: int = 40) -> str: ...

    def stop(self) -> None: ...


class CharonPeer:
    """strongSwan charon (kernel-libipsec) as an interop peer."""

    implementation = "charon"

    def __init__(
        self,
        lab: Lab,
        namespace: Namespace,
        workdir: Path,
        *,
        key_debug: bool = False,
        keep_alive: float | None = None,
    ):
        extra = f"    keep_alive = {keep_alive:g}s\n" if keep_alive is not None else ""
        self.charon = Charon(
            lab, namespace, workdir, key_debug=key_debug, extra_charon_settings=extra
        )

    def start(self) -> None:
        self.charon.start()

    def load(self, swanctl_conf_text: str) -> None:
        self.charon.load(swanctl_conf_text)

    def initiate(self, child: str, ike: str) -> None:
        self.charon.initiate(child, ike)

    def list_sas(self) -> dict[str, dict[str, Any]]:
        return self.charon.list_sas()

    def rekey(self, *, ike: str, child: str | None = None) -> None:
        if child is not None:
            self.charon.swanctl("--rekey", "--child", child)
        else:
            self.charon.swanctl("--rekey", "--ike", ike)

    def terminate(self, ike: str) -> None:
        self.charon.swanctl("--terminate", "--ike", ike, "--timeout", "10", timeout=15)

    def log_tail(self, lines: int = 40) -> str:
        return self.charon.log_tail(lines)

    def stop(self) -> None:
        self.charon.stop()


PeerFactory = Callable[[Lab, Namespace, Path, Scenario, Side], InteropPeer]

# THE HOOK for our daemon (docs/interop-harness.md, "Our daemon as a peer"): a factory
# returning an InteropPeer for "aioipsec" sides. None means the default,
# aioipsec.interop.ours.aioipsec_peer: `python -m aioipsec.daemon -c daemon.toml
# --swanctl-conf swanctl.conf` in the namespace (the daemon reads the same swanctl.conf the
# harness writes for charon), driven over its control socket. Set it to run another build of
# the daemon (other options, a wrapper, a profiler) without touching the scenarios.
AIOIPSEC_PEER_FACTORY: PeerFactory | None = None


class PeerUnavailable(RuntimeError):
    pass


def make_peer(
    lab: Lab,
    namespace: Namespace,
    workdir: Path,
    scenario: Scenario,
    side: Side,
    *,
    key_debug: bool = False,
) -> InteropPeer:
    """The peer for SIDE; ``key_debug`` makes charon log derived keys (ike/enc level 4)."""
    implementation = scenario.implementation(side)
    if implementation == "charon":
        return CharonPeer(
            lab, namespace, workdir, key_debug=key_debug, keep_alive=scenario.keep_alive
        )
    if implementation != "aioipsec":
        raise PeerUnavailable(f"unknown implementation {implementation!r}")
    if AIOIPSEC_PEER_FACTORY is not None:
        return AIOIPSEC_PEER_FACTORY(lab, namespace, workdir, scenario, side)
    from aioipsec.interop.ours import aioipsec_peer

    return aioipsec_peer(lab, namespace, workdir, scenario, side)


# --- checks -----------------------------------------------------------------------------------


def esp_counter_problems(
    scenario: Scenario,
    initiator_sas: Mapping[str, Mapping[str, Any]],
    responder_sas: Mapping[str, Mapping[str, Any]],
    echo_replies: int,
) -> list[str]:
    """The ESP counters moved on both sides: each echo reply that came back was one packet
    out and in on the initiator's Child SA and one in and out on the responder's (issue 6:
    traffic passes "with the ESP counters moving on both sides")."""
    problems: list[str] = []
    name = scenario.connection_name
    for side, sas in (("initiator", initiator_sas), ("responder", responder_sas)):
        children = child_sas(sas.get(name, {}))
        if len(children) != 1:
            continue  # check_sa_pair already reported it
        for key in ("packets-in", "packets-out"):
            try:
                value = int(children[0].get(key, 0))
            except (TypeError, ValueError):
                value = 0
            if value < echo_replies:
                problems.append(f"{side}: ESP {key} {value} after {echo_replies} echo replies")
    return problems


def check_sa_pair(
    scenario: Scenario,
    initiator_sas: Mapping[str, Mapping[str, Any]],
    responder_sas: Mapping[str, Mapping[str, Any]],
) -> list[str]:
    """Problems found comparing both peers' list-sas views (empty list: all good)."""
    problems: list[str] = []
    name = scenario.connection_name
    ike_i = initiator_sas.get(name)
    ike_r = responder_sas.get(name)
    if ike_i is None or ike_r is None:
        return [
            f"IKE SA {name} missing: initiator {list(initiator_sas)}, "
            f"responder {list(responder_sas)}"
        ]
    for side, ike in (("initiator", ike_i), ("responder", ike_r)):
        if ike.get("state") != "ESTABLISHED":
            problems.append(f"{side}: IKE SA state {ike.get('state')}")
        keys = ["local-port"]
        if side == "initiator" or not scenario.nat:
            keys.append("remote-port")  # the responder sees whatever port the NAT picked
        port = "4500" if scenario.expects_udp_encap else "500"
        for key in keys:
            if ike.get(key) != port:
                problems.append(f"{side}: IKE {key} {ike.get(key)} (expected {port})")
    if (ike_i.get("initiator-spi"), ike_i.get("responder-spi")) != (
        ike_r.get("initiator-spi"),
        ike_r.get("responder-spi"),
    ):
        problems.append("IKE SPIs differ between the peers")
    children_i, children_r = child_sas(ike_i), child_sas(ike_r)
    if len(children_i) != 1 or len(children_r) != 1:
        problems.append(f"expected one Child SA each, got {len(children_i)}/{len(children_r)}")
        return problems
    child_i, child_r = children_i[0], children_r[0]
    ike_expected = expected_display(scenario.ike_proposals[0])
    for side, ike in (("initiator", ike_i), ("responder", ike_r)):
        problems += _algorithm_problems(f"{side} IKE", ike, ike_expected, with_prf=True)
    # The first Child SA is keyed from IKE_AUTH without a key exchange: no dh-group to show.
    esp_expected = dataclasses.replace(expected_display(scenario.esp_proposals[0]), dh=None)
    for side, child in (("initiator", child_i), ("responder", child_r)):
        if child.get("state") != "INSTALLED":
            problems.append(f"{side}: Child SA state {child.get('state')}")
        encap = "yes" if scenario.expects_udp_encap else "no"
        if child.get("encap", "no") != encap:
            problems.append(f"{side}: Child SA encap={child.get('encap')}, expected {encap}")
        if child.get("protocol") != "ESP" or child.get("mode") != scenario.mode.upper():
            problems.append(f"{side}: {child.get('protocol')}/{child.get('mode')}")
        problems += _algorithm_problems(f"{side} ESP", child, esp_expected, with_prf=False)
    if child_i.get("spi-in") != child_r.get("spi-out") or child_i.get("spi-out") != child_r.get(
        "spi-in"
    ):
        problems.append(
            f"SPIs not crosswise: initiator in/out {child_i.get('spi-in')}/"
            f"{child_i.get('spi-out')}, responder in/out {child_r.get('spi-in')}/"
            f"{child_r.get('spi-out')}"
        )
    for side, child, local, remote in (
        ("initiator", child_i, scenario.initiator_subnet, scenario.responder_subnet),
        ("responder", child_r, scenario.responder_subnet, scenario.initiator_subnet),
    ):
        # Compared as networks: charon prints a host as 10.1.0.1/32, our daemon as 10.1.0.1.
        if _networks(child.get("local-ts")) != [ipaddress.ip_network(local)] or _networks(
            child.get("remote-ts")
        ) != [ipaddress.ip_network(remote)]:
            problems.append(f"{side} TS {child.get('local-ts')} === {child.get('remote-ts')}")
    return problems


def _networks(selectors: Any) -> list[Any]:
    try:
        return [ipaddress.ip_network(s) for s in selectors or ()]
    except ValueError:  # a port or protocol part: not what these rows configure
        return list(selectors or ())


def _algorithm_problems(
    what: str, sa: Mapping[str, Any], expected: ExpectedAlgorithms, *, with_prf: bool
) -> list[str]:
    pairs = [("encr-alg", expected.encr), ("encr-keysize", expected.keysize)]
    pairs += [("integ-alg", expected.integ), ("dh-group", expected.dh)]
    if with_prf:
        pairs.append(("prf-alg", expected.prf))
    return [
        f"{what}: {key} {sa.get(key)!r}, expected {value!r}"
        for key, value in pairs
        if value is not None and sa.get(key) != value
    ]


_RTT = re.compile(r"rtt min/avg/max/mdev = ([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+) ms")
_RECEIVED = re.compile(r"(\d+) packets transmitted, (\d+) received")


@dataclass(frozen=True)
class PingResult:
    transmitted: int
    received: int
    rtt_avg_ms: float | None
    output: str


def ping_through(topology: Topology, count: int, from_side: Side = "initiator") -> PingResult:
    """Ping the other side's inner address from FROM_SIDE's inner address."""
    scenario = topology.scenario
    other: Side = "responder" if from_side == "initiator" else "initiator"
    namespace = topology.namespace(from_side)
    result = namespace.run(
        "ping",
        "-c",
        str(count),
        "-i",
        "0.2",
        "-W",
        "2",
        "-I",
        scenario.inner_address(from_side),
        scenario.inner_address(other),
        check=False,
        timeout=count * 2 + 10,
    )
    received = _RECEIVED.search(result.stdout)
    rtt = _RTT.search(result.stdout)
    return PingResult(
        int(received.group(1)) if received else 0,
        int(received.group(2)) if received else 0,
        float(rtt.group(2)) if rtt else None,
        result.stdout + result.stderr,
    )


@dataclass
class ScenarioRun:
    """What a run measured and found; ``problems`` empty means the scenario passed."""

    scenario: Scenario
    establish_seconds: float | None = None
    ping: PingResult | None = None
    ping_after_rebind: PingResult | None = None
    # The initiator's public (address, port) as the responder saw it before/after the pause.
    rebind_ports: tuple[str, ...] | None = None  # NAT source ports seen on the wire, in order
    notes: list[str] = field(default_factory=list)  # observations that do not fail the run
    action_seconds: dict[str, float] = field(default_factory=dict)
    keepalives_seen: int | None = None  # from the NAT to the responder while idle
    iperf_mbps: float | None = None
    iperf_retransmits: int | None = None
    pings_after_actions: dict[str, PingResult] = field(default_factory=dict)
    initiator_sas: dict[str, Any] = field(default_factory=dict)
    responder_sas: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    logs: dict[str, str] = field(default_factory=dict)


def _wait_established(peer: InteropPeer, name: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    sas: dict[str, Any] = {}
    while time.monotonic() < deadline:
        sas = peer.list_sas()
        ike = sas.get(name, {})
        if ike.get("state") == "ESTABLISHED" and any(
            c.get("state") == "INSTALLED" for c in child_sas(ike)
        ):
            return sas
        time.sleep(0.05)
    return sas


def _sa_keys(sas: Mapping[str, Any], name: str) -> tuple[Any, ...]:
    """What changes when an SA is rekeyed: IKE SPIs and the Child SAs' SPIs."""
    ike = sas.get(name, {})
    children = tuple(sorted((c.get("spi-in"), c.get("spi-out")) for c in child_sas(ike)))
    return ike.get("initiator-spi"), ike.get("responder-spi"), children


def _installed(sas: Mapping[str, Any], name: str) -> bool:
    ike = sas.get(name, {})
    children = child_sas(ike)
    return (
        ike.get("state") == "ESTABLISHED"
        and len(children) == 1
        and children[0].get("state") == "INSTALLED"
    )


def _run_action(
    run: ScenarioRun, topology: Topology, peers: Mapping[Side, InteropPeer], action: str
) -> None:
    scenario = run.scenario
    name = scenario.connection_name
    side, _, verb = action.partition(":")
    actor = peers[side]  # type: ignore[index]
    before = {s: _sa_keys(p.list_sas(), name) for s, p in peers.items()}
    started = time.monotonic()
    if verb.startswith("expire-") or verb == "vanish":
        _run_passive_action(run, topology, peers, action, before, started)
        return
    try:
        if verb == "terminate":
            actor.terminate(name)
        else:
            actor.rekey(ike=name, child=name if verb == "rekey-child" else None)
    except Exception as exc:
        run.problems.append(f"{action}: {exc}")
        return
    deadline = started + scenario.establish_timeout
    views: dict[Side, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        views = {s: p.list_sas() for s, p in peers.items()}
        if verb == "terminate":
            if all(name not in v for v in views.values()):
                run.action_seconds[action] = time.monotonic() - started
                return
        elif all(_installed(v, name) and _sa_keys(v, name) != before[s] for s, v in views.items()):
            break
        time.sleep(0.05)
    else:
        run.problems.append(
            f"{action}: not done on both sides after {scenario.establish_timeout} s: "
            + "; ".join(f"{s}: {_brief(v, name)}" for s, v in views.items())
        )
        return
    run.action_seconds[action] = time.monotonic() - started
    problems = check_sa_pair(scenario, views["initiator"], views["responder"])
    run.problems += [f"after {action}: {p}" for p in problems]
    keys = {s: _sa_keys(v, name) for s, v in views.items()}
    if verb == "rekey-child" and any(k[:2] != before[s][:2] for s, k in keys.items()):
        run.problems.append(f"{action}: the IKE SPIs changed too")
    if verb == "rekey-ike" and any(k[2] != before[s][2] for s, k in keys.items()):
        run.problems.append(f"{action}: the Child SA changed too (it must move to the new IKE SA)")
    ping = ping_through(topology, scenario.ping_count)
    run.pings_after_actions[action] = ping
    if ping.received == 0 or (not scenario.loss_percent and ping.received != ping.transmitted):
        run.problems.append(f"ping after {action}: {ping.received}/{ping.transmitted}")


def _installed_spis(sas: Mapping[str, Any], name: str) -> set[tuple[Any, Any]]:
    ike = sas.get(name, {})
    return {
        (c.get("spi-in"), c.get("spi-out")) for c in child_sas(ike) if c.get("state") == "INSTALLED"
    }


def _run_passive_action(
    run: ScenarioRun,
    topology: Topology,
    peers: Mapping[Side, InteropPeer],
    action: str,
    before: Mapping[Side, tuple[Any, ...]],
    started: float,
) -> None:
    """Wait for what a lifetime or a dead peer makes the peers do by themselves."""
    scenario = run.scenario
    name = scenario.connection_name
    side, _, verb = action.partition(":")
    survivor: Side = "responder" if side == "initiator" else "initiator"
    if verb == "vanish":
        gone = topology.namespace(side)  # type: ignore[arg-type]
        for hook in ("input", "output"):
            add_random_loss(gone, 100, udp_ports=(500, 4500), hook=hook, table=f"gone_{hook}")
    # Lifetimes are 4 s (+ jitter); DPD: 1 s delay plus the retransmissions (~7 s).
    deadline = started + scenario.establish_timeout + 10
    views: dict[Side, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        if verb == "vanish":
            view = peers[survivor].list_sas()
            if name not in view:
                run.action_seconds[action] = time.monotonic() - started
                return
            views = {survivor: view}
        else:
            views = {s: p.list_sas() for s, p in peers.items()}
            done = True
            for s, v in views.items():
                ike = v.get(name, {})
                new_children = _installed_spis(v, name) - set(before[s][2])
                if ike.get("state") != "ESTABLISHED" or not _installed_spis(v, name):
                    done = False
                if verb != "expire-ike" and not new_children:
                    done = False
                if verb != "expire-child" and (
                    (ike.get("initiator-spi"), ike.get("responder-spi")) == before[s][:2]
                ):
                    done = False
            if done:
                break
        time.sleep(0.1)
    else:
        run.problems.append(
            f"{action}: not done after {deadline - started:.0f} s: "
            + "; ".join(f"{s}: {_brief(v, name)}" for s, v in views.items())
        )
        return
    run.action_seconds[action] = time.monotonic() - started
    # The new Child SA must be the same on both sides (crosswise SPIs).
    spis_i = _installed_spis(views["initiator"], name)
    spis_r = {(out, in_) for in_, out in _installed_spis(views["responder"], name)}
    if not spis_i & spis_r:
        run.problems.append(f"after {action}: no Child SA with crosswise SPIs: {spis_i} {spis_r}")
    ping = ping_through(topology, scenario.ping_count)
    run.pings_after_actions[action] = ping
    if ping.received != ping.transmitted:
        run.problems.append(f"ping after {action}: {ping.received}/{ping.transmitted}")


_ECHO_REPLY = re.compile(r"icmp_seq=(\d+) ttl=")


def _start_background_ping(lab: Lab, topology: Topology, path: Path) -> Any:
    scenario = topology.scenario
    return lab.start(
        topology.initiator,
        ["ping", "-n", "-i", "0.1", "-W", "1", "-I", scenario.inner_address("initiator"),
         scenario.inner_address("responder")],
        log=path,
    )  # fmt: skip


def _lost_echoes(process: Any, path: Path) -> tuple[int, list[int]]:
    """(replies, sequence numbers missing before the last reply) of the background ping."""
    time.sleep(1.2)  # the last request's answer (-W 1)
    process.stop(signal.SIGINT)
    replies = sorted({int(m.group(1)) for m in _ECHO_REPLY.finditer(path.read_text())})
    if not replies:
        return 0, []
    return len(replies), sorted(set(range(1, replies[-1] + 1)) - set(replies))


def _brief(sas: Mapping[str, Any], name: str) -> str:
    ike = sas.get(name)
    if ike is None:
        return "no IKE SA"
    children = [f"{c.get('state')} {c.get('spi-in')}/{c.get('spi-out')}" for c in child_sas(ike)]
    return f"IKE {ike.get('state')} {ike.get('initiator-spi')}, children {children}"


def _nat_source_ports(capture_path: Path, nat_address: str) -> list[int]:
    """The UDP source ports the NAT used towards the responder's port 4500, in order."""
    result = subprocess.run(
        ["tshark", "-n", "-r", str(capture_path), "-Y",
         f"ip.src == {nat_address} && udp.dstport == 4500", "-T", "fields", "-e", "udp.srcport"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    ports: list[int] = []
    for token in result.stdout.split():
        if not ports or ports[-1] != int(token):
            ports.append(int(token))
    return ports


def _rebind(
    run: ScenarioRun,
    topology: Topology,
    peers: Mapping[Side, InteropPeer],
    capture: Capture,
) -> None:
    name = run.scenario.connection_name
    time.sleep(NAT_REBIND_PAUSE)
    run.ping_after_rebind = ping_through(topology, run.scenario.ping_count)
    view = peers["responder"].list_sas().get(name, {}).get("remote-port")
    time.sleep(0.2)
    capture.stop()
    ports = _nat_source_ports(capture.path, topology.initiator_seen_as)
    run.rebind_ports = tuple(str(p) for p in ports)
    if len(ports) < 2:
        run.problems.append(f"the NAT did not rebind (source ports on the wire: {ports})")
    elif run.ping_after_rebind.received == 0:
        run.problems.append(
            f"after the NAT moved the initiator from port {ports[0]} to {ports[-1]} no ping "
            "came back: the responder did not follow (RFC 7296 sec. 2.23)"
        )
    elif view != str(ports[-1]):
        # ESP follows (the pings came back), but the IKE SA's endpoint as reported is stale:
        # the next IKE request (DPD, rekey) would go to the old mapping.
        run.notes.append(
            f"responder reports remote-port {view} after the NAT moved the initiator to "
            f"{ports[-1]} (ESP followed)"
        )


def _count_keepalives(run: ScenarioRun, lab: Lab, topology: Topology, workdir: Path) -> None:
    """Idle for three keepalive intervals and count the NAT-T keepalives on the NAT's outside."""
    interval = run.scenario.keep_alive
    assert interval is not None and topology.router is not None
    path = workdir / "keepalive.pcap"
    capture = lab.capture(
        topology.router, topology.interfaces["router_outside"], path, "udp port 4500"
    )
    time.sleep(3 * interval + 0.5)
    capture.stop()
    result = subprocess.run(
        ["tshark", "-n", "-r", str(path), "-Y", "udp.length == 9",
         "-T", "fields", "-e", "ip.src", "-e", "udp.payload"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    sources = [
        fields[0]
        for fields in (line.split("\t") for line in result.stdout.splitlines())
        if len(fields) == 2 and fields[1] == "ff"
    ]
    run.keepalives_seen = sources.count(topology.initiator_seen_as)
    if run.keepalives_seen < 2:
        run.problems.append(
            f"{run.keepalives_seen} NAT-T keepalives from the NATed initiator in "
            f"{3 * interval:g} s idle (keep_alive {interval:g} s)"
        )


def _iperf(run: ScenarioRun, lab: Lab, topology: Topology, workdir: Path) -> None:
    """iperf3 TCP through the tunnel, initiator -> responder (the inner addresses)."""
    scenario = run.scenario
    server_address = scenario.inner_address("responder")
    server = lab.start(
        topology.responder,
        ["iperf3", "-s", "-1", "--forceflush", "-B", server_address, "-p", "5201"],
        log=workdir / "iperf3-server.log",
    )
    if not server.wait_for_log("Server listening", timeout=10):
        run.problems.append(f"iperf3 server did not start: {server.log_text()[-300:]}")
        return
    result = topology.initiator.run(
        "iperf3", "-c", server_address, "-B", scenario.inner_address("initiator"),
        "-p", "5201", "-t", str(scenario.iperf_seconds), "-J",
        check=False, timeout=scenario.iperf_seconds + 30,
    )  # fmt: skip
    server.stop()
    try:
        report = json.loads(result.stdout)
        summary = report["end"]["sum_received"]
        run.iperf_mbps = summary["bits_per_second"] / 1e6
        run.iperf_retransmits = report["end"]["sum_sent"].get("retransmits")
    except (ValueError, KeyError) as exc:
        run.problems.append(f"iperf3 failed ({exc}): {(result.stdout + result.stderr)[-300:]}")


def _fragment_problems(peers: Mapping[Side, InteropPeer]) -> list[str]:
    problems = []
    for side, peer in peers.items():
        if not isinstance(peer, CharonPeer):
            continue
        log = peer.charon.log_text()
        if "splitting IKE message" not in log:
            problems.append(f"{side} (charon) sent no IKE fragments")
        if "reassembled fragmented IKE message" not in log:
            problems.append(f"{side} (charon) received no IKE fragments")
    return problems


def full_log(peer: InteropPeer) -> str:
    """The whole log of PEER (charon's file log, or our daemon's JSON log)."""
    if isinstance(peer, CharonPeer):
        return peer.charon.log_text()
    path = getattr(peer, "log_path", None)
    return Path(path).read_text(errors="replace") if path and Path(path).exists() else ""


_CHARON_NOTIFY_NAMES = {"NO_PROPOSAL_CHOSEN": "N(NO_PROP)", "TS_UNACCEPTABLE": "N(TS_UNACCEPT)"}


def _check_expected_failure(run: ScenarioRun, peers: Mapping[Side, InteropPeer]) -> None:
    """The exchange must have failed with scenario.expect_failure, visibly on both sides."""
    scenario = run.scenario
    notify = scenario.expect_failure
    assert notify is not None
    name = scenario.connection_name
    deadline = time.monotonic() + 5.0
    while True:
        logs = {side: full_log(peer) for side, peer in peers.items()}
        seen = [
            notify in text or _CHARON_NOTIFY_NAMES.get(notify, notify) in text
            for text in logs.values()
        ]
        if all(seen) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    for side, text in logs.items():
        # charon's message dumps abbreviate the notify: N(NO_PROP), N(TS_UNACCEPT).
        short = _CHARON_NOTIFY_NAMES.get(notify, notify)
        notify_seen = short if short in text and notify not in text else notify
        if notify_seen not in text:
            run.problems.append(f"{side} ({peers[side].implementation}): no {notify} in its log")
        else:
            line = next(x for x in text.splitlines() if notify_seen in x)
            run.notes.append(f"{side} ({peers[side].implementation}): {line.strip()[:300]}")
    for side, peer in peers.items():
        ike = peer.list_sas().get(name)
        if ike is None:
            continue
        if notify == "NO_PROPOSAL_CHOSEN" and ike.get("state") == "ESTABLISHED":
            run.problems.append(f"{side}: IKE SA established despite {notify}")
        installed = [c for c in child_sas(ike) if c.get("state") == "INSTALLED"]
        if installed:
            run.problems.append(f"{side}: Child SA installed despite {notify}")


def run_scenario(
    lab: Lab, scenario: Scenario, workdir: Path, *, key_debug: bool = False
) -> ScenarioRun:
    """Build, configure, start, initiate, ping, check. Cleanup is the Lab's job.

    ``key_debug``: charon peers log the keys they derive (to debug a key mismatch; the logs
    then hold secrets)."""
    run = ScenarioRun(scenario)
    topology = build_topology(lab, scenario)
    peers: dict[Side, InteropPeer] = {}
    pki = Pki(workdir / "pki", scenario.key_type) if scenario.auth == "pubkey" else None
    for side in ("initiator", "responder"):
        peer = make_peer(
            lab, topology.namespace(side), workdir / side, scenario, side, key_debug=key_debug
        )
        cert_file = pki.install(scenario.identity(side), workdir / side) if pki else None
        peer.start()
        peer.load(swanctl_conf(scenario, topology, side, cert_file))
        peers[side] = peer
    name = scenario.connection_name
    # Every row records the responder's outer link (IKE and ESP); kept with the logs and our
    # daemon's key tables when the row fails (wire.pcap + */keys/ open in Wireshark).
    wire = lab.capture(
        topology.responder, topology.interfaces["responder"], workdir / "wire.pcap",
        "udp or esp or icmp or icmp6",
    )  # fmt: skip
    capture = None
    if scenario.nat_rebind:
        capture = lab.capture(
            topology.responder, topology.interfaces["responder"], workdir / "rebind.pcap",
            "udp port 4500",
        )  # fmt: skip
    started = time.monotonic()
    initiators: list[Side] = ["initiator", "responder"] if scenario.collision else ["initiator"]
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        outcomes = {side: pool.submit(peers[side].initiate, name, name) for side in initiators}
    for side, outcome in outcomes.items():
        try:
            outcome.result()
        except Exception as exc:  # the failure goes into the report, with both logs
            if scenario.expect_failure is None and not scenario.collision:
                run.problems.append(f"initiate failed: {exc}")
            elif scenario.collision:
                run.notes.append(f"{side} initiate: {str(exc)[:200]}")
    if scenario.expect_failure is not None:
        _check_expected_failure(run, peers)
        for side, peer in peers.items():
            run.logs[side] = peer.log_tail(60)
        wire.stop()
        return run
    run.initiator_sas = _wait_established(peers["initiator"], name, scenario.establish_timeout)
    run.establish_seconds = time.monotonic() - started
    run.responder_sas = _wait_established(peers["responder"], name, 5.0)
    if scenario.collision:
        # Two IKE SAs of one name may exist (RFC 7296 sec. 2.8 allows duplicates); list-sas
        # views merge by name, so the check is: a Child SA with crosswise SPIs, and traffic.
        time.sleep(1.0)  # let the peers settle the duplicates they delete
        run.initiator_sas = peers["initiator"].list_sas()
        run.responder_sas = peers["responder"].list_sas()
        spis_i = _installed_spis(run.initiator_sas, name)
        spis_r = {(o, i) for i, o in _installed_spis(run.responder_sas, name)}
        run.notes.append(f"after the collision: initiator {spis_i}, responder (out/in) {spis_r}")
        if not spis_i or not spis_r:
            run.problems.append("collision: no installed Child SA on one side")
    else:
        run.problems += check_sa_pair(scenario, run.initiator_sas, run.responder_sas)
    if scenario.expect_ike_fragments:
        run.problems += _fragment_problems(peers)
    if not run.problems:
        run.ping = ping_through(topology, scenario.ping_count)
        if scenario.loss_percent == 0 and run.ping.received != run.ping.transmitted:
            run.problems.append(f"ping: {run.ping.received}/{run.ping.transmitted} received")
        elif run.ping.received == 0:
            run.problems.append("ping: nothing came back through the tunnel")
        if capture is not None and not run.problems:
            _rebind(run, topology, peers, capture)
        if scenario.keep_alive is not None and scenario.nat and not run.problems:
            _count_keepalives(run, lab, topology, workdir)
        if scenario.iperf_seconds > 0 and not run.problems:
            _iperf(run, lab, topology, workdir)
        # The views after the pings (counters), before any action changes or deletes the SAs.
        run.initiator_sas = peers["initiator"].list_sas()
        run.responder_sas = peers["responder"].list_sas()
        if run.ping is not None and not run.problems and not scenario.collision:
            run.problems += esp_counter_problems(
                scenario, run.initiator_sas, run.responder_sas, run.ping.received
            )
        background = None
        if scenario.ping_during_actions and not run.problems:
            background = _start_background_ping(lab, topology, workdir / "ping-during.log")
        for action in scenario.actions:
            if run.problems:
                break
            _run_action(run, topology, peers, action)
        if background is not None:
            replies, lost = _lost_echoes(background, workdir / "ping-during.log")
            run.notes.append(f"ping during the actions: {replies} replies, lost {lost}")
            if lost or not replies:
                run.problems.append(
                    f"echoes lost during the actions: icmp_seq {lost} ({replies} replies)"
                )
    for side, peer in peers.items():
        run.logs[side] = peer.log_tail(60)
    wire.stop()
    return run
