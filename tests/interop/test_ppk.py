"""RFC 8784 postquantum preshared keys against a real charon (5.9.8 here), both roles.

Connection ``pp``: both sides have the PPK and require it (``ppk_required = yes``); we
initiate, then charon initiates, and charon's log must say it used the PPK each time.
Connection ``np``: charon initiates with a PPK only it has, not required: we check its
NO_PPK_AUTH and the IKE SA comes up with the original keys.
"""

from __future__ import annotations

import pytest

from aioipsec.interop.charon import DEFAULT_CHARON_PLUGINS, swanctl_section
from tests.interop.charon_pair import charon_and_ours, wait_child, wait_gone

pytestmark = [pytest.mark.interop, pytest.mark.needs("root", "charon")]

PPK = "0x" + "5a" * 32
PPK_ID = "ppk-interop@example.org"
CHARON_ONLY = "charon-only@example.org"  # a PPK only charon has
PLUGINS = DEFAULT_CHARON_PLUGINS + " eap-identity eap-md5"


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
    # EAP-MD5 (no MSK: the AUTH key is SK_pi, which the PPK changes), PPK required: "ep"
    # with us as the client, "ec" with charon as the client; the gateway authenticates
    # with the PSK.
    for name, client_is_charon in (("ep", False), ("ec", True)):
        eap_round = {"auth": "eap-md5", "id": f"{name}-client"}
        psk_round = {"auth": "psk", "id": f"{name}-gateway"}
        we_are_client = client_is_charon == charon
        connections[name] = {
            **connection(name, PPK_ID, "yes"),
            "local": eap_round if we_are_client else psk_round,
            "remote": psk_round if we_are_client else eap_round,
        }
    secrets: dict[str, object] = {"ike-any": {"secret": '"interop-psk-0123456789abcdef"'}}
    secrets["eap-clients"] = {"id-1": "ep-client", "id-2": "ec-client", "secret": "md5-secret"}
    secrets["ppk-interop"] = {"id": PPK_ID, "secret": PPK}
    if charon:
        secrets["ppk-charon"] = {"id": CHARON_ONLY, "secret": "0x" + "a5" * 32}
    return swanctl_section("connections", connections) + "\n" + swanctl_section("secrets", secrets)


@pytest.mark.timeout(150)
def test_ppk_with_charon_both_roles() -> None:
    with charon_and_ours("ppk", PLUGINS) as (topology, charon, ours):
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
        # EAP-MD5 with the PPK required, we the client, then charon the client.
        ours.call("initiate", ike="ep", child="ep", timeout=30.0)
        wait_child(charon, "ep")
        wait_child(ours, "ep")
        charon.initiate("ec", ike="ec", timeout=30)
        wait_child(ours, "ec")
        wait_child(charon, "ec")
        log = charon.log_text()
        assert log.count(f"using PPK for PPK_ID '{PPK_ID}'") == 4, log[-3000:]
