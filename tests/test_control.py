"""aioipsec.control: the JSON-lines control socket, its access checks and its client."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import structlog

from aioipsec import control
from aioipsec.control import (
    ControlClient,
    ControlError,
    ControlServer,
    DaemonUnreachable,
    RequestError,
    Stream,
)
from tests.components import require_component

pytestmark = pytest.mark.timeout(30)


async def _sas(args: dict[str, Any]) -> Any:
    return [{"site": {"state": "ESTABLISHED", "ike": args.get("ike")}}]


async def _fail(args: dict[str, Any]) -> Any:
    raise RequestError("no connection named 'x': see 'aioipsec conns'")


async def _crash(args: dict[str, Any]) -> Any:
    raise RuntimeError("boom")


async def _leaky(args: dict[str, Any]) -> Any:
    return {"psk": "hunter2", "child": {"encr-key": "00ff", "encr-keysize": "256"}}


HANDLERS = {"sas": _sas, "fail": _fail, "crash": _crash, "leaky": _leaky}


@pytest.fixture
def socket_path(tmp_path: Path) -> Path:
    return tmp_path / "ctl.sock"


async def raw_exchange(path: Path, payload: bytes) -> list[dict[str, Any]]:
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(payload)
    await writer.drain()
    writer.write_eof()
    lines = []
    while line := await reader.readline():
        lines.append(json.loads(line))
    writer.close()
    return lines


async def test_request_response_and_errors(
    socket_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with ControlServer(socket_path, HANDLERS):
        client = ControlClient(socket_path)
        assert await client.acall("sas", ike="site") == [
            {"site": {"state": "ESTABLISHED", "ike": "site"}}
        ]
        with pytest.raises(ControlError, match="no connection named 'x'"):
            await client.acall("fail")
        # A bug is answered with the exception's type and where its traceback is (a bare
        # "list index out of range" said nothing), and the traceback is logged.
        # The module's logger is swapped for a capturing one: capture_logs() cannot see a
        # logger that an earlier test's structlog configuration cached on first use.
        capture = structlog.testing.LogCapture()
        monkeypatch.setattr(
            control,
            "_log",
            structlog.wrap_logger(
                structlog.PrintLogger(),
                processors=[capture],
                wrapper_class=structlog.stdlib.BoundLogger,
            ),
        )
        logs = capture.entries
        with pytest.raises(ControlError) as raised:
            await client.acall("crash")
        assert str(raised.value).startswith("internal error in crash: RuntimeError: boom (a bug")
        assert "the daemon's log has the traceback" in str(raised.value)
        (logged,) = [e for e in logs if e["event"] == "control_handler_failed"]
        assert logged["command"] == "crash" and logged["exc_info"] is True
        with pytest.raises(ControlError, match=r"unknown command 'nope' \(known: crash, fail"):
            await client.acall("nope")
        # several requests on one connection, plus malformed ones: each gets one answer
        answers = await raw_exchange(
            socket_path,
            b'{"command": "sas"}\n'
            b"not json\n"
            b'{"args": {}}\n'
            b'{"command": "sas", "args": []}\n'
            b"\n"
            b'{"command": "sas", "args": {"ike": "b"}}\n',
        )
        assert [a["ok"] for a in answers] == [True, False, False, False, True]
        assert answers[1]["error"] == "the request is not valid JSON"
        assert answers[4]["result"][0]["site"]["ike"] == "b"


async def test_results_are_scrubbed_of_secrets(socket_path: Path) -> None:
    async with ControlServer(socket_path, HANDLERS):
        result = await ControlClient(socket_path).acall("leaky")
    assert result == {
        "psk": "<redacted>",
        "child": {"encr-key": "<redacted>", "encr-keysize": "256"},
    }


async def test_socket_mode_is_0600_and_removed_on_close(socket_path: Path) -> None:
    server = ControlServer(socket_path, HANDLERS)
    await server.start()
    try:
        mode = socket_path.stat().st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
    finally:
        await server.close()
    assert not socket_path.exists()


async def test_group_socket_is_0660_with_that_group(socket_path: Path) -> None:
    require_component("root")  # chown to another group
    import grp

    group = grp.getgrnam("nogroup") if "nogroup" in {g.gr_name for g in grp.getgrall()} else None
    if group is None:
        pytest.skip("no 'nogroup' group on this system")
    async with ControlServer(socket_path, HANDLERS, group="nogroup"):
        info = socket_path.stat()
        assert stat.S_IMODE(info.st_mode) == 0o660 and info.st_gid == group.gr_gid


_UNPRIVILEGED_CLIENT = """
import os, socket, sys
os.setgid(65534); os.setuid(65534)  # nobody/nogroup
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
try:
    s.sendall(b'{"command": "sas"}\\n')
except BrokenPipeError:
    pass  # refused peers get their answer at once and are disconnected
