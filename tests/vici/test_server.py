"""ViciServer on its own (no root, no daemon): a small command table served on a Unix
socket in a temporary directory, driven by the `vici` package (strongSwan's Python client).
The daemon's commands are tested end to end in test_swanctl.py / test_vici_client.py."""

from __future__ import annotations

import asyncio
import socket
import stat
import struct

import pytest

from aioipsec.control import RequestError
from aioipsec.vici.codec import PacketType, decode_packet, encode_packet
from aioipsec.vici.server import ViciServer, ViciSession


def _session(path):
    import vici

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(str(path))
    return vici.Session(sock), sock


@pytest.fixture
async def server(tmp_path):
    async def echo(session: ViciSession, message: dict) -> dict:
        return message

    async def items(session: ViciSession, message: dict) -> dict:
        for index in range(int(message.get("count", "3"))):
            await session.send_event("item", {"index": index})
        return {}

    async def fail(session: ViciSession, message: dict) -> dict:
        raise RequestError("no such thing: name another one")

    async def crash(session: ViciSession, message: dict) -> dict:
        raise KeyError("bug")

    registrations: list[tuple[str, int]] = []
    vici_server = ViciServer(
        tmp_path / "test.vici",
        {"echo": echo, "items": items, "fail": fail, "crash": crash},
        {"item", "tick"},
        on_register=lambda name, count: registrations.append((name, count)),
    )
    await vici_server.start()
    yield vici_server, registrations
    await vici_server.close()


async def test_socket_mode_and_commands(server):
    server, registrations = server
    assert stat.S_IMODE(server.path.stat().st_mode) == 0o600

    def client() -> None:
        import vici.exception

        session, sock = _session(server.path)
        with sock:
            message = {"a": "1", "s": {"l": ["x", "y"], "t": {"k": "v"}}}
            assert session.request("echo", message) == {
                "a": b"1", "s": {"l": [b"x", b"y"], "t": {"k": b"v"}}
            }  # fmt: skip
            events = list(session.streamed_request("items", "item", {"count": "5"}))
            assert [e["index"] for e in events] == [b"0", b"1", b"2", b"3", b"4"]
            with pytest.raises(vici.exception.CommandException, match="name another one"):
                session.request("fail")
            with pytest.raises(
                vici.exception.CommandException,
                match=r"internal error in crash: KeyError: 'bug' \(a bug in aioipsec: the daemon's "
                "log has the traceback",
            ):
                session.request("crash")
            with pytest.raises(vici.exception.SessionException):  # CMD_UNKNOWN
                session.request("nosuch")
            with pytest.raises(vici.exception.EventUnknownException):
                session._register_unregister("nosuch", True)

    await asyncio.to_thread(client)
    # The list-* style registration came and went.
    assert ("item", 1) in registrations and registrations[-1] == ("item", 0)


async def test_broadcast_reaches_registered_clients_only(server):
    server, _ = server

    def listen(results: list) -> None:
        session, sock = _session(server.path)
        with sock:
            for label, event in session.listen(["tick"], timeout=0.1):
                if label is not None:
                    results.append(event)
                    return

    results: list = []
    listener = asyncio.create_task(asyncio.to_thread(listen, results))
    for _ in range(100):
        if server.registered_count("tick"):
            break
        await asyncio.sleep(0.02)
    assert server.broadcast("item", {"n": "0"}) == 0  # nobody registered for it
    assert server.broadcast("tick", {"n": "1"}) == 1
    await asyncio.wait_for(listener, 10)
    assert results == [{"n": b"1"}]


async def test_malformed_request_is_answered_and_connection_kept(server):
    server, _ = server
    reader, writer = await asyncio.open_unix_connection(str(server.path))
    body = b"\x00\x04echo" + b"\x04\x01l\x03\x01k\x00\x01v\x06"  # a key-value in a list
    writer.write(struct.pack("!I", len(body)) + body)
    writer.write(encode_packet(PacketType.CMD_REQUEST, "echo", {"k": "v"}))
    await writer.drain()
    answers = []
    for _ in range(2):
        (length,) = struct.unpack("!I", await reader.readexactly(4))
        answers.append(decode_packet(await reader.readexactly(length)))
    assert answers[0].message["success"] == b"no"
    assert b"malformed request: element type 3 inside a list" in answers[0].message["errmsg"]
    assert answers[1].message == {"k": b"v"}
    # An oversized segment: the server closes the connection.
    writer.write(struct.pack("!I", 1 << 20))
    await writer.drain()
    assert await reader.read() == b""
    writer.close()
