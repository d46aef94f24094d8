"""The control socket's client: light enough for a command that only asks the daemon.

``aioipsec sas`` (and every other command that talks to a running daemon) imports this
module and not :mod:`aioipsec.control`: the server side pulls in asyncio and the logging
stack (structlog), about 60-80 ms of imports here, for a command that should answer in
well under 40 ms (issue 17). The protocol is described in :mod:`aioipsec.control`,
which re-exports everything below.
"""

from __future__ import annotations

# _socket: the C socket type, not the module socket, which turns hundreds of constants
# into IntEnums and imports selectors when imported, ~3 ms of a command's start (issue 17:
# `aioipsec initiate` <= 2x charon + swanctl's ~13 ms). A blocking client needs nothing
# of its wrapper: connect, settimeout, sendall, recv and close are the C type's, with the
# same exceptions (OSError subclasses; TimeoutError on a timeout).
import _socket
import json
import os
from collections.abc import Iterator, Mapping

# Nor typing (~3 ms): it is only needed for annotations, which are not evaluated.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["MAX_LINE", "ControlClient", "ControlError", "DaemonUnreachable"]

MAX_LINE = 1 << 20  # a request or response line longer than this is refused


class ControlError(Exception):
    """The daemon answered ``ok: false`` (``str(error)`` is its message)."""


class DaemonUnreachable(ControlError):
    """No daemon listens at the socket path (or it does not answer)."""


def _unreachable(path: str, reason: str) -> DaemonUnreachable:
    return DaemonUnreachable(
        f"cannot reach the daemon at {path} ({reason}): is it running? "
        "start it with 'aioipsec daemon -c FILE', or give its socket with --socket PATH"
    )


def _decode_response(line: bytes, path: str) -> Any:
    if not line:
        raise _unreachable(path, "the daemon closed the connection")
    try:
        response = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ControlError(f"the daemon at {path} sent something that is not JSON") from None
    if not isinstance(response, dict) or "ok" not in response:
        raise ControlError(f"the daemon at {path} sent an unexpected response")
    if not response["ok"]:
        raise ControlError(str(response.get("error", "unknown error")))
    return response.get("result")


def _encode_request(command: str, args: Mapping[str, Any] | None) -> bytes:
    return json.dumps({"command": command, "args": dict(args or {})}).encode() + b"\n"


class ControlClient:
    """Talk to a daemon's control socket, blocking (:meth:`call`) or in asyncio
    (:meth:`acall`). Raises :class:`DaemonUnreachable` when nothing listens and
    :class:`ControlError` when the daemon answers with an error."""

    def __init__(self, path: str | os.PathLike[str], timeout: float = 30.0) -> None:
        self.path = os.fspath(path)
        self.timeout = timeout
        self._sock: _socket.socket | None = None
        self._buffer = b""

    # ---- blocking

    def connect(self) -> None:
        if self._sock is not None:
            return
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except FileNotFoundError:
            sock.close()
            raise _unreachable(self.path, "no such socket") from None
        except PermissionError:
            sock.close()
            raise DaemonUnreachable(
                f"permission denied on {self.path}: run as root or as a member of the "
                "daemon's control_group"
            ) from None
        except OSError as error:
            sock.close()
            raise _unreachable(self.path, error.strerror or str(error)) from None
        self._sock = sock

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
            self._buffer = b""

    def __enter__(self) -> ControlClient:
        self.connect()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _read_line(self, too_long: str) -> bytes | None:
        """The next line the daemon sends (without its newline), or None when it closes
        the connection before a whole line; ControlError(``too_long``) past the limit."""
        assert self._sock is not None
        while b"\n" not in self._buffer:
            chunk = self._sock.recv(65536)
            if not chunk:
                return None
            self._buffer += chunk
            if len(self._buffer) > MAX_LINE * 64:
                raise ControlError(too_long)
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line

    def _no_answer(self, command: str) -> DaemonUnreachable:
        return DaemonUnreachable(
            f"the daemon at {self.path} did not answer {command!r} within {self.timeout:g}s"
        )

    def _lost(self, command: str, error: OSError) -> DaemonUnreachable:
        """The connection closed after a socket error, and the error to raise for it."""
        self.close()
        if isinstance(error, TimeoutError):
            return self._no_answer(command)
        return _unreachable(self.path, error.strerror or str(error))

    def call(self, command: str, args: Mapping[str, Any] | None = None, **kwargs: Any) -> Any:
        """Send one request and return its result (``args`` and keyword args merge)."""
        merged = {**(args or {}), **kwargs}
        self.connect()
        assert self._sock is not None
        try:
            self._sock.sendall(_encode_request(command, merged))
            line = self._read_line("response too long")
        except OSError as error:  # TimeoutError included
            raise self._lost(command, error) from None
        if line is None:  # the daemon closed the connection: decode what came, if anything
            line, self._buffer = self._buffer, b""
        return _decode_response(line, self.path)

    def stream(
        self, command: str, args: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> Iterator[Any]:
        """Send a streaming request (``subscribe``) and yield its items as they come,
        without a timeout between them, until the daemon closes the stream. The connection
        is used up: call :meth:`close` (or leave the ``with`` block) to end it."""
        merged = {**(args or {}), **kwargs}
        self.connect()
        assert self._sock is not None
        try:
            self._sock.sendall(_encode_request(command, merged))
            first = True
            while True:
                line = self._read_line("stream line too long")
                if line is None:
                    if first:
                        raise _unreachable(self.path, "the daemon closed the connection")
                    return
                if first:
                    result = _decode_response(line, self.path)
                    if not (isinstance(result, dict) and result.get("stream")):
                        raise ControlError(f"{command!r} is not a streaming command")
                    first = False
                    self._sock.settimeout(None)  # events come when they come
                    continue
                try:
                    response = json.loads(line)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    raise ControlError(f"the daemon at {self.path} sent non-JSON") from None
                if isinstance(response, dict) and "event" in response:
                    yield response["event"]
        except OSError as error:  # TimeoutError included
            raise self._lost(command, error) from None

    # ---- asyncio

    async def acall(
        self, command: str, args: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> Any:
        """One request on its own connection, from asyncio code."""
        # Here, not at the top: only asyncio code calls this, and the blocking client
        # must not pay for importing asyncio (see the module doc).
        import asyncio
        import contextlib

        merged = {**(args or {}), **kwargs}
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_unix_connection(self.path, limit=MAX_LINE * 64),
                self.timeout,
            )
        except FileNotFoundError:
            raise _unreachable(self.path, "no such socket") from None
        except (OSError, TimeoutError) as error:
            raise _unreachable(self.path, str(error) or "timeout") from None
        try:
            writer.write(_encode_request(command, merged))
            await writer.drain()
            line = await asyncio.wait_for(reader.readline(), self.timeout)
        except TimeoutError:
            raise self._no_answer(command) from None
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
        return _decode_response(line, self.path)