print(s.makefile().readline().strip())
"""


@pytest.fixture
def open_folder() -> Any:
    """A folder other users may enter (pytest's tmp_path is 0700)."""
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="aioipsec-ctl-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


async def test_peer_credentials_are_checked(open_folder: Path) -> None:
    """SO_PEERCRED: a process of another uid is refused even when the file mode would let
    it in (defence in depth; here the test opens the file mode on purpose)."""
    require_component("root")  # a client of another uid
    socket_path = open_folder / "ctl.sock"
    async with ControlServer(socket_path, HANDLERS):
        os.chmod(socket_path, 0o666)
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _UNPRIVILEGED_CLIENT, str(socket_path),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(process.communicate(), 20)
        assert process.returncode == 0, err
        assert json.loads(out) == {"ok": False, "error": "permission denied"}
        # and with the group allowed, the same uid/gid gets in
    async with ControlServer(socket_path, HANDLERS, group=65534):
        os.chmod(socket_path, 0o666)
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _UNPRIVILEGED_CLIENT, str(socket_path),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(process.communicate(), 20)
        assert json.loads(out)["ok"] is True, err


async def test_a_running_daemons_socket_is_not_stolen(socket_path: Path) -> None:
    async with ControlServer(socket_path, HANDLERS):
        second = ControlServer(socket_path, HANDLERS)
        with pytest.raises(OSError, match="already listening"):
            await second.start()
        # the first one still answers
        assert await ControlClient(socket_path).acall("sas")


async def test_a_stale_socket_file_is_replaced(socket_path: Path) -> None:
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(socket_path))
    stale.close()  # the file stays, nobody listens: what a killed daemon leaves
    assert socket_path.exists()
    async with ControlServer(socket_path, HANDLERS):
        assert await ControlClient(socket_path).acall("sas")


async def test_a_regular_file_is_never_replaced(socket_path: Path) -> None:
    socket_path.write_text("important")
    with pytest.raises(OSError, match="not a socket"):
        await ControlServer(socket_path, HANDLERS).start()
    assert socket_path.read_text() == "important"


async def test_blocking_client_from_another_thread(socket_path: Path) -> None:
    async with ControlServer(socket_path, HANDLERS):

        def use_blocking_client() -> list[Any]:
            with ControlClient(socket_path, timeout=10) as client:
                first = client.call("sas", {"ike": "a"})
                second = client.call("sas", ike="b")  # same connection
                try:
                    client.call("fail")
                except ControlError as error:
                    return [first, second, str(error)]
            raise AssertionError("fail did not fail")

        first, second, error = await asyncio.to_thread(use_blocking_client)
    assert first[0]["site"]["ike"] == "a" and second[0]["site"]["ike"] == "b"
    assert "no connection named" in error


async def test_stream_until_the_client_closes(socket_path: Path) -> None:
    """A Stream handler: a first ``stream: true`` line, one line per item (scrubbed like
    results), and ``on_close`` when the client goes away while the stream is quiet."""
    queue: asyncio.Queue[Any] = asyncio.Queue()
    closed = asyncio.Event()

    async def subscribe(args: dict[str, Any]) -> Any:
        async def items() -> Any:
            while True:
                yield await queue.get()

        return Stream(items(), on_close=closed.set)

    for n in range(3):
        queue.put_nowait({"n": n, "psk": "secret"})
    async with ControlServer(socket_path, {**HANDLERS, "subscribe": subscribe}):

        def follow_three() -> list[Any]:
            with ControlClient(socket_path, timeout=10) as client:
                stream = client.stream("subscribe")
                return [next(stream) for _ in range(3)]

        received = await asyncio.to_thread(follow_three)
        await asyncio.wait_for(closed.wait(), 10)

        def stream_a_plain_command() -> str:
            with ControlClient(socket_path, timeout=10) as client:
                try:
                    next(client.stream("sas"))
                except ControlError as error:
                    return str(error)
            return "no error"

        error = await asyncio.to_thread(stream_a_plain_command)
    assert received == [{"n": n, "psk": "<redacted>"} for n in range(3)]
    assert "not a streaming command" in error


def test_unreachable_daemon_message(tmp_path: Path) -> None:
    with pytest.raises(DaemonUnreachable) as info:
        ControlClient(tmp_path / "none.sock").call("sas")
    message = str(info.value)
    assert str(tmp_path / "none.sock") in message
    assert "is it running?" in message and "aioipsec daemon -c FILE" in message


async def test_unreachable_daemon_async(tmp_path: Path) -> None:
    with pytest.raises(DaemonUnreachable, match="is it running"):
        await ControlClient(tmp_path / "none.sock").acall("sas")


async def test_oversized_request_is_refused(socket_path: Path) -> None:
    async with ControlServer(socket_path, HANDLERS):
        answers = await raw_exchange(socket_path, b"x" * (2 << 20) + b"\n")
    assert answers == [{"ok": False, "error": "request line too long"}]


async def test_close_with_an_idle_client_connected_is_quiet(
    socket_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    server = ControlServer(socket_path, HANDLERS)
    await server.start()
    reader, writer = await asyncio.open_unix_connection(str(socket_path))
    writer.write(b'{"command": "sas"}\n')
    assert json.loads(await reader.readline())["ok"]
    await server.close()  # the client is still connected
    await asyncio.sleep(0.05)
    assert await reader.read() == b""  # the server hung up
    writer.close()
    assert errors == []
    assert "CancelledError" not in capsys.readouterr().err
