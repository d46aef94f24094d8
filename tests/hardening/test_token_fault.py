"""A token removed, or the TPM simulator restarted, under a running daemon (issue 20,
target 4): gw's private key lives in a SoftHSM2 token (generated inside it) or in swtpm
(persistent handle); its certificate and peer's come from strongSwan's ``pki``; a tunnel
carries pings.

The token is taken away (SoftHSM's object store disappears, as when a card is pulled):
the established IKE SA and Child SA stay, and rekey (no signature needed); a new IKE SA
fails with AUTHENTICATION_FAILED and gw's log names the key; once the token is back the
next attempt works, without restarting the daemon. A capture on gw's outer interface shows
only IKE and ESP throughout (no inner packet in clear while the tunnel is down).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.components import require_component
from tests.e2e.helpers import OurDaemon, assert_ping, child_of
from tests.tokens.fixtures import PIN, Pki, SoftHsm, softhsm

from .lab import GW_INNER, GW_PEER_SIDE, PEER, PEER_INNER, Hosts, daemon_healthy
from .test_faults import assert_only_ike_and_esp, outer_capture
from .test_floods import record
from .test_loss_and_rekey import wait_for

__all__ = ["softhsm"]  # the fixture, imported for pytest
pytestmark = [pytest.mark.netns]


def _swanctl(
    local: str, remote: str, local_ts: str, remote_ts: str, cert: Path, local_id: str,
    remote_id: str, ca: Path, secret: str,
) -> str:  # fmt: skip
    return f"""
