"""Fixtures of the hardening tests: the three-host lab of :mod:`tests.hardening.lab`."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from aioipsec.netns import Lab
from tests.e2e.helpers import requirements_or_skip

from .lab import Hosts, build_hosts


def _hosts(tag: str) -> Iterator[Hosts]:
    requirements_or_skip("nft")
    workdir = Path(tempfile.mkdtemp(prefix="hard-", dir="/tmp"))
    try:
        with Lab(tag) as lab:
            hosts = build_hosts(lab, workdir)
            try:
                yield hosts
            finally:
                for daemon in hosts.daemons:
                    print(f"--- {daemon.config.name} ---\n{daemon.log_tail(40)}")
                # SIGKILL: nothing is checked after the test, and a SIGTERM waits 2 s
                # (SHUTDOWN_DELETE_WAIT) for DELETE answers from a prober long gone; the
                # namespaces, deleted next, take the TUN device and the rules with them.
                for daemon in hosts.daemons:
                    daemon.kill()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def hosts(request: pytest.FixtureRequest) -> Iterator[Hosts]:
    """A fresh lab per test (namespaces named after the test)."""
    yield from _hosts("".join(ch for ch in request.node.name if ch.isalnum())[:5])


@pytest.fixture(scope="module")
def module_hosts(request: pytest.FixtureRequest) -> Iterator[Hosts]:
    """One lab for a whole module (its tests must leave the daemon usable)."""
    yield from _hosts("".join(ch for ch in request.module.__name__ if ch.isalnum())[-5:])
