"""Interop scenarios: what one row runs, and the record of its run.

A :class:`Scenario` says who talks to whom (roles and implementations), how they
authenticate, which IKE and ESP proposals they offer, which subnets they protect, whether a
NAT sits between them and how much loss the path has, and which actions (rekey, terminate,
lifetimes, a vanishing peer) follow. The other modules of :mod:`aioipsec.interop` take it
from here (docs/interop-harness.md):

* :mod:`~aioipsec.interop.topology` builds the namespaces (:func:`build_topology`);
* :mod:`~aioipsec.interop.peers` writes each side's swanctl.conf and starts charon or our
  daemon (:func:`make_peer`);
* :mod:`~aioipsec.interop.traffic` pings, runs iperf3, watches NAT rebinding and keepalives;
* :mod:`~aioipsec.interop.checks` compares both peers' VICI ``list-sas`` views
  (:func:`check_sa_pair`): the same check serves both implementations;
* :mod:`~aioipsec.interop.runner` runs one scenario end to end (:func:`run_scenario`).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from aioipsec.netns import Namespace

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
# The jitter subtracted from LIFETIME. Both charon and our daemon default rand_time to
# over_time (10 s, capped at the 4 s lifetime), so a rekey or reauthentication could fire
# at once: a reauthentication 0.24 s after IKE_AUTH replaced the Child SA during the
# first ping, and the ESP counter check then saw 1 packet for 3 echo replies.
RAND_TIME = "1s"
DPD_DELAY = "1s"

NAT_REBIND_TIMEOUT = 1  # seconds an idle UDP mapping survives in the rebinding NAT
NAT_REBIND_PAUSE = 3.0  # seconds without traffic: the mapping is gone
Side = Literal["initiator", "responder"]


@dataclass(frozen=True)
class Scenario:
    """One interop case. Defaults: the baseline (PSK, AES-GCM-256, X25519, subnet to subnet)."""

    name: str = "baseline"
    initiator: Implementation = "charon"
    responder: Implementation = "charon"
    auth: Literal["psk", "pubkey"] = "psk"
    key_type: Literal["rsa", "ecdsa", "ed25519"] = "ecdsa"  # with auth="pubkey" (pki --gen)
    # With auth="pubkey": our daemon's key is made inside a SoftHSM2 token, an swtpm, or
    # an swtpm used as a PKCS#11 module (libtpm2-pkcs11) (ecdsa: P-256, rsa: RSA-3072) and
    # never leaves it (aioipsec/interop/tokens.py).
    token: Literal["", "softhsm", "tpm", "tpm-pkcs11"] = ""
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
    # With auth="pubkey": the strongSwan peer's certificate names a CRL distribution point
    # ("crl") or an OCSP responder ("ocsp") served from its namespace
    # (aioipsec/interop/revocation.py); our daemon checks it with revocation = strict.
    # revoked=True: that certificate is revoked, and our daemon must refuse it.
    revocation: Literal["", "crl", "ocsp"] = ""
    revoked: bool = False
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
        if self.revocation and (
            self.auth != "pubkey"
            or sorted((self.initiator, self.responder)) != ["aioipsec", "charon"]
        ):
            raise ValueError("revocation rows need auth=pubkey, our daemon and charon")
        if self.revoked and not self.revocation:
            raise ValueError("revoked needs revocation = crl or ocsp")
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


@dataclass(frozen=True)
class PingResult:
    transmitted: int
    received: int
    rtt_avg_ms: float | None
    output: str


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
    # What a scripted row (aioipsec.interop.scripted) checked, for the table's details column.
    details: list[str] = field(default_factory=list)
    action_seconds: dict[str, float] = field(default_factory=dict)
    keepalives_seen: int | None = None  # from the NAT to the responder while idle
    iperf_mbps: float | None = None
    iperf_retransmits: int | None = None
    pings_after_actions: dict[str, PingResult] = field(default_factory=dict)
    initiator_sas: dict[str, Any] = field(default_factory=dict)
    responder_sas: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    logs: dict[str, str] = field(default_factory=dict)
