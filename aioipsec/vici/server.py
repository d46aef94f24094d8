"""The VICI server: strongSwan's control protocol on a Unix socket, so that ``swanctl`` and
the vici libraries drive aioipsec (issue 18).

The socket is set up like the JSON control socket (:class:`aioipsec.control.ControlServer`,
which this class extends): mode 0600, or 0660 with a group, and every peer's
``SO_PEERCRED`` checked on connect. What differs is the protocol on the connection:

* CMD_REQUEST: the command's coroutine (``commands[name](session, message)``) answers with a
  CMD_RESPONSE; an unknown name gets CMD_UNKNOWN. One command at a time per connection (the
  protocol has no sequence numbers); a command may stream events to its client meanwhile
  (``list-sas`` its ``list-sa`` events, ``initiate`` its ``control-log``).
* EVENT_REGISTER / EVENT_UNREGISTER: EVENT_CONFIRM for a known event name, EVENT_UNKNOWN
  otherwise. :meth:`ViciServer.broadcast` sends an event to every client registered for it.
* A segment longer than 512 KiB, or a packet type a client does not send: the connection is
  closed and the daemon log says why (the protocol has no error packet for it). A request
  whose message is malformed is answered ``success = no`` with the reason.

Which commands and events exist, and what they mean, is :mod:`aioipsec.vici.commands`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from aioipsec.control import (
    ControlServer,
    RequestError,
    _peer_credentials,
    internal_error_message,
)
from aioipsec.log import get_logger
from aioipsec.vici.codec import (
    MAX_SEGMENT,
    PacketType,
    ViciError,
    decode_packet,
    encode_packet,
    to_text,
)

__all__ = ["ViciCommand", "ViciServer", "ViciSession"]

_log = get_logger("vici")
_LENGTH = struct.Struct("!I")
# Events waiting in a connection's send buffer beyond this are dropped (and counted): a
# client that registers for "log" and never reads must not grow the daemon's memory.
EVENT_BUFFER_LIMIT = 4 << 20


class ViciSession:
    """One client connection: the events it registered for, and a way to send to it."""

    def __init__(self, writer: asyncio.StreamWriter, peer: tuple[int, int, int]) -> None:
        self.writer = writer
        self.peer = peer  # pid, uid, gid
        self.registered: set[str] = set()
        self.dropped = 0
        self.closed = False

    def wants(self, event: str) -> bool:
        return event in self.registered and not self.closed

    def send_event_nowait(self, name: str, message: Mapping[str, Any]) -> bool:
        """Queue an EVENT if the client registered for NAME; False when not sent (not
        registered, gone, or too far behind: then counted in ``dropped``)."""
        if not self.wants(name):
            return False
        transport = self.writer.transport
        if transport.is_closing():
            self.closed = True
            return False
        if transport.get_write_buffer_size() > EVENT_BUFFER_LIMIT:
            self.dropped += 1
            return False
        try:
            segment = encode_packet(PacketType.EVENT, name, message)
        except ViciError as error:
            _log.error("vici_event_unencodable", event=name, error=str(error))
            return False
        self.writer.write(segment)
        return True

    async def send_event(self, name: str, message: Mapping[str, Any]) -> bool:
        """As :meth:`send_event_nowait`, then wait until the client has taken it (streams
        of a command: a slow reader slows the stream instead of losing items)."""
        sent = self.send_event_nowait(name, message)
        if sent:
            await self.writer.drain()
        return sent


# A command gets its session (to stream events) and the request message (values as str).
ViciCommand = Callable[[ViciSession, dict[str, Any]], Awaitable[Mapping[str, Any]]]


class ViciServer(ControlServer):
    """Serve COMMANDS (VICI name -> :data:`ViciCommand`) and EVENTS (names clients may
    register for) at PATH. ``start()`` / ``close()`` as :class:`ControlServer`."""

    socket_setting = "vici_socket"

    def __init__(
        self,
        path: str | os.PathLike[str],
        commands: Mapping[str, ViciCommand],
        events: Iterable[str],
        *,
        group: str | int | None = None,
        on_register: Callable[[str, int], None] | None = None,
    ) -> None:
        super().__init__(path, {}, group=group)
        self.commands = dict(commands)
        self.events = frozenset(events)
        self.sessions: set[ViciSession] = set()
        # Called with (event name, number of sessions now registered for it) after every
        # (un)registration and disconnect: lets the owner start or stop an event source.
        self.on_register = on_register

    def registered_count(self, event: str) -> int:
        return sum(1 for session in self.sessions if session.wants(event))

    def broadcast(self, name: str, message: Mapping[str, Any]) -> int:
        """Send event NAME to every registered client; the number it went to."""
        return sum(session.send_event_nowait(name, message) for session in list(self.sessions))

    def _registrations_changed(self, names: Iterable[str]) -> None:
        if self.on_register is None:
            return
        for name in names:
            try:
                self.on_register(name, self.registered_count(name))
            except Exception:
                _log.exception("vici_register_hook_failed", event=name)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        session: ViciSession | None = None
        try:
            peer = _peer_credentials(writer.get_extra_info("socket"))
            pid, uid, gid = peer
            if not self._peer_allowed(uid, gid):
                # VICI has no error packet for this: the log says it, the client sees EOF.
                _log.warning("vici_peer_refused", pid=pid, uid=uid, gid=gid)
                return
            session = ViciSession(writer, peer)
            self.sessions.add(session)
            while True:
                try:
                    header = await reader.readexactly(_LENGTH.size)
                except asyncio.IncompleteReadError:
                    return  # the client closed the connection
                (length,) = _LENGTH.unpack(header)
                if length > MAX_SEGMENT:
                    _log.warning(
                        "vici_segment_too_long: closing the connection",
                        length=length, limit=MAX_SEGMENT, pid=pid,
                    )  # fmt: skip
                    return
                segment = await reader.readexactly(length)
                if not await self._packet(session, segment):
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass  # close() cancels open connections (see ControlServer._serve)
        finally:
            self._connections.discard(task)
            if session is not None:
                session.closed = True
                self.sessions.discard(session)
                self._registrations_changed(session.registered)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _packet(self, session: ViciSession, segment: bytes) -> bool:
        """Handle one packet; False to close the connection."""
        try:
            packet = decode_packet(segment)
        except ViciError as error:
            if segment[:1] == bytes([PacketType.CMD_REQUEST]):
                # The framing is intact: answer the request, keep the connection.
                await self._respond(
                    session,
                    PacketType.CMD_RESPONSE,
                    {"success": "no", "errmsg": f"malformed request: {error}"},
                )
                return True
            _log.warning("vici_bad_packet: closing the connection", error=str(error))
            return False
        if packet.type == PacketType.CMD_REQUEST:
            assert packet.name is not None
            command = self.commands.get(packet.name)
            if command is None:
                await self._respond(session, PacketType.CMD_UNKNOWN)
                return True
            response = await self._run(command, packet.name, session, packet.message)
            await self._respond(session, PacketType.CMD_RESPONSE, response)
            return True
        if packet.type in (PacketType.EVENT_REGISTER, PacketType.EVENT_UNREGISTER):
            assert packet.name is not None
            if packet.name not in self.events:
                await self._respond(session, PacketType.EVENT_UNKNOWN)
                return True
            if packet.type == PacketType.EVENT_REGISTER:
                session.registered.add(packet.name)
            else:
                session.registered.discard(packet.name)
            await self._respond(session, PacketType.EVENT_CONFIRM)
            self._registrations_changed([packet.name])
            return True
        _log.warning(
            "vici_unexpected_packet: closing the connection", type=packet.type.name
        )  # a client sent a server's packet type
        return False

    async def _run(
        self, command: ViciCommand, name: str, session: ViciSession, message: dict[str, Any]
    ) -> Mapping[str, Any]:
        try:
            return await command(session, to_text(message))
        except RequestError as error:
            return {"success": "no", "errmsg": str(error)}
        except (ConnectionError, asyncio.CancelledError):
            raise
        except Exception as error:
            _log.exception("vici_command_failed", command=name)
            return {"success": "no", "errmsg": internal_error_message(name, error)}

    @staticmethod
    async def _respond(
        session: ViciSession, packet_type: PacketType, message: Mapping[str, Any] | None = None
    ) -> None:
        try:
            segment = encode_packet(packet_type, None, message)
        except ViciError as error:
            segment = encode_packet(
                PacketType.CMD_RESPONSE,
                None,
                {"success": "no", "errmsg": f"response not encodable: {error}"},
            )
        session.writer.write(segment)
        await session.writer.drain()
