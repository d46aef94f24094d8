"""Half-open SA limits without a lock-out (issue 13, F2), on the sans-I/O engine.

An attacker with many addresses that answer COOKIEs (so the cookie check does not stop
it) fills the half-open table. Before F2 the table was a hard cap: every IKE_SA_INIT was
dropped while it was full, a configured peer's included. Now a prefix crowds out only
itself, a full table evicts the most-represented prefix's oldest SA, and a configured
peer's address is preferred. Fragment reassembly memory is bounded for all SAs together.
The same attack against the running daemon over real sockets: test_half_open_attack.py.
"""

from __future__ import annotations

import dataclasses
import struct

from ikev2.config import DispatcherConfig
from ikev2.errors import ProtocolError
from ikev2.fragments import Reassembler, ReassemblyBudget
from ikev2.message import parse_message
from tests.engine.harness import ADDR_B, Network, make_pair
from tests.engine.test_bad_inputs import assert_still_works, init_request
from tests.test_fragments import auth_payloads, cipher_pair, fragments

B = (ADDR_B, 500)
# No cookies here (the attacker answers them anyway): what is left is the table itself.
LIMITS = DispatcherConfig(
    cookie_threshold=10**6,
    cookie_threshold_ip=10**6,
    block_threshold=5,
    init_limit_half_open=60,
    half_open_per_prefix=20,
)


def roadwarrior_pair() -> Network:
    """B serves A as a configured peer ("conn") and anyone else ("rw", %any)."""
    net = make_pair()
    rw = dataclasses.replace(net.b.configs[0], name="rw", remote_addrs=["%any"])
    net.b.set_configs([*net.b.configs, rw])
    net.b.limits = LIMITS
    return net


def flood(net: Network, hosts: list[str], per_host: int, first_spi: int = 1) -> int:
    spi = first_spi
    for _ in range(per_host):
        for host in hosts:
            net.b.receive_datagram(init_request(struct.pack("!Q", spi)), (host, 500), B, net.now)
            spi += 1
    net.b.datagrams_to_send(net.now)
    return spi


def half_open_hosts(net: Network) -> list[str]:
    return [sa.remote_addr[0] for sa in net.b.sas() if sa.state != "ESTABLISHED"]


def test_a_full_table_does_not_lock_a_configured_peer_out() -> None:
    net = roadwarrior_pair()
    # 200 attacker addresses in 20 /24s, 5 SPIs each: 1000 requests for a table of 60.
    attackers = [f"198.18.{n // 10}.{n % 10 + 1}" for n in range(200)]
    flood(net, attackers, per_host=5)
    assert len(half_open_hosts(net)) == LIMITS.init_limit_half_open
    assert net.b.counters["half_open_evicted"] > 0
    # The configured peer (A) establishes while the table is full ...
    assert_still_works(net)
    # ... and so does an unconfigured address of a prefix the attacker does not use.
    rw = net.b.half_open_by_prefix()
    assert "preferred" not in rw  # A's SA is established, no longer half-open
    assert max(rw.values()) <= LIMITS.half_open_per_prefix


def test_one_prefix_crowds_out_only_itself() -> None:
    net = roadwarrior_pair()
    # 50 addresses in one /24, 5 SPIs each (the per-address block_threshold).
    flood(net, [f"203.0.113.{n}" for n in range(1, 51)], per_host=5)
    counts = net.b.half_open_by_prefix()
    assert counts == {"203.0.113.0/24": LIMITS.half_open_per_prefix}
    # Another prefix still gets its half-open SAs: the attacker's prefix is full, not the table.
    flood(net, ["192.0.2.77"], per_host=3, first_spi=10_000)
    assert net.b.half_open_by_prefix()["192.0.2.0/24"] == 3


def test_an_ipv6_64_is_one_prefix() -> None:
    """IPv6 addresses cost nothing: 50 addresses of one /64 count as one prefix."""
    net = roadwarrior_pair()
    flood(net, [f"2001:db8:0:7::{n:x}" for n in range(1, 51)], per_host=5)
    flood(net, ["2001:db8:0:8::1"], per_host=2, first_spi=10_000)
    assert net.b.half_open_by_prefix() == {
        "2001:db8:0:7::/64": LIMITS.half_open_per_prefix,
        "2001:db8:0:8::/64": 2,
    }


def test_full_table_evicts_the_most_represented_prefix_first() -> None:
    net = roadwarrior_pair()
    big = [f"198.18.0.{n}" for n in range(1, 5)]  # 4 addresses x 5 = 20 (its prefix limit)
    small = [f"198.19.{n}.1" for n in range(40)]  # 40 prefixes, one SA each
    flood(net, big, per_host=5)
    flood(net, small, per_host=1, first_spi=1000)
    assert len(half_open_hosts(net)) == LIMITS.init_limit_half_open
    # One more request: the victim is from the biggest prefix (the oldest there), never
    # one of the single-SA prefixes.
    flood(net, ["203.0.113.9"], per_host=1, first_spi=5000)
    counts = net.b.half_open_by_prefix()
    assert counts["198.18.0.0/24"] == 19
    assert all(counts[f"198.19.{n}.0/24"] == 1 for n in range(40))
    assert counts["203.0.113.0/24"] == 1


def test_configured_peers_half_open_sas_are_not_evicted_by_others() -> None:
    net = roadwarrior_pair()
    net.b.limits = dataclasses.replace(LIMITS, init_limit_half_open=10)
    # A (the configured peer) opens 3 half-open SAs that stay half-open (no IKE_AUTH).
    flood(net, ["192.0.2.1"], per_host=3)
    assert net.b.half_open_by_prefix() == {"preferred": 3}
    # Attackers fill and churn the table: A's SAs stay.
    flood(net, [f"198.18.{n}.1" for n in range(30)], per_host=2, first_spi=100)
    counts = net.b.half_open_by_prefix()
    assert counts["preferred"] == 3
    assert sum(counts.values()) == 10


def test_reassembly_memory_is_bounded_in_total() -> None:
    """Many SAs (keys known to the attacker) each collecting a large fragmented message:
    together they hold at most the shared budget; a completed or dropped message gives
    its octets back, and a forgotten SA releases its share."""
    ours, peers = cipher_pair()
    budget = ReassemblyBudget(20_000)
    datagrams = fragments(ours, max_size=600, cert_size=4000)
    assert len(datagrams) >= 8
    reassemblers = [Reassembler(budget=budget, owner=n) for n in range(20)]
    refused = 0
    for reassembler in reassemblers:
        for data in datagrams[:-1]:  # never the last fragment: held until expiry
            try:
                reassembler.add(parse_message(data), peers, 0.0)
            except ProtocolError:
                refused += 1
    assert budget.held <= 20_000
    assert refused > 0 and budget.refused == refused
    # A forgotten SA gives its share back; another SA's whole message then fits.
    held = budget.held
    budget.release(0)
    budget.release(1)
    assert budget.held < held
    fresh = Reassembler(budget=budget, owner=99)
    whole = None
    for data in datagrams:
        whole = fresh.add(parse_message(data), peers, 0.0)
    assert whole is not None
    assert [type(p) for p in whole.payloads] == [type(p) for p in auth_payloads(4000)]
    # Expiry gives octets back too.
    for reassembler in reassemblers:
        reassembler.expire(1000.0)
    assert budget.held == 0
