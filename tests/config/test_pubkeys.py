"""Raw public keys (swanctl's ``pubkeys`` and pubkey/ folder, strongSwan's semantics):
loaded from swanctl.conf into the engine configuration, then two engines authenticate
with them, in memory on the virtual clock. The charon row is tests/interop/test_pubkeys.py.

strongSwan's rules (vici_config.c, pubkey_cert.c): a raw key without an ``id`` stands for
its KEY_ID (SHA-1 of its SubjectPublicKeyInfo); ``local.pubkeys`` names our key (no
certificate is sent); ``remote.pubkeys`` the keys the peer may sign with; a key in pubkey/
is trusted for the peer whose KEY_ID is its fingerprint.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from aioipsec.config import ConfigError, load_configuration
from aioipsec.config.engine import to_engine_configs
from ikev2.dispatcher import Dispatcher
from ikev2.events import AuthenticationFailed, ChildSaEstablished, IkeSaEstablished
from tests.engine.harness import ADDR_A, ADDR_B, Network, psk_lookup_for, seeded_rng

KEYS = {name: ec.generate_private_key(ec.SECP256R1()) for name in ("a", "b", "c")}


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.write_bytes(data)
    path.chmod(0o600)


def _public_pem(name: str) -> bytes:
    return (
        KEYS[name]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def key_id(name: str) -> str:
    der = (
        KEYS[name]
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return "@#" + hashlib.sha1(der).hexdigest()


def swanctl_dir(
    folder: Path,
    me: str,
    local: str,
    remote: str,
    *,
    peer_keys: tuple[str, ...],
    ts: tuple[str, str],
) -> Path:
    """swanctl.conf for ``me`` with our key in private/ and pubkey/, ``peer_keys`` in pubkey/."""
    _write(
        folder / "private" / f"{me}.pem",
        KEYS[me].private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    for name in (me, *peer_keys):
        _write(folder / "pubkey" / f"{name}Pub.pem", _public_pem(name))
    address = ADDR_A if me == "a" else ADDR_B
    other = ADDR_B if me == "a" else ADDR_A
    conf = folder / "swanctl.conf"
    _write(
        conf,
        f"""connections {{
   conn {{
      local_addrs = {address}
      remote_addrs = {other}
      local {{
         auth = pubkey
{local}
      }}
      remote {{
         auth = pubkey
{remote}
      }}
      children {{
         net {{
            local_ts = {ts[0]}
            remote_ts = {ts[1]}
         }}
      }}
   }}
}}
""".encode(),
    )
    return conf


def _pair(tmp_path: Path, a_remote: str, b_remote: str, *, b_peer_keys=("a",), a_local=None,
          b_local=None):  # fmt: skip
    a_conf = swanctl_dir(
        tmp_path / "a", "a", a_local or "         pubkeys = aPub.pem", a_remote,
        peer_keys=("b",), ts=("10.1.0.0/16", "10.2.0.0/16"),
    )  # fmt: skip
    b_conf = swanctl_dir(
        tmp_path / "b", "b", b_local or "         pubkeys = bPub.pem", b_remote,
        peer_keys=b_peer_keys, ts=("10.2.0.0/16", "10.1.0.0/16"),
    )  # fmt: skip
    (a_engine,) = to_engine_configs(load_configuration(swanctl_path=a_conf))
    (b_engine,) = to_engine_configs(load_configuration(swanctl_path=b_conf))
    a = Dispatcher([a_engine], psk_lookup_for(), rng=seeded_rng(1))
    b = Dispatcher([b_engine], psk_lookup_for(), rng=seeded_rng(2))
    return Network(a, b), a_engine, b_engine


def test_pubkeys_both_sides_key_ids(tmp_path: Path) -> None:
    """net2net-pubkey / rw-pubkey-keyid: no ids, each side's id is its key's KEY_ID; no
    certificate travels."""
    net, a_engine, _ = _pair(tmp_path, "         pubkeys = bPub.pem", "         pubkeys = aPub.pem")
    assert a_engine.local.id == "keyid:#" + key_id("a")[2:]
    assert a_engine.local.certs == [] and a_engine.remote.pubkeys
    net.a.initiate("conn", "net", now=0.0)
    net.pump()
    (ike_a,) = net.events("a", IkeSaEstablished)
    (ike_b,) = net.events("b", IkeSaEstablished)
    assert ike_b.remote_id == key_id("a") and ike_a.remote_id == key_id("b")
    assert net.events("a", ChildSaEstablished) and net.events("b", ChildSaEstablished)


def test_pubkey_folder_trusts_a_peer_by_key_id(tmp_path: Path) -> None:
    """rw-pubkey-anon moon: remote has neither pubkeys nor id; the peer's key is in pubkey/
    and its KEY_ID identity picks it."""
    net, _, b_engine = _pair(tmp_path, "         pubkeys = bPub.pem", "")
    assert b_engine.remote.id == "%any" and len(b_engine.remote.trusted_pubkeys) == 1
    net.a.initiate("conn", "net", now=0.0)
    net.pump()
    assert net.events("b", IkeSaEstablished) and net.events("a", ChildSaEstablished)


def test_configured_id_with_pubkeys(tmp_path: Path) -> None:
    """An id given with the key: the peer authenticates as that id with that key."""
    net, _, _ = _pair(
        tmp_path,
        "         pubkeys = bPub.pem\n         id = b.example",
        "         pubkeys = aPub.pem\n         id = a.example",
        a_local="         pubkeys = aPub.pem\n         id = a.example",
        b_local="         pubkeys = bPub.pem\n         id = b.example",
    )
    net.a.initiate("conn", "net", now=0.0)
    net.pump()
    (ike_b,) = net.events("b", IkeSaEstablished)
    assert ike_b.remote_id == "a.example" and net.events("a", ChildSaEstablished)


def test_a_key_not_trusted_is_refused(tmp_path: Path) -> None:
    """B trusts only key c: A's signature is refused, naming the missing key."""
    net, _, _ = _pair(tmp_path, "         pubkeys = bPub.pem", "", b_peer_keys=("c",))
    net.a.initiate("conn", "net", now=0.0)
    net.pump()
    (failure,) = net.events("b", AuthenticationFailed)
    assert failure.check == "no-credentials" and "raw public key" in failure.reason
    assert not net.events("b", IkeSaEstablished)


