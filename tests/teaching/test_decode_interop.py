"""``aioipsec decode`` on captures of our interop runs: our daemon against strongSwan's
charon (kernel-libipsec, which always uses UDP encapsulation) in both roles, with the key
tables our daemon writes with ``--save-keys``. Frame by frame the same as tshark with the
same keys: exchanges, Message IDs, flags, payload lists including charon's encrypted
payloads, notifies, ESP SPIs/sequence numbers and the decrypted inner packets."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from aioipsec.decode import decode_capture
from aioipsec.interop.ours import AioipsecPeer
from aioipsec.interop.peers import make_peer, swanctl_conf
from aioipsec.interop.scenario import Scenario
from aioipsec.interop.topology import build_topology
from aioipsec.interop.traffic import ping_through
from aioipsec.netns import Lab
from aioipsec.wireshark_keys import load_esp_table, load_ikev2_table
from tests.teaching.compare import compare_frame
from tests.teaching.tshark_oracle import tshark_frames

pytestmark = [
    pytest.mark.interop,
    pytest.mark.netns,
    pytest.mark.timeout(180),
    pytest.mark.needs("root", "charon", "tshark"),
]


class _LabWithArgs:
    """The Lab, but processes it starts get extra arguments (``--save-keys DIR``): the
    harness's own aioipsec peer, unchanged, with key export on."""

    def __init__(self, lab: Lab, extra: list[str]) -> None:
        self._lab, self._extra = lab, extra

    def start(self, namespace: Any, argv: list[str], **kwargs: Any) -> Any:
        return self._lab.start(namespace, [*argv, *self._extra], **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._lab, name)


def _wait(peer: Any, name: str, predicate: Any, timeout: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    sas: dict[str, Any] = {}
    while time.monotonic() < deadline:
        sas = peer.list_sas()
        if predicate(sas.get(name)):
            return sas
        time.sleep(0.2)
    raise AssertionError(f"timeout waiting on {name}: {sas}\n{peer.log_tail()}")


def _established(ike: dict[str, Any] | None) -> bool:
    return bool(ike) and ike.get("state") == "ESTABLISHED" and bool(ike.get("child-sas"))


@pytest.mark.parametrize("ours", ["initiator", "responder"])
def test_interop_capture_decodes_like_tshark(ours: str) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="aioipsec-dx-", dir="/tmp"))
    keys = workdir / "keys"
    scenario = Scenario(
        name="decode",
        initiator="aioipsec" if ours == "initiator" else "charon",
        responder="aioipsec" if ours == "responder" else "charon",
    )

    def factory(lab, namespace, directory, scenario, side):
        return AioipsecPeer(_LabWithArgs(lab, ["--save-keys", str(keys)]), namespace, directory)

    name = scenario.connection_name
    try:
        with Lab("dx") as lab:
            topology = build_topology(lab, scenario)
            peers = {}
            for side in ("initiator", "responder"):
                peer = make_peer(lab, topology.namespace(side), workdir / side, scenario, side,
                                 aioipsec_factory=factory)  # fmt: skip
                peer.start()
                peer.load(swanctl_conf(scenario, topology, side, None))
                peers[side] = peer
            pcap = workdir / "wire.pcap"
            capture = lab.capture(topology.initiator, topology.interfaces["initiator"], pcap,
                                  "udp port 500 or udp port 4500 or esp")  # fmt: skip
            try:
                peers["initiator"].initiate(name, name)
                sas = _wait(peers["initiator"], name, _established)
                assert ping_through(topology, 2).received == 2
                # charon rekeys the Child SA, our side the IKE SA (or the other way round)
                before = set(sas[name]["child-sas"])
                peers["responder"].rekey(ike=name, child=name)
                rekeyed = lambda ike: _established(ike) and set(ike["child-sas"]) != before  # noqa: E731
                _wait(peers["initiator"], name, rekeyed)
                peers["initiator"].rekey(ike=name)
                time.sleep(2.0)
                assert ping_through(topology, 2).received == 2
                peers["initiator"].terminate(name)
                time.sleep(1.0)
            finally:
                capture.stop()
                for peer in peers.values():
                    peer.stop()
        ike_table, esp_table = keys / "ikev2_decryption_table", keys / "esp_sa"
        records = list(decode_capture(pcap, load_ikev2_table(ike_table),
                                      load_esp_table(esp_table)))  # fmt: skip
        theirs = tshark_frames(pcap, ike_table.read_text(), esp_table.read_text())
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    assert [r["frame"] for r in records] == sorted(theirs)
    problems = [p for r in records for p in compare_frame(r, theirs[r["frame"]])]
    assert problems == []
    ike = [r for r in records if r["kind"] == "ike"]
    esp = [r for r in records if r["kind"] == "esp"]
    assert {r["exchange"] for r in ike} == {
        "IKE_SA_INIT", "IKE_AUTH", "CREATE_CHILD_SA", "INFORMATIONAL",
    }  # fmt: skip
    assert all(r["decrypted"] for r in ike if r["exchange"] != "IKE_SA_INIT"), ike
    # charon's messages too: both the initiator and the responder flag appear decrypted
    senders = {r["initiator"] for r in ike if r.get("decrypted")}
    assert senders == {True, False}
    assert len(esp) >= 8 and all(r["decrypted"] and r["udp_encap"] for r in esp), esp
    print(f"ours={ours}: {len(ike)} IKE and {len(esp)} ESP frames agree with tshark")
