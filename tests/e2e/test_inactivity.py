"""strongSwan's ``inactivity`` (issue 19): a Child SA that carries no packet in either
direction for that long is closed, with a DELETE the peer acts on; the IKE SA stays,
and a Child SA with traffic stays up.

Two namespaces, our daemon on both sides (``python -m aioipsec.daemon``).
"""

from __future__ import annotations

import time

import pytest

from .helpers import OurDaemon, Side, ping, requirements_or_skip, toml_config

pytestmark = [pytest.mark.netns]

LEFT = Side("site", "192.168.62.1", "10.1.0.1", "10.1.0.0/24", "192.168.62.2", "10.2.0.0/24",
            "left.example", "right.example")  # fmt: skip
RIGHT = Side("site", "192.168.62.2", "10.2.0.1", "10.2.0.0/24", "192.168.62.1", "10.1.0.0/24",
             "right.example", "left.example")  # fmt: skip
INACTIVITY = 3


def _children(daemon: OurDaemon) -> dict:
    return daemon.sas().get("site", {}).get("child-sas") or {}


@pytest.mark.timeout(90)
def test_an_idle_child_sa_is_closed_after_inactivity(lab, workdir) -> None:
    requirements_or_skip("ping")
    left_ns, right_ns = lab.namespace("left"), lab.namespace("right")
    lab.veth(left_ns, f"{LEFT.outer}/24", right_ns, f"{RIGHT.outer}/24")
    left_ns.add_address("lo", f"{LEFT.inner}/32")
    right_ns.add_address("lo", f"{RIGHT.inner}/32")
    daemons = []
    try:
        for side, namespace in ((RIGHT, right_ns), (LEFT, left_ns)):
            folder = workdir / side.outer
            folder.mkdir()
            # Only the left side closes idle Child SAs; the right follows its DELETE.
            options = {"inactivity": f"{INACTIVITY}s"} if side is LEFT else {}
            config = toml_config(side, folder, child_options=options)
            daemon = OurDaemon(lab, namespace, config, folder)
            daemon.start()
            daemons.append(daemon)
        right, left = daemons
        left.call("initiate", child="net", timeout=30)
        left.wait_for_child("site")
        # Traffic every half second keeps it up past the inactivity time...
        deadline = time.monotonic() + INACTIVITY + 2
        while time.monotonic() < deadline:
            assert ping(left_ns, LEFT.inner, RIGHT.inner, count=1).returncode == 0
            time.sleep(0.5)
        assert _children(left) and _children(right)
        # ... and silence closes it on both sides; the IKE SA stays.
        deadline = time.monotonic() + INACTIVITY + 8
        while time.monotonic() < deadline and (_children(left) or _children(right)):
            time.sleep(0.5)
        assert not _children(left) and not _children(right), (left.sas(), right.sas())
        assert left.sas()["site"]["state"] == "ESTABLISHED"
        closing = [
            e
            for e in left.log_events()
            if e.get("event") == "closing the CHILD SA after inactivity"
        ]
        assert len(closing) == 1 and closing[0]["inactivity"] == INACTIVITY, closing
    finally:
        for daemon in daemons:
            daemon.stop()
