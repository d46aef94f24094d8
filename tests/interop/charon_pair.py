"""One charon and one aioipsec daemon on the two sides of a link, for interop tests that
write their own swanctl.conf (raw public keys, PPKs): the lab, both peers, and waits on
their SA lists with generous bounds (the machine is shared)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aioipsec.interop.charon import DEFAULT_CHARON_PLUGINS, Charon
from aioipsec.interop.ours import AioipsecPeer
from aioipsec.interop.scenario import Scenario, Topology
from aioipsec.interop.topology import build_topology
from aioipsec.netns import Lab


@contextlib.contextmanager
def workdir_for(prefix: str) -> Iterator[Path]:
    """A work folder under /tmp, removed afterwards unless AIOIPSEC_KEEP_WORKDIR=1."""
    workdir = Path(tempfile.mkdtemp(prefix=f"aioipsec-{prefix}-", dir="/tmp"))
    try:
        yield workdir
    finally:
        if os.environ.get("AIOIPSEC_KEEP_WORKDIR") != "1":
            shutil.rmtree(workdir, ignore_errors=True)


@contextlib.contextmanager
def charon_and_ours(
    prefix: str, plugins: str = DEFAULT_CHARON_PLUGINS
) -> Iterator[tuple[Topology, Charon, AioipsecPeer]]:
    """charon (started) on the responder side, our daemon (not loaded) on the initiator
    side; the work folder is removed afterwards unless AIOIPSEC_KEEP_WORKDIR=1."""
    scenario = Scenario(name=prefix[:4], initiator="aioipsec", responder="charon")
    with workdir_for(prefix) as workdir, Lab(scenario.name) as lab:
        topology = build_topology(lab, scenario)
        charon = Charon(lab, topology.responder, workdir / "charon", plugins=plugins)
        ours = AioipsecPeer(lab, topology.initiator, workdir / "ours")
        try:
            yield topology, charon, ours
        finally:
            ours.stop()


def wait_ike(peer: Any, name: str, timeout: float = 20.0) -> dict[str, Any]:
    """The IKE SA ``name`` once it is ESTABLISHED (AssertionError after ``timeout``)."""
    deadline = time.monotonic() + timeout
    ike: dict[str, Any] = {}
    while time.monotonic() < deadline:
        ike = peer.list_sas().get(name, {})
        if ike.get("state") == "ESTABLISHED":
            return ike
        time.sleep(0.05)
    raise AssertionError(f"IKE SA {name} not established: {ike}")


def wait_child(peer: Any, name: str, timeout: float = 20.0) -> dict[str, Any]:
    """The IKE SA ``name`` once it is ESTABLISHED with a Child SA (AssertionError after
    ``timeout``)."""
    deadline = time.monotonic() + timeout
    ike: dict[str, Any] = {}
    while time.monotonic() < deadline:
        ike = peer.list_sas().get(name, {})
        if ike.get("state") == "ESTABLISHED" and ike.get("child-sas"):
            return ike
        time.sleep(0.1)
    raise AssertionError(f"no Child SA under {name}: {ike}")


def wait_gone(peer: Any, name: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and peer.list_sas().get(name):
        time.sleep(0.1)
    assert not peer.list_sas().get(name)