def test_wrong_key_under_a_trusted_key_id_is_refused(tmp_path: Path) -> None:
    """remote.pubkeys names c's key while A signs with a: the signature does not verify."""
    net, _, _ = _pair(tmp_path, "         pubkeys = bPub.pem", "         pubkeys = cPub.pem",
                      b_peer_keys=("c",))  # fmt: skip
    net.a.initiate("conn", "net", now=0.0)
    net.pump()
    assert net.events("b", AuthenticationFailed)
    assert not net.events("b", IkeSaEstablished)


@pytest.mark.parametrize(
    "case,local_key,key,words",
    [
        ("missing", "cPub.pem", "connections.conn.local.pubkeys", "cPub.pem does not exist"),
        # rw-dnssec: only our own key in pubkey/, the peer's would come from DNS.
        ("dns", "aPub.pem", "connections.conn.remote.cacerts", "dnssec"),
    ],
)
def test_refusals_name_their_key(
    tmp_path: Path, case: str, local_key: str, key: str, words: str
) -> None:
    conf = swanctl_dir(
        tmp_path, "a", f"         pubkeys = {local_key}", "",
        peer_keys=(), ts=("10.1.0.0/16", "10.2.0.0/16"),
    )  # fmt: skip
    with pytest.raises(ConfigError) as caught:
        load_configuration(swanctl_path=conf)
    assert caught.value.key == key, caught.value
    assert words in caught.value.reason, caught.value
