"""Raw public keys (swanctl ``pubkeys``, no certificates) against a real charon, both roles.

Each side has only its own key pair and the peer's public key in pubkey/ (strongSwan's
net2net-pubkey / rw-pubkey-keyid scenarios): no ids, so each side is known by its key's
KEY_ID. aioipsec initiates first, then charon initiates the same connection; both must
end with the IKE SA and its Child SA, and charon's log must show the KEY_ID identities
and no certificate.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from aioipsec.interop.charon import swanctl_section
from tests.interop.charon_pair import charon_and_ours, wait_child, wait_gone

pytestmark = [pytest.mark.interop, pytest.mark.needs("root", "charon")]

NAME = "pk"


def _install(folder: Path, key: Any, peer: Any) -> None:
    """Our key in private/, both public keys in pubkey/, as swanctl lays them out."""
    for sub in ("private", "pubkey"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    private = folder / "private" / "key.pem"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    private.chmod(0o600)
    for name, public in (("ownPub.pem", key.public_key()), ("peerPub.pem", peer)):
        (folder / "pubkey" / name).write_bytes(
            public.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )


def _conf(local_addr: str, remote_addr: str, local_ts: str, remote_ts: str) -> str:
    connection = {
        "version": 2,
        "local_addrs": local_addr,
        "remote_addrs": remote_addr,
        "proposals": "aes256gcm16-prfsha256-x25519",
        "local": {"auth": "pubkey", "pubkeys": "ownPub.pem"},
        "remote": {"auth": "pubkey", "pubkeys": "peerPub.pem"},
        "children": {
            NAME: {"local_ts": local_ts, "remote_ts": remote_ts, "esp_proposals": "aes256gcm16"}
        },
    }
    return swanctl_section("connections", {NAME: connection}) + "\n"


def _key_id(key: Any) -> str:
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha1(der).hexdigest()


@pytest.mark.timeout(150)
def test_raw_public_keys_with_charon_both_roles() -> None:
    ours_key = ec.generate_private_key(ec.SECP256R1())
    charon_key = ec.generate_private_key(ec.SECP256R1())
    with charon_and_ours("pubkeys") as (topology, charon, ours):
        _install(charon.workdir, charon_key, ours_key.public_key())
        charon.start()
        _install(ours.workdir, ours_key, charon_key.public_key())
        i_net, r_net = "10.1.0.0/24", "10.2.0.0/24"
        charon.load(_conf(topology.responder_outer, topology.initiator_outer, r_net, i_net))
        ours.load(_conf(topology.initiator_outer, topology.responder_outer, i_net, r_net))
        # aioipsec initiates, charon responds.
        ours.call("initiate", ike=NAME, child=NAME, timeout=30.0)
        ike = wait_child(charon, NAME)
        wait_child(ours, NAME)
        # charon's view: our KEY_ID as identity (it prints KEY_ID as hex octets).
        remote_id = ike.get("remote-id", "")
        assert _key_id(ours_key.public_key()) in remote_id.replace(":", ""), ike
        ours.call("terminate", ike=NAME)
        wait_gone(charon, NAME)
        wait_gone(ours, NAME)
        # charon initiates, aioipsec responds.
        charon.initiate(NAME, ike=NAME, timeout=30)
        wait_child(ours, NAME)
        ike = wait_child(charon, NAME)
        assert _key_id(ours_key.public_key()) in ike.get("remote-id", "").replace(":", "")
        log = charon.log_text()
        assert "authentication of" in log and "successful" in log, log[-3000:]
        # No certificate travelled either way (raw keys are never sent).
        assert " CERT " not in log.replace("CERTREQ", ""), log[-3000:]
