"""``aioipsec decode`` on a capture of a real run of two aioipsec daemons (network
namespaces, veth, TUN) with ``--save-keys``, frame by frame against tshark reading the
same capture with the same two key files: IKE_SA_INIT, IKE_AUTH, CREATE_CHILD_SA (Child
and IKE rekey), INFORMATIONAL, and ESP (raw and UDP-encapsulated) with pings inside."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from aioipsec.decode import decode_capture
from aioipsec.netns import Lab
from aioipsec.wireshark_keys import load_esp_table, load_ikev2_table
from tests.e2e.helpers import OurDaemon, Side, assert_ping, requirements_or_skip, toml_config
from tests.teaching.compare import compare_frame
from tests.teaching.tshark_oracle import tshark_frames

pytestmark = [pytest.mark.netns, pytest.mark.timeout(150)]

LEFT = Side("teach", "192.168.61.1", "10.1.0.1", "10.1.0.0/24", "192.168.61.2", "10.2.0.0/24",
            "left.example", "right.example")  # fmt: skip
RIGHT = Side("teach", "192.168.61.2", "10.2.0.1", "10.2.0.0/24", "192.168.61.1", "10.1.0.0/24",
             "right.example", "left.example")  # fmt: skip


def _wait_for_rekey(daemon: OurDaemon, before: set[str], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ike = daemon.sas().get("teach", {})
        spis = {c.get("spi-in") for c in (ike.get("child-sas") or {}).values()}
        if ike.get("state") == "ESTABLISHED" and spis and not spis & before:
            return
        time.sleep(0.1)
    raise AssertionError(f"no rekeyed Child SA:\n{daemon.log_tail()}")


@pytest.mark.parametrize("encap", [False, True], ids=["raw-esp", "udp-encap"])
def test_capture_of_our_daemons_decodes_like_tshark(encap: bool) -> None:
    requirements_or_skip("tcpdump", "tshark")
    # short path: AF_UNIX control socket paths hold at most 107 octets
    workdir = Path(tempfile.mkdtemp(prefix=f"teach-{os.getpid()}-", dir="/tmp"))
    try:
        with Lab("teach") as lab:
            left_ns, right_ns = lab.namespace("left"), lab.namespace("right")
            left_dev, _ = lab.veth(left_ns, f"{LEFT.outer}/24", right_ns, f"{RIGHT.outer}/24")
            left_ns.add_address("lo", f"{LEFT.inner}/32")
            right_ns.add_address("lo", f"{RIGHT.inner}/32")
            keys = workdir / "keys"
            daemons = {}
            for name, side, namespace, extra in (
                ("right", RIGHT, right_ns, []),
                ("left", LEFT, left_ns, ["--save-keys", str(keys)]),
            ):
                directory = workdir / name
                directory.mkdir(exist_ok=True)
                config = toml_config(side, directory, encap=encap)
                daemons[name] = OurDaemon(lab, namespace, config, directory, extra)
                daemons[name].start()
            left = daemons["left"]
            pcap = workdir / "wire.pcap"
            capture = lab.capture(left_ns, left_dev, pcap, "ip")
            try:
                left.call("initiate", child="net", timeout=30)
                ike = left.wait_for_child("teach")
                assert_ping(left_ns, LEFT.inner, RIGHT.inner, count=2)
                before = {c.get("spi-in") for c in ike["child-sas"].values()}
                left.call("rekey", child="net")
                _wait_for_rekey(left, before)
                left.call("rekey", ike="teach")
                time.sleep(1.0)
                assert_ping(left_ns, LEFT.inner, RIGHT.inner, count=2)
                left.call("terminate", ike="teach")
                time.sleep(1.0)
            finally:
                capture.stop()
                for daemon in daemons.values():
                    daemon.stop()
        ike_table = (keys / "ikev2_decryption_table").read_text()
        esp_table = (keys / "esp_sa").read_text()
        ours = list(decode_capture(pcap, load_ikev2_table(keys / "ikev2_decryption_table"),
                                   load_esp_table(keys / "esp_sa")))  # fmt: skip
        theirs = tshark_frames(pcap, ike_table, esp_table)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    assert [r["frame"] for r in ours] == sorted(theirs)
    problems = [p for record in ours for p in compare_frame(record, theirs[record["frame"]])]
    assert problems == []
    ike = [r for r in ours if r["kind"] == "ike"]
    esp = [r for r in ours if r["kind"] == "esp"]
    exchanges = {r["exchange"] for r in ike}
    assert exchanges == {"IKE_SA_INIT", "IKE_AUTH", "CREATE_CHILD_SA", "INFORMATIONAL"}
    # every protected IKE message and every ESP packet was decrypted by us, as by tshark
    assert all(r["decrypted"] for r in ike if r["exchange"] != "IKE_SA_INIT"), ike
    assert len(esp) >= 8 and all(r["decrypted"] for r in esp), esp
    assert all(r.get("udp_encap", False) == encap for r in esp)
    assert all(r["non_esp_marker"] == (encap and r["exchange"] != "IKE_SA_INIT") for r in ike)
    summaries = [r["inner_summary"] for r in esp]
    assert sum("ICMP echo request" in s for s in summaries) >= 4
    assert sum("ICMP echo reply" in s for s in summaries) >= 4
    # the IKE rekey's new SA was decrypted with its own row (two IKE SAs in the table)
    assert len({(r["spi_i"], r["spi_r"]) for r in ike if r["exchange"] == "INFORMATIONAL"}) >= 1
    assert len(load_ikev2_table_text(ike_table)) == 2
    print(f"{len(ike)} IKE and {len(esp)} ESP frames agree with tshark: {sorted(exchanges)}")


def load_ikev2_table_text(text: str) -> list:
    from aioipsec.wireshark_keys import parse_ikev2_table

    return parse_ikev2_table(text)
