"""NAT detection with ``local_addrs = %any`` and nothing between the peers (issue 19).

Our daemon initiates from a namespace whose swanctl.conf leaves ``local_addrs`` at
strongSwan's default ``%any``. NAT_DETECTION_SOURCE_IP must hash the address the
IKE_SA_INIT request leaves from (RFC 7296 sec. 2.23), which the daemon asks the routing
table for; before the fix it hashed 0.0.0.0 and charon logged "remote host is behind NAT".

Two charons answer:

* the usual one with kernel-libipsec: it always fakes a NAT (a random source hash, its
  ``nat-fake``), so only charon's view of *us* can be checked there: no ``nat-remote`` or
  ``nat-local`` on its side, and no ``nat-local`` (no keepalives) on ours;
* one without kernel-libipsec (IKE only; this kernel has no ESP, so its Child SA cannot be
  installed and it refuses the child): it sends real hashes, so neither side may see a NAT.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

from aioipsec.interop.charon import DEFAULT_CHARON_PLUGINS, Charon
from aioipsec.interop.ours import AioipsecPeer
from aioipsec.interop.peers import swanctl_conf
from aioipsec.interop.scenario import Scenario
from aioipsec.interop.topology import build_topology
from aioipsec.netns import Lab
from tests.interop.charon_pair import wait_ike

pytestmark = [pytest.mark.interop, pytest.mark.needs("root", "charon")]

# charon's "nat-any" is set by its faked NAT too (any of here, there, fake).
NAT_FLAGS = ("nat-local", "nat-remote")


@pytest.fixture
def workdir():
    path = Path(tempfile.mkdtemp(prefix="aioipsec-natd-", dir="/tmp"))
    yield path
    if os.environ.get("AIOIPSEC_KEEP_WORKDIR") != "1":
        shutil.rmtree(path, ignore_errors=True)


def _with_any_local(conf: str) -> str:
    """The initiator's swanctl.conf with local_addrs at strongSwan's default (%any)."""
    changed, count = re.subn(r"(?m)^(\s*local_addrs\s*=).*$", r"\1 %any", conf)
    assert count == 1, conf
    return changed


def _wait_ike(peer: Any, name: str, timeout: float = 15.0) -> dict[str, Any]:
    return wait_ike(peer, name, timeout)


def _run(workdir: Path, plugins: str, prefix: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    scenario = Scenario(name="natd", initiator="aioipsec", responder="charon")
    name = scenario.connection_name
    with Lab(prefix) as lab:
        topology = build_topology(lab, scenario)
        charon = Charon(lab, topology.responder, workdir / "responder", plugins=plugins)
        charon.start()
        charon.load(swanctl_conf(scenario, topology, "responder"))
        ours = AioipsecPeer(lab, topology.initiator, workdir / "initiator")
        ours.load(_with_any_local(swanctl_conf(scenario, topology, "initiator")))
        try:
            ours.call("initiate", ike=name, child=name, timeout=20.0)
        except Exception:
            pass  # without kernel-libipsec charon refuses the Child SA; the IKE SA stays
        theirs = _wait_ike(charon, name)
        mine = _wait_ike(ours, name)
        log = charon.log_text()
        ours.stop()
    return mine, theirs, log


@pytest.mark.timeout(90)
def test_any_local_address_no_nat_with_kernel_libipsec(workdir):
    mine, theirs, log = _run(workdir, DEFAULT_CHARON_PLUGINS, "na")
    # Our source and destination hashes both matched on charon's side.
    assert not any(theirs.get(flag) == "yes" for flag in NAT_FLAGS), {
        k: v for k, v in theirs.items() if k.startswith("nat")
    }
    assert theirs.get("nat-fake") == "yes", theirs  # kernel-libipsec's own faked NAT
    assert "remote host is behind NAT" not in log
    # charon hashed our real address: we do not think we are behind a NAT.
    assert mine.get("local-host") == "10.200.0.1", mine
    assert mine.get("nat-local") != "yes", mine
    # charon's random source hash: we see its faked NAT and move to 4500 as it expects.
    assert mine.get("nat-remote") == "yes", mine
    assert mine.get("local-port") == "4500", mine


@pytest.mark.timeout(90)
def test_any_local_address_no_nat_either_side(workdir):
    plugins = DEFAULT_CHARON_PLUGINS.replace(" kernel-libipsec", "")
    assert plugins != DEFAULT_CHARON_PLUGINS
    mine, theirs, log = _run(workdir, plugins, "nb")
    flags = (*NAT_FLAGS, "nat-fake", "nat-any")
    assert not any(theirs.get(flag) == "yes" for flag in flags), theirs
    assert not any(mine.get(flag) == "yes" for flag in flags), mine
    assert "behind NAT" not in log
    # No NAT, nothing forced: IKE stays on port 500 (sec. 2.23 floats only behind a NAT).
    assert mine.get("local-port") == "500" and theirs.get("local-port") == "500", (mine, theirs)
