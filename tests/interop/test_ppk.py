"""RFC 8784 postquantum preshared keys against a real charon (5.9.8 here), both roles.

Connection ``pp``: both sides have the PPK and require it (``ppk_required = yes``); we
initiate, then charon initiates, and charon's log must say it used the PPK each time.
Connection ``np``: charon initiates with a PPK only it has, not required: we check its
NO_PPK_AUTH and the IKE SA comes up with the original keys.
"""

from __future__ import annotations

import pytest

from aioipsec.interop.charon import swanctl_section
from tests.interop.charon_pair import charon_and_ours, wait_child, wait_gone

pytestmark = [pytest.mark.interop, pytest.mark.needs("root", "charon")]

PPK = "0x" + "5a" * 32
PPK_ID = "ppk-interop@example.org"
CHARON_ONLY = "charon-only@example.org"  # a PPK only charon has


def _conf(local: str, remote: str, local_ts: str, remote_ts: str, *, charon: bool) -> str:
    def connection(name: str, ppk_id: str, required: str) -> dict[str, object]:
        return {
            "version": 2,
            "local_addrs": local,
            "remote_addrs": remote,
            "proposals": "aes256gcm16-prfsha256-x25519",
            "ppk_id": ppk_id,
            "ppk_required": required,
            "local": {"auth": "psk", "id": f"{name}-{local}"},
            "remote": {"auth": "psk", "id": f"{name}-{remote}"},
            "children": {name: {"local_ts": local_ts, "remote_ts": remote_ts}},
        }

    connections = {
        "pp": connection("pp", PPK_ID, "yes"),
        "np": connection("np", CHARON_ONLY, "no"),
    }
    secrets: dict[str, object] = {"ike-any": {"secret": '"interop-psk-0123456789abcdef"'}}
    secrets["ppk-interop"] = {"id": PPK_ID, "secret": PPK}
    if charon:
        secrets["ppk-charon"] = {"id": CHARON_ONLY, "secret": "0x" + "a5" * 32}
    return swanctl_section("connections", connections) + "\n" + swanctl_section("secrets", secrets)


@pytest.mark.timeout(150)
def test_ppk_with_charon_both_roles() -> None:
    with charon_and_ours("ppk") as (topology, charon, ours):
        charon.start()
        i_out, r_out = topology.initiator_outer, topology.responder_outer
        charon.load(_conf(r_out, i_out, "10.2.0.0/24", "10.1.0.0/24", charon=True))
        ours.load(_conf(i_out, r_out, "10.1.0.0/24", "10.2.0.0/24", charon=False))
        # We initiate with the PPK required: charon uses it.
        ours.call("initiate", ike="pp", child="pp", timeout=30.0)
        wait_child(charon, "pp")
        wait_child(ours, "pp")
        assert charon.log_text().count(f"using PPK for PPK_ID '{PPK_ID}'") == 1
        ours.call("terminate", ike="pp")
        wait_gone(charon, "pp")
        wait_gone(ours, "pp")
        # charon initiates with the PPK required: we use it.
        charon.initiate("pp", ike="pp", timeout=30)
        wait_child(ours, "pp")
        wait_child(charon, "pp")
        assert charon.log_text().count(f"using PPK for PPK_ID '{PPK_ID}'") == 2
        # charon initiates with a PPK_ID we lack, not required: NO_PPK_AUTH.
        charon.initiate("np", ike="np", timeout=30)
        wait_child(ours, "np")
        wait_child(charon, "np")
        log = charon.log_text()
        request = next(line for line in log.splitlines() if "<np|3> generating IKE_AUTH" in line)
        assert "N(PPK_ID)" in request and "N(NO_PPK" in request, request
        assert f"using PPK for PPK_ID '{CHARON_ONLY}'" not in log
