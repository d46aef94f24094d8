"""strongSwan charon <-> charon in two namespaces: the reference peer works here.

PSK, IKE aes256gcm16-prfsha256-x25519, ESP aes256gcm16, subnet to subnet (10.1.0.0/24 ===
10.2.0.0/24) through kernel-libipsec's ipsec0 TUN devices. Checks both sides over VICI, pings
through the tunnel, and reads the wire with tshark: only IKE and ESP-in-UDP, no plain ICMP.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from aioipsec.interop.checks import check_sa_pair
from aioipsec.interop.peers import CharonPeer, swanctl_conf
from aioipsec.interop.runner import run_scenario
from aioipsec.interop.scenario import Scenario
from aioipsec.interop.topology import build_topology
from aioipsec.interop.traffic import ping_through
from aioipsec.netns import Lab
from tests.interop.charon_pair import workdir_for

pytestmark = [
    pytest.mark.interop,
    pytest.mark.needs("root", "charon"),
]


@pytest.fixture
def workdir() -> Iterator[Path]:
    # Short path: the VICI socket lives here and AF_UNIX paths hold 107 octets.
    with workdir_for("ci") as path:
        yield path


def _tshark_count(capture: Path, display_filter: str) -> int:
    result = subprocess.run(
        [
            "tshark",
            "-n",
            "-r",
            str(capture),
            "-Y",
            display_filter,
            "-T",
            "fields",
            "-e",
            "frame.number",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return len(result.stdout.split())


def _ike_messages(capture: Path, port: int) -> set[tuple[str, str, str]]:
    """(exchange type, message ID, response flag) of the IKE messages on PORT."""
    result = subprocess.run(
        [
            "tshark",
            "-n",
            "-r",
            str(capture),
            "-Y",
            f"udp.port == {port} && isakmp",
            "-T",
            "fields",
            "-e",
            "isakmp.exchangetype",
            "-e",
            "isakmp.messageid",
            "-e",
            "isakmp.flag_r",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    messages = set()
    for line in result.stdout.splitlines():
        exchange, message_id, response = line.split("\t")
        messages.add((exchange, str(int(message_id, 0)), "1" if response in ("1", "True") else "0"))
    return messages


@pytest.mark.timeout(90)
def test_charon_to_charon_psk_gcm_x25519(workdir):
    scenario = Scenario()
    with Lab("cb") as lab:
        topology = build_topology(lab, scenario)
        peers = {}
        for side in ("initiator", "responder"):
            peer = CharonPeer(lab, topology.namespace(side), workdir / side)
            peer.start()
            peer.load(swanctl_conf(scenario, topology, side))
            peers[side] = peer
        capture = lab.capture(
            topology.initiator, topology.interfaces["initiator"], workdir / "wire.pcap"
        )

        started = time.monotonic()
        peers["initiator"].initiate(scenario.connection_name, scenario.connection_name)
        establish = time.monotonic() - started
        sas_i = peers["initiator"].list_sas()
        sas_r = peers["responder"].list_sas()
        assert check_sa_pair(scenario, sas_i, sas_r) == [], (sas_i, sas_r)

        ping = ping_through(topology, scenario.ping_count)
        assert ping.received == ping.transmitted == scenario.ping_count, ping.output
        time.sleep(0.2)  # let tcpdump write the last frames
        capture.stop()

        # Both sides counted the pings (ICMP echo 84 octets, plus the ESP trailer is not
        # counted: bytes are inner bytes).
        child_i = next(iter(peers["initiator"].list_sas()["baseline"]["child-sas"].values()))
        child_r = next(iter(peers["responder"].list_sas()["baseline"]["child-sas"].values()))
        assert int(child_i["packets-out"]) == int(child_r["packets-in"]) == scenario.ping_count
        assert int(child_r["packets-out"]) == int(child_i["packets-in"]) == scenario.ping_count

    wire = workdir / "wire.pcap"
    assert _tshark_count(wire, "icmp") == 0  # no plaintext ping on the wire
    # IKE_SA_INIT on 500, IKE_AUTH on 4500 behind the non-ESP marker (a retransmission under
    # load repeats a message, which is fine: compare the set of distinct messages).
    assert _ike_messages(wire, 500) == {("34", "0", "1"), ("34", "0", "0")}
    # charon may also run an INFORMATIONAL exchange on 4500 (a liveness check or the DELETE
    # of the teardown when the capture is slow to stop on a loaded machine): allowed, as long
    # as IKE_AUTH is there and nothing else is.
    on_4500 = _ike_messages(wire, 4500)
    assert {("35", "1", "1"), ("35", "1", "0")} <= on_4500
    assert {exchange for exchange, _, _ in on_4500} <= {"35", "37"}, on_4500
    esp_frames = _tshark_count(wire, "udp.port == 4500 && esp")
    assert esp_frames == 2 * scenario.ping_count
    spis = subprocess.run(
        ["tshark", "-n", "-r", str(wire), "-Y", "esp", "-T", "fields", "-e", "esp.spi"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split()
    wire_spis = {int(s, 16) for s in spis}
    assert wire_spis == {int(child_i["spi-in"], 16), int(child_i["spi-out"], 16)}
    print(
        f"establish {establish * 1000:.1f} ms (swanctl --initiate wall), "
        f"ping avg {ping.rtt_avg_ms} ms"
    )


@pytest.mark.timeout(120)
def test_charon_to_charon_through_nat_router(workdir):
    """The same through a masquerading router: the harness's NAT topology and run_scenario."""
    scenario = Scenario(name="nat", nat=True)
    with Lab("cn") as lab:
        run = run_scenario(lab, scenario, workdir)
        assert run.problems == [], (run.problems, run.logs)
        assert run.ping is not None and run.ping.received == scenario.ping_count
        ike_r = run.responder_sas["nat"]
        # The responder sees the NAT's public address, not the initiator's private one.
        assert ike_r["remote-host"] == "10.200.0.254"
        assert run.initiator_sas["nat"]["local-host"] == "192.168.100.1"
        assert run.initiator_sas["nat"].get("nat-local") == "yes"
