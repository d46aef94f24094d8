"""keyingtries (issue 21 item 4, issue 19): a ``start_action = start`` site-to-site keeps
trying while its peer is down, with a back-off, and comes up when the peer does.

Two namespaces, our daemon on the left (``python -m aioipsec.daemon``); the right one is
started only later. Retransmissions are shortened through ``[daemon]`` so an attempt
fails in about 1.4 s; the first retry waits 5 s (the back-off's start).
"""

from __future__ import annotations

import time

import pytest

from .helpers import OurDaemon, Side, requirements_or_skip, toml_config

pytestmark = [pytest.mark.netns]

LEFT = Side("site", "192.168.61.1", "10.1.0.1", "10.1.0.0/24", "192.168.61.2", "10.2.0.0/24",
            "left.example", "right.example")  # fmt: skip
RIGHT = Side("site", "192.168.61.2", "10.2.0.1", "10.2.0.0/24", "192.168.61.1", "10.1.0.0/24",
             "right.example", "left.example")  # fmt: skip
FAST_RETRANSMIT = {"retransmit_timeout": 0.5, "retransmit_tries": 1}


def _events(daemon: OurDaemon, name: str) -> list[dict]:
    return [e for e in daemon.log_events() if e.get("event") == name]


def _wait_for_event(daemon: OurDaemon, name: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = _events(daemon, name)
        if found:
            return found[0]
        time.sleep(0.2)
    raise AssertionError(f"no {name!r} in the log after {timeout} s:\n{daemon.log_tail()}")


@pytest.fixture
def sites(lab, workdir):
    requirements_or_skip()
    left_ns, right_ns = lab.namespace("left"), lab.namespace("right")
    lab.veth(left_ns, f"{LEFT.outer}/24", right_ns, f"{RIGHT.outer}/24")
    return lab, workdir, left_ns, right_ns


def _daemon(lab, namespace, side: Side, workdir, **options) -> OurDaemon:
    folder = workdir / side.outer
    folder.mkdir(exist_ok=True)
    config = toml_config(side, folder, daemon_options=FAST_RETRANSMIT, **options)
    daemon = OurDaemon(lab, namespace, config, folder)
    daemon.start()
    return daemon


@pytest.mark.timeout(90)
def test_keyingtries_0_keeps_trying_until_the_peer_is_up(sites) -> None:
    lab, workdir, left_ns, right_ns = sites
    left = _daemon(lab, left_ns, LEFT, workdir, start_action="start",
                   connection_options={"keyingtries": 0})  # fmt: skip
    right = None
    try:
        retry = _wait_for_event(left, "peer unreachable: trying again (keyingtries)", 30)
        assert retry["attempt"] == 2 and retry["delay"] == 5.0, retry
        right = _daemon(lab, right_ns, RIGHT, workdir)
        left.wait_for_child("site", timeout=40)
        right.wait_for_child("site", timeout=10)
        assert not _events(left, "giving up after keyingtries attempts")
    finally:
        for daemon in (left, right):
            if daemon is not None:
                daemon.stop()


@pytest.mark.timeout(90)
def test_keyingtries_2_gives_up_after_the_second_attempt(sites) -> None:
    lab, workdir, left_ns, _ = sites
    left = _daemon(lab, left_ns, LEFT, workdir, start_action="start",
                   connection_options={"keyingtries": 2})  # fmt: skip
    try:
        given_up = _wait_for_event(left, "giving up after keyingtries attempts", 40)
        assert given_up["attempts"] == 2, given_up
        retries = _events(left, "peer unreachable: trying again (keyingtries)")
        assert [r["attempt"] for r in retries] == [2], retries
        assert left.sas() == {}
    finally:
        left.stop()
