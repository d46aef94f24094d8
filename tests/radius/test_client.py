"""The RADIUS client (aioipsec/radius/client.py) against a real FreeRADIUS on loopback:
an EAP-MSCHAPv2 conversation run by our own MS-CHAPv2 peer, the MSK from MS-MPPE-Recv/
Send-Key equal to the peer's, Class attributes, fail-over past a dead server, and a wrong
shared secret (FreeRADIUS drops the requests: their Message-Authenticator is wrong)."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from aioipsec.radius import client as radius
from aioipsec.radius.client import AccessRequest, RadiusClient, RadiusReply
from aioipsec.radius.settings import RadiusServer
from ikev2.eap.mschapv2 import MsChapV2Peer
from ikev2.eap.packet import identity_response
from ikev2.eap.session import EapPeer
from ikev2.enums import EapType
from tests.radius.freeradius import start_freeradius

pytestmark = pytest.mark.needs("freeradius", "pyrad")

SECRET = "client-test-secret-0123"
USERS = {"carol": ("Ar3etTnp", "Research"), "dave": ("Ar3etTnp", None)}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RadiusServer]:
    port = free_port()
    directory: Path = tmp_path_factory.mktemp("raddb")
    process, _ = start_freeradius(None, None, directory, SECRET, USERS, port=port)
    try:
        yield RadiusServer("127.0.0.1", port)
    finally:
        process.stop()


async def converse(
    client: RadiusClient, name: str, password: str
) -> tuple[RadiusReply, EapPeer, int]:
    """Our MS-CHAPv2 peer through the client until Accept or Reject; and the round trips."""
    peer = EapPeer(name, {EapType.MSCHAPV2: lambda: MsChapV2Peer(name, password, os.urandom)})
    message, state, rounds = identity_response(7, name).serialize(), None, 0
    answered: RadiusServer | None = None  # State is that server's: stay with it
    while True:
        rounds += 1
        request = AccessRequest(name, message, state, "test", 1, ("127.0.0.1", 500),
                                ("127.0.0.2", 4500))  # fmt: skip
        reply = await client.exchange(request, answered)
        answered = reply.server
        if reply.code != radius.ACCESS_CHALLENGE:
            return reply, peer, rounds
        state = reply.state
        answer = peer.process(reply.eap_message)
        assert answer is not None
        message = answer.serialize()


def test_mschapv2_through_freeradius_gives_the_peers_msk(server: RadiusServer) -> None:
    client = RadiusClient([server], SECRET.encode(), timeout=2.0, tries=2)
    reply, peer, rounds = asyncio.run(converse(client, "carol", "Ar3etTnp"))
    assert reply.code == radius.ACCESS_ACCEPT and rounds == 3
    assert peer.process(reply.eap_message) is None and peer.succeeded
    assert peer.msk is not None and reply.msk is not None
    # RFC 3079 keys in MS-MPPE-Recv-Key | Send-Key: our peer's 64-octet MSK is them,
    # zero-padded (HMAC keys, so both give the same AUTH)
    assert peer.msk == reply.msk + bytes(32) and len(reply.msk) == 32
    assert reply.classes == [b"Research"]


def test_wrong_password_is_rejected(server: RadiusServer) -> None:
    client = RadiusClient([server], SECRET.encode(), timeout=2.0, tries=2)
    reply, _, _ = asyncio.run(converse(client, "dave", "not-the-password"))
    assert reply.code == radius.ACCESS_REJECT and reply.msk is None and reply.classes == []


def test_fail_over_past_a_dead_server(server: RadiusServer) -> None:
    dead = RadiusServer("127.0.0.1", free_port())  # nobody listens: no answer
    client = RadiusClient([dead, server], SECRET.encode(), timeout=0.3, tries=2)
    reply, _, _ = asyncio.run(converse(client, "carol", "Ar3etTnp"))
    assert reply.code == radius.ACCESS_ACCEPT and reply.server == server


def test_wrong_secret_gets_no_answer_and_says_so(server: RadiusServer) -> None:
    client = RadiusClient([server], b"not-the-secret", timeout=0.3, tries=2)
    with pytest.raises(radius.RadiusUnavailable) as caught:
        asyncio.run(converse(client, "carol", "Ar3etTnp"))
    assert f"no answer from the RADIUS server(s) {server}" in str(caught.value)
    assert "2 tries each, 0.3 s apart" in str(caught.value)