connections {{
    legit {{
        local_addrs = {local}
        remote_addrs = {remote}
        proposals = aes256gcm16-prfsha256-x25519
        local {{
            auth = pubkey
            certs = {cert}
            id = {local_id}
        }}
        remote {{
            auth = pubkey
            id = {remote_id}
            cacerts = {ca}
        }}
        children {{
            net {{
                local_ts = {local_ts}
                remote_ts = {remote_ts}
                esp_proposals = aes256gcm16
            }}
        }}
    }}
}}
secrets {{
{secret}
}}
"""


def _daemon(hosts: Hosts, name: str, namespace, swanctl: str, toml_extra: str) -> OurDaemon:
    folder = hosts.workdir / name
    folder.mkdir(exist_ok=True)
    toml = folder / f"{name}.toml"
    toml.write_text(
        f'[daemon]\ncontrol_socket = "{folder / "control.sock"}"\ntun_name = "ipsec0"\n'
        + toml_extra
    )
    conf = folder / "swanctl.conf"
    conf.write_text(swanctl)
    for path in (toml, conf):
        os.chmod(path, 0o600)
    daemon = OurDaemon(hosts.lab, namespace, toml, folder, ["--swanctl-conf", str(conf)])
    daemon.start()
    hosts.daemons.append(daemon)
    return daemon


def _key_gone_and_back(
    hosts: Hosts, pki: Pki, gw_cert: Path, secret: str, toml_extra: str, needle: str,
    take_away: Callable[[], None], bring_back: Callable[[], None], figure: str,
) -> None:  # fmt: skip
    """The scenario of the module doc, for a key that TAKE_AWAY makes unreachable."""
    peer_key, peer_cert = pki.issue_key("peer.example")
    gw = _daemon(
        hosts, "gw", hosts.gw_ns,
        _swanctl(GW_PEER_SIDE, PEER, "10.2.0.0/24", "10.1.0.0/24", gw_cert, "gw.example",
                 "peer.example", pki.ca_cert, secret),
        toml_extra,
    )  # fmt: skip
    peer = _daemon(
        hosts, "peer", hosts.peer_ns,
        _swanctl(PEER, GW_PEER_SIDE, "10.1.0.0/24", "10.2.0.0/24", peer_cert, "peer.example",
                 "gw.example", pki.ca_cert,
                 f"    private-peer {{\n        file = {peer_key}\n    }}"),
        "",
    )  # fmt: skip
    capture, pcap = outer_capture(hosts, figure)
    peer.call("initiate", child="net", timeout=30)
    first = peer.wait_for_child("legit")
    assert_ping(hosts.peer_ns, PEER_INNER, GW_INNER, count=3)

    take_away()
    # The established SAs carry traffic and rekey: no signature is needed for either.
    old_child = child_of(first)["spi-in"]
    peer.call("rekey", child="net")

    def children() -> dict:
        return peer.sas()["legit"].get("child-sas") or {}

    assert wait_for(lambda: all(c["spi-in"] != old_child for c in children().values()), 20), (
        peer.log_tail()
    )
    peer.call("rekey", ike="legit")
    first_spi = first["initiator-spi"]
    assert wait_for(
        lambda: (
            peer.sas().get("legit", {}).get("initiator-spi") not in (None, first_spi) and children()
        ),
        20,
    ), peer.log_tail()
    assert_ping(hosts.peer_ns, PEER_INNER, GW_INNER, count=3)
    # A new IKE SA needs gw's signature: refused, and gw's log says which key failed.
    peer.call("terminate", ike="legit")
    assert wait_for(lambda: not gw.sas().get("legit"), 20), gw.log_tail()
    failed_at_peer = None
    try:
        peer.call("initiate", child="net", timeout=10)
    except AssertionError as exc:
        failed_at_peer = str(exc).splitlines()[0]
    assert failed_at_peer is not None, "established although gw's key is gone"
    assert wait_for(lambda: needle in gw.log_text(), 10), gw.log_tail()
    # Nothing of the tunnel's traffic may leave in clear while it is down.
    hosts.peer_ns.run(
        "ping", "-n", "-c", "3", "-i", "0.2", "-W", "1", "-I", PEER_INNER, GW_INNER, check=False
    )

    bring_back()
    peer.call("initiate", child="net", timeout=30)
    peer.wait_for_child("legit")
    assert_ping(hosts.peer_ns, PEER_INNER, GW_INNER, count=3)
    capture.stop()
    daemon_healthy(gw)
    daemon_healthy(peer)
    figures = assert_only_ike_and_esp(pcap)
    record(figure, initiate_without_key=failed_at_peer[:200], capture=figures)


def _pki(tmp_path: Path) -> Pki:
    folder = tmp_path / "pki"
    folder.mkdir()
    return Pki(folder)


@pytest.mark.timeout(180)
def test_token_removed_and_back_under_a_running_daemon(
    hosts: Hosts, softhsm: SoftHsm, tmp_path: Path
) -> None:
    pki = _pki(tmp_path)
    gw_cert = pki.issue(softhsm.generate("ec256", b"\x01"), "gw.example")
    token = (
        f"    token-gw {{\n        handle = 01\n        slot = {softhsm.slot_id}\n"
        f"        module = softhsm\n        pin = {PIN}\n    }}"
    )
    _key_gone_and_back(
        hosts, pki, gw_cert, token, f'[pkcs11.modules.softhsm]\npath = "{softhsm.module}"\n',
        "pkcs11:softhsm", softhsm.remove, softhsm.reinsert, "token_removed",
    )  # fmt: skip


@pytest.mark.timeout(180)
def test_tpm_simulator_restarted_under_a_running_daemon(hosts: Hosts, tmp_path: Path) -> None:
    """The same with gw's key in a TPM (swtpm, persistent handle): the simulator is stopped,
    then started again on the same state. It runs in gw's namespace (the daemon reaches
    it over TCP on 127.0.0.1 there)."""
    require_component("swtpm", "tpm2-tools", "tpm2-pytss")
    from tests.tokens.fixtures import Swtpm

    pki = _pki(tmp_path)
    state = tmp_path / "swtpm"
    state.mkdir()
    tpm = Swtpm(state, 2321)
    with hosts.gw_ns.entered():
        tpm.start()
        public = tpm.create_key(0x81010004)

    def restart() -> None:
        with hosts.gw_ns.entered():
            tpm.start()

    try:
        gw_cert = pki.issue(public, "gw.example")
        _key_gone_and_back(
            hosts, pki, gw_cert, "    token-gw {\n        handle = 0x81010004\n    }",
            f'[tpm]\ntcti = "{tpm.tcti}"\n', "tpm:swtpm", tpm.stop, restart, "tpm_restarted",
        )  # fmt: skip
    finally:
        tpm.stop()
