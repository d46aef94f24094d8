"""The control socket: newline-delimited JSON over a Unix stream socket.

Request (one line)::

    {"command": "sas", "args": {"ike": "site"}}

Response (one line)::

    {"ok": true, "result": ...}        or        {"ok": false, "error": "why, and what to do"}

Several requests may be sent on one connection, one at a time. The daemon decides which
commands exist (``handlers``); docs/cli.md lists the ones ``aioipsec`` uses.

Streaming commands (``subscribe``): the handler returns a :class:`Stream`. The first line is
``{"ok": true, "result": {"stream": true}}``, then one ``{"ok": true, "event": ...}`` line
per item, for as long as the client keeps the connection open (closing it ends the stream;
the connection serves no further requests). ``ControlClient.stream()`` reads them.

Access: the socket file is created with mode 0600 (root only) or 0660 with a configured
group, and every peer's credentials (``SO_PEERCRED``) are checked on connect: uid 0, the
daemon's own uid, or a member of the group; anyone else gets one error line and is
disconnected. Results are scrubbed of anything under a secret-looking key before they are
sent (defence in depth: handlers never return secrets).

From Python::

    with ControlClient("/run/aioipsec.sock") as client:
        sas = client.call("sas")
    # or, inside asyncio:
    sas = await ControlClient("/run/aioipsec.sock").acall("sas")
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import json
import os
import pwd
import socket
import stat
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aioipsec.controlclient import (
    MAX_LINE,
    ControlClient,
    ControlError,
    DaemonUnreachable,
)
from aioipsec.log import get_logger, is_secret_key, redact_value

__all__ = [
    "ControlClient",
    "ControlError",
    "ControlServer",
    "DaemonUnreachable",
    "Handler",
    "RequestError",
    "SaSelector",
    "Stream",
    "sa_selector",
]

# A handler gets the request's "args" object and returns something JSON can encode.
Handler = Callable[[dict[str, Any]], Awaitable[Any]]

# The deepest JSON a request may nest (objects and arrays): the commands need 3.
MAX_DEPTH = 32
_UCRED = struct.Struct("3i")  # struct ucred {pid_t pid; uid_t uid; gid_t gid;}

_log = get_logger("control")


class RequestError(Exception):
    """Raise from a handler for an error the user caused (bad name, wrong state): the
    message goes back as ``{"ok": false, "error": message}`` without a traceback log."""


class Stream:
    """Return this from a handler to stream ``items`` (an async iterator of JSON-encodable
    values), one line each, until the iterator ends or the client disconnects.
    ``on_close`` runs once either way (to unsubscribe)."""

    def __init__(
        self, items: AsyncIterator[Any], on_close: Callable[[], None] | None = None
    ) -> None:
        self.items = items
        self.on_close = on_close


@dataclass(frozen=True)
class SaSelector:
    """Which SAs ``terminate``/``rekey`` act on: :func:`sa_selector` checked it."""

    ike: str | None = None
    child: str | None = None
    ike_id: int | None = None
    child_id: int | None = None
    all: bool = False


SELECTOR_KEYS = ("ike", "child", "ike_id", "child_id", "all")
_MAX_ID = (1 << 63) - 1


def internal_error_message(command: str, error: BaseException) -> str:
    """The answer to a command whose handler raised something other than RequestError: a
    bug. It names the exception type (``list index out of range`` alone says nothing) and
    where the traceback is; the caller logs that traceback with ``_log.exception``."""
    detail = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    return (
        f"internal error in {command}: {detail} (a bug in aioipsec: the daemon's log has "
        "the traceback; please report it with that log)"
    )


def sa_selector(verb: str, args: Mapping[str, Any]) -> SaSelector:
    """The selector of a ``terminate``/``rekey`` request, or a RequestError saying what is
    wrong with it. Acting on every SA must be asked for (``"all": true``): an empty, null
    or misspelt selector once meant "every SA" (issue 13, F5), and an id that is not a
    whole number raised a traceback (F6)."""
    known = ", ".join(SELECTOR_KEYS)
    unknown = sorted(str(key) for key in args if key not in SELECTOR_KEYS)
    if unknown:
        raise RequestError(f"{verb}: unknown selector key {unknown[0]!r} (known: {known})")
    for key, value in args.items():
        if value is None:
            raise RequestError(
                f"{verb}: {key} is null; give a value, or leave the key out ({known})"
            )
    names: dict[str, str] = {}
    for key in ("ike", "child"):
        if key in args:
            value = args[key]
            if not isinstance(value, str) or not value:
                raise RequestError(f"{verb}: {key} must be a connection or child name (a string)")
            names[key] = value
    ids: dict[str, int] = {}
    for key in ("ike_id", "child_id"):
        if key in args:
            value = args[key]
            if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= _MAX_ID:
                shown = repr(value) if not isinstance(value, str | int | float) else str(value)
                raise RequestError(
                    f"{verb}: {key} must be a whole number from 1 up (the #N that "
                    f"'aioipsec sas' shows), not {shown[:40]}"
                )
            ids[key] = value
    everything = args.get("all", False)
    if not isinstance(everything, bool):
        raise RequestError(f"{verb}: all must be true or false")
    if everything and (names or ids):
        raise RequestError(f"{verb}: all=true acts on every SA; leave out ike, child and the ids")
    if not everything and not names and not ids:
        raise RequestError(
            f"{verb} needs a selector: ike, child, ike_id or child_id; "
            f'to {verb} every SA say so with "all": true (aioipsec {verb} --all)'
        )
    return SaSelector(
        ike=names.get("ike"),
        child=names.get("child"),
        ike_id=ids.get("ike_id"),
        child_id=ids.get("child_id"),
        all=everything,
    )


def _peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    data = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    return _UCRED.unpack(data)  # pid, uid, gid


def _nesting_depth(value: Any) -> int:
    """How deeply ``value`` nests lists and dicts, without recursion (a hostile request
    may nest as deep as the parser allowed)."""
    deepest = 0
    pending: list[tuple[Any, int]] = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            depth += 1
            if depth > MAX_DEPTH:
                return depth
            deepest = max(deepest, depth)
            pending.extend((child, depth) for child in item)
    return deepest


def _too_deep() -> dict[str, Any]:
    return {
        "ok": False,
        "error": f"the request nests JSON more than {MAX_DEPTH} levels deep; "
        "no command needs that: send a flat args object",
    }


def _resolve_group(group: str | int | None) -> int | None:
    if group is None:
        return None
    if isinstance(group, int) or str(group).isdigit():
        return int(group)
    try:
        return grp.getgrnam(str(group)).gr_gid
    except KeyError:
        raise ValueError(f"control_group {group!r} does not exist") from None


def _scrub(result: Any) -> Any:
    if isinstance(result, dict):
        return {
            k: ("<redacted>" if isinstance(k, str) and is_secret_key(k) else redact_value(v))
            for k, v in result.items()
        }
    return redact_value(result)


class ControlServer:
    """Serve ``handlers`` (command name -> async callable(args) -> result) at ``path``.

    ``async with ControlServer(path, handlers): ...`` or ``await server.start()`` /
    ``await server.close()``. An existing socket file is replaced only when nothing
    answers on it (a second daemon must not steal a running daemon's socket).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        handlers: Mapping[str, Handler],
        *,
        group: str | int | None = None,
    ) -> None:
        self.path = Path(path)
        self.handlers = dict(handlers)
        self.gid = _resolve_group(group)
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[asyncio.Task[None]] = set()

    # The [daemon] setting naming this socket (error messages; the VICI server's differs).
    socket_setting = "control_socket"

    async def start(self) -> None:
        if self.path.exists() or self.path.is_symlink():
            if _socket_answers(self.path):
                raise OSError(
                    f"another daemon is already listening on {self.path}: stop it first "
                    f"or give this one another {self.socket_setting}"
                )
            self.path.unlink()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # The umask makes the file 0600 from the start: no window where others could
        # connect before the chmod.
        old_umask = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(
                self._serve, path=str(self.path), limit=MAX_LINE
            )
        finally:
            os.umask(old_umask)
        if self.gid is not None:
            os.chown(self.path, -1, self.gid)
            os.chmod(self.path, 0o660)
        else:
            os.chmod(self.path, 0o600)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._connections):
                task.cancel()
            await asyncio.gather(*self._connections, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            if self.path.is_socket():
                self.path.unlink()

    async def __aenter__(self) -> ControlServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _peer_allowed(self, uid: int, gid: int) -> bool:
        if uid in (0, os.geteuid()):
            return True
        if self.gid is None:
            return False
        if gid == self.gid:
            return True
        try:
            user = pwd.getpwuid(uid).pw_name
            return user in grp.getgrgid(self.gid).gr_mem
        except KeyError:
            return False

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            sock = writer.get_extra_info("socket")
            pid, uid, gid = _peer_credentials(sock)
            if not self._peer_allowed(uid, gid):
                _log.warning("control_peer_refused", pid=pid, uid=uid, gid=gid)
                await self._send(writer, {"ok": False, "error": "permission denied"})
                return
            while True:
                try:
                    line = await reader.readline()
                except (asyncio.LimitOverrunError, ValueError):
                    # Swallow the rest of the line (bounded) before answering: closing a
                    # Unix socket with unread data resets it, and the client would never
                    # see why.
                    await _discard_line(reader, limit=64 * MAX_LINE)
                    await self._send(writer, {"ok": False, "error": "request line too long"})
                    return
                if not line:
                    return
                if not line.strip():
                    continue
                response = await self._dispatch(line)
                if isinstance(response, Stream):
                    await self._stream(reader, writer, response)
                    return
                await self._send(writer, response)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            # close() cancels open connections; ending normally keeps asyncio's stream
            # callback from logging the cancellation as an error (Python 3.11).
            pass
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _stream(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, stream: Stream
    ) -> None:
        """Send the stream's items until it ends or the client closes the connection
        (noticed by reading: a quiet stream must not keep a dead client's queue alive)."""
        try:
            await self._send(writer, {"ok": True, "result": {"stream": True}})
            gone = asyncio.ensure_future(reader.read(1 << 16))
            try:
                iterator = stream.items.__aiter__()
                while True:
                    following = asyncio.ensure_future(iterator.__anext__())
                    await asyncio.wait({gone, following}, return_when=asyncio.FIRST_COMPLETED)
                    if not following.done():
                        following.cancel()
                        with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                            await following
                        # Anything the client sends after subscribing (or EOF) ends it.
                        return
                    try:
                        item = following.result()
                    except StopAsyncIteration:
                        return
                    await self._send(writer, {"ok": True, "event": _scrub(item)})
            finally:
                gone.cancel()
                with contextlib.suppress(BaseException):
                    await gone
        finally:
            if stream.on_close is not None:
                stream.on_close()

    async def _dispatch(self, line: bytes) -> dict[str, Any] | Stream:
        try:
            request = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return {"ok": False, "error": "the request is not valid JSON"}
        except RecursionError:
            # json's decoder recurses once per level: deeper than the interpreter's
            # limit it raises, and nothing else may see that (a traceback, no answer).
            return _too_deep()
        if _nesting_depth(request) > MAX_DEPTH:
            # Shallower than the interpreter's limit but deeper than any command needs:
            # handlers, repr() in messages and _scrub would recurse on it.
            return _too_deep()
        if not isinstance(request, dict) or not isinstance(request.get("command"), str):
            return {"ok": False, "error": 'the request needs {"command": NAME, "args": {...}}'}
        command = request["command"]
        args = request.get("args", {})
        if args is None:
            args = {}
        if not isinstance(args, dict):
            return {"ok": False, "error": "args must be a JSON object"}
        handler = self.handlers.get(command)
        if handler is None:
            known = ", ".join(sorted(self.handlers))
            return {"ok": False, "error": f"unknown command {command!r} (known: {known})"}
        try:
            result = await handler(args)
        except RequestError as error:
            return {"ok": False, "error": str(error)}
        except Exception as error:
            _log.exception("control_handler_failed", command=command)
            return {"ok": False, "error": internal_error_message(command, error)}
        if isinstance(result, Stream):
            return result
        return {"ok": True, "result": _scrub(result)}

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, response: dict[str, Any]) -> None:
        try:
            data = json.dumps(response, default=str).encode() + b"\n"
        except (TypeError, ValueError) as error:
            data = json.dumps({"ok": False, "error": f"unencodable result: {error}"}).encode()
            data += b"\n"
        writer.write(data)
        await writer.drain()


async def _discard_line(reader: asyncio.StreamReader, limit: int) -> None:
    discarded = 0
    while discarded < limit:
        chunk = await reader.read(65536)
        if not chunk or b"\n" in chunk:
            return
        discarded += len(chunk)


def _socket_answers(path: Path) -> bool:
    if not stat.S_ISSOCK(path.lstat().st_mode):
        raise OSError(f"{path} exists and is not a socket: refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        probe.close()
