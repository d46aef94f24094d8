"""RFC 6023 childless IKE SAs against a real charon (strongSwan's ``childless``).

Both directions: one side initiates with ``childless = force`` (IKE_AUTH without a Child
SA, the Child SA in CREATE_CHILD_SA), the other answers with the default ``allow``. The
check is charon's own view: its log names the exchanges it parsed, and its list-sas
shows the Child SA installed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from aioipsec.interop.charon import Charon
from aioipsec.interop.ours import AioipsecPeer
from aioipsec.interop.peers import swanctl_conf
from aioipsec.interop.scenario import Scenario
from aioipsec.interop.topology import build_topology
from aioipsec.netns import Lab
from tests.interop.charon_pair import wait_child, workdir_for

pytestmark = [pytest.mark.interop, pytest.mark.needs("root", "charon")]


@pytest.fixture
def workdir() -> Iterator[Path]:
    with workdir_for("childless") as path:
        yield path


def _childless(conf: str, mode: str) -> str:
    changed = conf.replace(
        "        version = 2\n", f"        version = 2\n        childless = {mode}\n"
    )
    assert changed != conf, conf
    return changed


def _run(workdir: Path, initiator: str) -> str:
    """``initiator`` (aioipsec or charon) forces childless, the other side allows it; both
    end with the Child SA installed. Returns charon's log."""
    responder = "charon" if initiator == "aioipsec" else "aioipsec"
    scenario = Scenario(name=f"cl{initiator[0]}", initiator=initiator, responder=responder)
    name = scenario.connection_name
    with Lab(scenario.name) as lab:
        topology = build_topology(lab, scenario)
        roles = {"initiator": topology.initiator, "responder": topology.responder}
        charon_role = "responder" if initiator == "aioipsec" else "initiator"
        ours_role = "initiator" if charon_role == "responder" else "responder"
        charon = Charon(lab, roles[charon_role], workdir / charon_role)
        charon.start()
        ours = AioipsecPeer(lab, roles[ours_role], workdir / ours_role)
        confs = {role: swanctl_conf(scenario, topology, role) for role in roles}
        confs["initiator"] = _childless(confs["initiator"], "force")
        charon.load(confs[charon_role])
        ours.load(confs[ours_role])
        try:
            if initiator == "aioipsec":
                ours.call("initiate", ike=name, child=name, timeout=30.0)
            else:
                charon.initiate(name, ike=name, timeout=30)
            wait_child(charon, name)
            wait_child(ours, name)
            return charon.log_text()
        finally:
            ours.stop()


def _assert_childless(log: str, verb: str) -> None:
    """charon's log (``verb``: parsed, or generating when charon initiated): IKE_AUTH
    carried no SA/TS (RFC 6023 sec. 4); the Child SA came in CREATE_CHILD_SA."""
    auth = next(line for line in log.splitlines() if f"{verb} IKE_AUTH request 1" in line)
    assert " SA " not in auth and "TSi" not in auth, auth
    assert f"{verb} CREATE_CHILD_SA request 2" in log, log[-3000:]


@pytest.mark.timeout(120)
def test_we_force_childless_charon_allows(workdir: Path) -> None:
    _assert_childless(_run(workdir, "aioipsec"), "parsed")


@pytest.mark.timeout(120)
def test_charon_forces_childless_we_allow(workdir: Path) -> None:
    _assert_childless(_run(workdir, "charon"), "generating")
