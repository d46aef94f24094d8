"""VICI commands and events mapped onto the daemon's one command table.

The daemon has one handler per command (``Daemon.control_handlers``: name -> coroutine
taking an ``args`` dict, results with strongSwan's VICI key names). The JSON control socket
serves that table directly; this module serves it over VICI. A VICI command here only
translates: request keys to handler arguments (``ike-id`` -> ``ike_id``, milliseconds to
seconds), the handler's result to VICI's shape (``success``/``errmsg``, lists streamed as
``list-*`` events). No command is implemented here.

Events: ``ike-updown``, ``child-updown``, ``ike-rekey``, ``child-rekey``, ``ike-update``,
``log`` and ``alert`` come from the ``subscribe`` handler's stream (engine events and IKE
messages), opened while any client is registered; ``control-log`` is the same stream,
filtered to the connection an ``initiate``/``terminate`` works on, while it runs.

Commands aioipsec cannot support answer ``success = no`` with the reason
(:data:`UNSUPPORTED`); names that are not VICI commands at all get CMD_UNKNOWN.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from aioipsec.control import RequestError
from aioipsec.log import get_logger
from aioipsec.vici.server import ViciCommand, ViciServer, ViciSession

__all__ = ["EVENTS", "UNSUPPORTED", "ViciFrontend"]

Handler = Callable[[dict[str, Any]], Awaitable[Any]]

_log = get_logger("vici")

# Every event name of strongSwan's README that a client may register for.
EVENTS = (
    "log", "control-log", "ike-updown", "ike-rekey", "ike-update", "child-updown",
    "child-rekey", "alert", "list-sa", "list-policy", "list-conn", "list-cert",
    "list-authority",
)  # fmt: skip
# Events fed by the daemon's subscribe stream (opened while anyone is registered).
_STREAM_EVENTS = frozenset(
    {"log", "ike-updown", "ike-rekey", "ike-update", "child-updown", "child-rekey", "alert"}
)

_NO_AUTHORITIES = (
    "aioipsec has no certification authority sections (CRL and OCSP URIs are not "
    "supported): load CA certificates with load-cert (flag CA) or name them in cacerts"
)
UNSUPPORTED = {
    "load-token": "aioipsec loads token keys (PKCS#11, TPM) from its configuration only: "
    "add a secrets token-NAME section (docs/keys-in-hardware.md) and reload-settings",
    "load-authority": _NO_AUTHORITIES,
    "unload-authority": _NO_AUTHORITIES,
    "flush-certs": "aioipsec keeps no certificate cache (it fetches no certificates, "
    "CRLs or OCSP responses): there is nothing to flush",
}

# VICI initiate/terminate "timeout = 0" waits for the result however long it takes; this
# caps it (a dead peer is declared after 165 s of retransmissions with the defaults).
_FOREVER = 300.0
_ALERTS = {
    "NO_PROPOSAL_CHOSEN": "proposal-mismatch-ike",
    "TS_UNACCEPTABLE": "ts-mismatch",
    "AUTHENTICATION_FAILED": "peer-auth-failed",  # local-auth-failed when received
}


def _yes(value: Any) -> bool:
    return str(value).lower() in ("yes", "true", "1")


def _seconds(milliseconds: Any) -> float | None:
    """VICI timeout (ms): 0 waits for the result, -1 not at all (None)."""
    try:
        value = int(milliseconds or 0)
    except ValueError:
        raise RequestError(
            f"timeout must be a number of milliseconds, not {milliseconds!r}"
        ) from None
    if value < 0:
        return None
    return value / 1000 if value else _FOREVER


def _ok(**extra: Any) -> dict[str, Any]:
    return {"success": "yes", **extra}


def _selection(message: Mapping[str, Any]) -> dict[str, Any]:
    """VICI's SA selection keys as the handlers name them (ids as numbers; keys VICI
    leaves out, or sends empty, left out)."""
    selection: dict[str, Any] = {}
    for vici_key, key in (("ike", "ike"), ("child", "child"), ("ike-id", "ike_id"),
                          ("child-id", "child_id")):  # fmt: skip
        value = message.get(vici_key)
        if value in (None, "", "0") and key.endswith("_id"):
            continue  # charon's "0": no id given
        if value in (None, ""):
            continue
        selection[key] = int(value) if key.endswith("_id") and value.isdigit() else value
    return selection


# charon sends these flags only when set (vici_query.c); the JSON listings say "no".
_FLAGS = frozenset({"encap", "initiator", "nat-local", "nat-remote", "nat-fake", "nat-any"})


def vici_sa(item: Mapping[str, Any]) -> dict[str, Any]:
    """A list-sas item (``{name: ike_sa}``) as charon sends it: flags only when set."""

    def strip(entry: Any) -> Any:
        if not isinstance(entry, Mapping):
            return entry
        return {
            key: strip(value)
            for key, value in entry.items()
            if not (key in _FLAGS and value == "no")
        }

    return {name: strip(entry) for name, entry in item.items()}


def _running(seconds: float) -> str:
    """charon's "%V" time delta (stats: uptime running): "42 seconds", "3 minutes"."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds > 2 * size:
            value = int(seconds // size)
            return f"{value} {unit}{'s' if value != 1 else ''}"
    value = int(seconds)
    return f"{value} second{'s' if value != 1 else ''}"


# --------------------------------------------------------------------------- log lines


def log_lines(record: Mapping[str, Any]) -> list[tuple[str, int, str]]:
    """A ``subscribe`` record as charon-style log lines: (group, level, message)."""
    kind = record.get("type")
    if kind == "ike":
        local, remote = record.get("local", ["?", 0]), record.get("remote", ["?", 0])
        if "error" in record:
            return [("NET", 1, f"received unparsable packet from {remote[0]}[{remote[1]}]: "
                     f"{record['error']}")]  # fmt: skip
        what = "response" if record.get("response") else "request"
        payloads = " ".join(record.get("payloads", []))
        description = f"{record.get('exchange')} {what} {record.get('message_id')} [ {payloads} ]"
        size = record.get("length")
        if record.get("direction") == "out":
            return [
                ("ENC", 1, f"generating {description}"),
                ("NET", 1, f"sending packet: from {local[0]}[{local[1]}] to "
                 f"{remote[0]}[{remote[1]}] ({size} bytes)"),
            ]  # fmt: skip
        return [
            ("NET", 1, f"received packet: from {remote[0]}[{remote[1]}] to "
             f"{local[0]}[{local[1]}] ({size} bytes)"),
            ("ENC", 1, f"parsed {description}"),
        ]  # fmt: skip
    if kind != "event":
        return []
    name, fields = str(record.get("event")), dict(record.get("fields", {}))
    values = {**fields, "conn": record.get("connection"), "ike_id": record.get("ike_sa_id")}
    local, remote = fields.get("local_addr") or ["?"], fields.get("remote_addr") or ["?"]
    notify = fields.get("notify")
    values.update(
        local=local[0], remote=remote[0],
        spi_in=f"{fields.get('spi_in', 0):08x}", spi_out=f"{fields.get('spi_out', 0):08x}",
        local_ts=" ".join(map(str, fields.get("local_ts", ()))),
        remote_ts=" ".join(map(str, fields.get("remote_ts", ()))),
        suffix=f" ({getattr(notify, 'name', notify)})" if notify is not None else "",
    )  # fmt: skip
    template = _EVENT_LINES.get(name)
    if template is None:
        text = " ".join(f"{k}={v}" for k, v in fields.items())
        return [("IKE", 1, f"{name} {text}".strip())]
    group, line = template
    return [(group, 0, line.format_map(values))]


# Engine events as charon words them (its [IKE]/[CHD] lines), filled from the event fields.
_EVENT_LINES = {
    "IkeSaEstablished": ("IKE", "IKE_SA {conn}[{ike_id}] established between "
                         "{local}[{local_id}]...{remote}[{remote_id}]"),
    "ChildSaEstablished": ("IKE", "CHILD_SA {child}{{{child_sa_id}}} established with SPIs "
                           "{spi_in}_i {spi_out}_o and TS {local_ts} === {remote_ts}"),
    "IkeSaDeleted": ("IKE", "IKE_SA {conn}[{ike_id}] deleted: {reason}"),
    "ChildSaDeleted": ("CHD", "CHILD_SA {child}{{{child_sa_id}}} closed: {reason}"),
    "IkeSaRekeyed": ("IKE", "IKE_SA {conn}[{old_ike_sa_id}] rekeyed into {conn}[{ike_id}]"),
    "ChildSaRekeyed": ("CHD", "CHILD_SA {conn}{{{old_child_sa_id}}} rekeyed"),
    "NegotiationFailed": ("IKE", "{exchange} failed: {reason}{suffix}"),
    "AuthenticationFailed": ("IKE", "authentication failed ({check}): {reason}"),
    "PeerUnreachable": ("IKE", "peer {remote} unreachable: {action}"),
}  # fmt: skip


def _log_message(group: str, level: int, text: str, record: Mapping[str, Any]) -> dict[str, Any]:
    message: dict[str, Any] = {"group": group, "level": str(level), "thread": "1"}
    if record.get("connection"):
        message["ikesa-name"] = record["connection"]
        message["ikesa-uniqueid"] = str(record.get("ike_sa_id"))
    message["msg"] = text
    return message


# --------------------------------------------------------------------------- the frontend


class ViciFrontend:
    """The VICI socket of a daemon: a :class:`ViciServer` whose commands are the daemon's
    HANDLERS, translated, and whose events come from the ``subscribe`` handler."""

    def __init__(
        self, path: str, handlers: Mapping[str, Handler], *, group: str | int | None = None
    ) -> None:
        self.handlers = dict(handlers)
        self.server = ViciServer(
            path, self._commands(), EVENTS, group=group, on_register=self._registered
        )
        self._pump: asyncio.Task[None] | None = None
        # IKE SA id -> its last list-sas entry (with child-sas): what a "down" event shows.
        self._cache: dict[int, tuple[str, dict[str, Any]]] = {}

    async def start(self) -> None:
        await self.server.start()

    async def close(self) -> None:
        await self._stop_pump()
        await self.server.close()

    @property
    def path(self) -> Any:
        return self.server.path

    # ------------------------------------------------------------------ commands

    def _commands(self) -> dict[str, ViciCommand]:
        commands: dict[str, ViciCommand] = {
            "version": self._version,
            "stats": self._stats,
            "reload-settings": self._simple("reload"),
            "initiate": self._initiate,
            "terminate": self._terminate,
            "rekey": self._rekey,
            "redirect": self._redirect,
            "install": self._simple("install", "child", "ike"),
            "uninstall": self._simple("uninstall", "child", "ike"),
            "list-sas": self._list_sas,
            "list-policies": self._streamed("list-policies", "list-policy"),
            "list-conns": self._streamed("list-conns", "list-conn"),
            "list-certs": self._streamed("list-certs", "list-cert"),
            "list-authorities": self._streamed("list-authorities", "list-authority"),
            "get-conns": self._passthrough("get-conns"),
            "get-keys": self._passthrough("get-keys"),
            "get-shared": self._passthrough("get-shared"),
            "get-authorities": self._passthrough("get-authorities"),
            "get-pools": self._passthrough("get-pools"),
            "load-pool": self._simple("load-pool", whole=True),
            "unload-pool": self._simple("unload-pool", "name"),
            "get-algorithms": self._passthrough("get-algorithms"),
            "get-counters": self._get_counters,
            "reset-counters": self._simple("reset-counters", "name", "all"),
            "load-conn": self._simple("load-conn", whole=True),
            "unload-conn": self._simple("unload-conn", "name"),
            "load-shared": self._simple("load-shared", whole=True),
            "unload-shared": self._simple("unload-shared", "id"),
            "load-key": self._load_key,
            "unload-key": self._simple("unload-key", "id"),
            "load-cert": self._simple("load-cert", whole=True),
            "clear-creds": self._simple("clear-creds"),
        }
        for name, reason in UNSUPPORTED.items():
            commands[name] = self._unsupported(reason)
        return commands

    async def _call(self, name: str, args: dict[str, Any]) -> Any:
        return await self.handlers[name](args)

    def _simple(self, handler: str, *keys: str, whole: bool = False) -> ViciCommand:
        """A command answering just success/errmsg; KEYS are passed on (or the whole
        message with WHOLE)."""

        async def command(session: ViciSession, message: dict[str, Any]) -> dict[str, Any]:
            args = dict(message) if whole else {k: message[k] for k in keys if k in message}
            await self._call(handler, args)
            return _ok()

        return command

    def _passthrough(self, handler: str) -> ViciCommand:
        async def command(session: ViciSession, message: dict[str, Any]) -> Any:
            result: Mapping[str, Any] = await self._call(handler, dict(message))
            return result

        return command

    def _streamed(self, handler: str, event: str) -> ViciCommand:
        """A list-* command: the handler's list, one EVENT each, then an empty response."""

        async def command(session: ViciSession, message: dict[str, Any]) -> dict[str, Any]:
            for item in await self._call(handler, dict(message)):
                await session.send_event(event, item)
            return {}

        return command

    @staticmethod
    def _unsupported(reason: str) -> ViciCommand:
        async def command(session: ViciSession, message: dict[str, Any]) -> dict[str, Any]:
            return {"success": "no", "errmsg": reason}

        return command

    async def _version(self, session: ViciSession, message: dict[str, Any]) -> Any:
        result: Mapping[str, Any] = await self._call("version", {})
        return result

    async def _stats(self, session: ViciSession, message: dict[str, Any]) -> dict[str, Any]:
        stats = await self._call("stats", {})
        started = time.time() - float(stats.get("uptime", 0))
        return {
            "uptime": {
                "running": _running(time.time() - started),
                "since": time.strftime("%b %d %H:%M:%S %Y", time.localtime(started)),
            },
            # One asyncio thread does everything; it is busy answering this request.
            "workers": {
                "total": "1", "idle": "0",
                "active": {"critical": "0", "high": "0", "medium": "1", "low": "0"},
            },
            "queues": {"critical": "0", "high": "0", "medium": "0", "low": "0"},
            "scheduled": "0",
            "ikesas": {
                "total": str(stats.get("ike-sas-total", stats.get("ike-sas", 0))),
                "half-open": str(stats.get("ike-sas-half-open", 0)),
            },
            "plugins": ["ikev2", "esp", "nat-t", "tun", "control", "vici"],
        }  # fmt: skip

    async def _list_sas(self, session: ViciSession, message: dict[str, Any]) -> dict[str, Any]:
        for item in await self._call("list-sas", _selection(message)):
            await session.send_event("list-sa", vici_sa(item))
        return {}

    async def _get_counters(self, session: ViciSession, message: dict[str, Any]) -> dict[str, Any]:
        args: dict[str, Any] = {k: message[k] for k in ("name", "all") if k in message}
        result = await self._call("get-counters", args)
        return {"counters": result["counters"], "success": "yes"}

    async def _load_key(self, session: ViciSession, message: dict[str, Any]) -> dict[str, Any]:
        result = await self._call("load-key", dict(message))
        return _ok(id=result["id"])

    async def _initiate(self, session: ViciSession, message: dict[str, Any]) -> dict[str, Any]:
        ike, child = message.get("ike") or None, message.get("child") or None
        timeout = _seconds(message.get("timeout"))
        level = int(message.get("loglevel") or 1)
        args = {"ike": ike, "child": child, "timeout": timeout or _FOREVER}
        if timeout is None:  # -1: start it and answer at once
            task = asyncio.ensure_future(self._call("initiate", args))
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
            return _ok()
        connection = ike or await self._connection_of_child(child)
        async with self._control_log(session, connection, level):
            await self._call("initiate", args)
        return _ok()

    async def _terminate(self, session: ViciSession, message: dict[str, Any]) -> dict[str, Any]:
        timeout = _seconds(message.get("timeout"))
        level = int(message.get("loglevel") or 1)
        args = {**_selection(message), "wait": timeout or 0}
        async with self._control_log(session, message.get("ike") or None, level):
            result = await self._call("terminate", args)
        matches = len(result["ike_sas"]) + len(result["child_sas"])
        return _ok(matches=str(matches), terminated=str(result.get("terminated", 0)))

    async def _rekey(self, session: ViciSession, message: dict[str, Any]) -> dict[str, Any]:
        if _yes(message.get("reauth", "no")):
            raise RequestError(
                "reauthentication on request is not supported by aioipsec: rekey the IKE SA, "
                "or set reauth_time on the connection"
            )
        result = await self._call("rekey", _selection(message))
        return _ok(matches=str(len(result["ike_sas"]) + len(result["child_sas"])))

    async def _redirect(self, session: ViciSession, message: dict[str, Any]) -> dict[str, Any]:
        """RFC 5685 redirection of established IKE SAs (the daemon's ``redirect``); VICI's
        ``peer-ip``/``peer-id`` select by exact address and identity here."""
        keys = {"ike": "ike", "ike-id": "ike_id", "peer-ip": "peer_ip", "peer-id": "peer_id"}
        keys["gateway"] = "gateway"
        args = {key: message[vici_key] for vici_key, key in keys.items() if message.get(vici_key)}
        result = await self._call("redirect", args)
        return _ok(matches=str(len(result["ike_sas"])))

    async def _connection_of_child(self, child: str | None) -> str | None:
        for entry in await self._call("list-conns", {}):
            for name, conn in entry.items():
                if child in (conn.get("children") or {}):
                    return str(name)
        return None

    # ------------------------------------------------------------------ control-log

    @contextlib.asynccontextmanager
    async def _control_log(
        self, session: ViciSession, connection: str | None, level: int
    ) -> AsyncIterator[None]:
        """While the block runs, send SESSION the log of CONNECTION as control-log events
        (charon does it for initiate/terminate), if the client registered for them."""
        if not session.wants("control-log"):
            yield
            return
        remotes: set[str] = set()
        for entry in await self._call("list-conns", {"ike": connection} if connection else {}):
            for conn in entry.values():
                remotes.update(conn.get("remote_addrs") or [])

        def relevant(record: Mapping[str, Any]) -> bool:
            if record.get("type") == "event":
                return connection is None or record.get("connection") == connection
            if record.get("type") == "ike":
                remote = (record.get("remote") or ["?"])[0]
                return "%any" in remotes or not remotes or remote in remotes
            return False

        stream = await self._call("subscribe", {})
        iterator = stream.items.__aiter__()
        done = asyncio.Event()

        async def pump() -> None:
            finished = asyncio.ensure_future(done.wait())
            following: asyncio.Future[Any] | None = None
            try:
                while True:
                    following = asyncio.ensure_future(iterator.__anext__())
                    # Wait for the next record or the command's end, whichever comes
                    # first: waiting for a record alone held every initiate's answer for
                    # the 2 s limit below when the log had nothing more to say.
                    await asyncio.wait({following, finished}, return_when=asyncio.FIRST_COMPLETED)
                    try:
                        if following.done():
                            record = following.result()
                        else:
                            # The command finished: flush what is queued, then stop. The
                            # daemon queues a command's records before it answers, so a
                            # queued one is there at the task's first step; the wait (50 ms
                            # before) only bounds a record that is not there.
                            record = await asyncio.wait_for(following, 0.002)
                    except (StopAsyncIteration, TimeoutError):
                        return
                    if not relevant(record):
                        continue
                    for group, line_level, text in log_lines(record):
                        if line_level <= level:
                            await session.send_event(
                                "control-log", _log_message(group, line_level, text, record)
                            )
            finally:
                finished.cancel()
                if following is not None:
                    following.cancel()

        task = asyncio.ensure_future(pump())
        try:
            yield
        finally:
            done.set()
            with contextlib.suppress(asyncio.TimeoutError, Exception):
                await asyncio.wait_for(asyncio.shield(task), 2.0)
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            if stream.on_close is not None:
                stream.on_close()

    # ------------------------------------------------------------------ events

    def _registered(self, event: str, count: int) -> None:
        if event not in _STREAM_EVENTS:
            return
        wanted = any(self.server.registered_count(name) for name in _STREAM_EVENTS)
        if wanted and self._pump is None:
            self._pump = asyncio.ensure_future(self._run_pump())
        elif not wanted and self._pump is not None:
            self._pump.cancel()
            self._pump = None
            self._cache.clear()

    async def _stop_pump(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(BaseException):
                await self._pump
            self._pump = None

    async def _run_pump(self) -> None:
        stream = await self._call("subscribe", {})
        try:
            async for record in stream.items:
                try:
                    await self._record(record)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    _log.exception("vici_event_failed", record_type=record.get("type"))
        finally:
            if stream.on_close is not None:
                stream.on_close()

    async def _ike_entry(self, ike_sa_id: int, child_id: int | None = None) -> tuple[str, dict]:
        args: dict[str, Any] = {"ike_id": ike_sa_id}
        if child_id is not None:
            args["child_id"] = child_id
        for item in await self._call("list-sas", args):
            for name, entry in vici_sa(item).items():
                return str(name), entry
        return "", {}

    async def _child_entry(self, child_sa_id: int | None) -> dict[str, Any]:
        """The Child SA with this id, under whichever IKE SA holds it now ({} if gone)."""
        if child_sa_id is None:
            return {}
        for item in await self._call("list-sas", {"child_id": child_sa_id}):
            for entry in vici_sa(item).values():
                for child in (entry.get("child-sas") or {}).values():
                    if child.get("uniqueid") == str(child_sa_id):
                        return dict(child)
        return {}

    async def _remember(self, ike_sa_id: int) -> None:
        name, entry = await self._ike_entry(ike_sa_id)
        if name:
            self._cache[ike_sa_id] = (name, entry)

    async def _record(self, record: Mapping[str, Any]) -> None:
        broadcast = self.server.broadcast
        if self.server.registered_count("log"):
            for group, level, text in log_lines(record):
                if level <= 1:
                    broadcast("log", _log_message(group, level, text, record))
        if record.get("type") != "event":
            return
        name, fields = record.get("event"), record.get("fields", {})
        ike_id = int(record.get("ike_sa_id") or 0)
        conn = str(record.get("connection"))

        def without_children(entry: dict[str, Any]) -> dict[str, Any]:
            return {k: v for k, v in entry.items() if k != "child-sas"}

        if name == "IkeSaEstablished":
            await self._remember(ike_id)
            if ike_id in self._cache:
                sa_name, entry = self._cache[ike_id]
                broadcast("ike-updown", {"up": "yes", sa_name: without_children(entry)})
        elif name == "IkeSaDeleted":
            sa_name, entry = self._cache.pop(ike_id, (conn, {"uniqueid": str(ike_id)}))
            entry = {**without_children(entry), "state": "DELETING"}
            broadcast("ike-updown", {sa_name: entry})
        elif name == "ChildSaEstablished":
            child_id = int(fields.get("child_sa_id", 0))
            sa_name, entry = await self._ike_entry(ike_id, child_id)
            if sa_name:
                broadcast("child-updown", {"up": "yes", sa_name: entry})
            await self._remember(ike_id)
        elif name == "ChildSaDeleted":
            child_id = int(fields.get("child_sa_id", 0))
            sa_name, entry = self._cache.get(ike_id, (conn, {"uniqueid": str(ike_id)}))
            children = {
                key: {**child, "state": "DELETING"}
                for key, child in (entry.get("child-sas") or {}).items()
                if child.get("uniqueid") == str(child_id)
            }
            broadcast("child-updown", {sa_name: {**entry, "child-sas": children}})
            await self._remember(ike_id)
        elif name == "IkeSaRekeyed":
            old_id = int(fields.get("old_ike_sa_id", 0))
            old_name, old = self._cache.pop(old_id, (conn, {"uniqueid": str(old_id)}))
            await self._remember(ike_id)
            new_name, new = self._cache.get(ike_id, (old_name, {}))
            broadcast(
                "ike-rekey",
                {new_name: {"old": without_children(old), "new": without_children(new)}},
            )
        elif name == "ChildSaRekeyed":
            old_child = str(fields.get("old_child_sa_id"))
            sa_name, entry = self._cache.get(ike_id, (conn, {}))
            old_pair: tuple[str, dict[str, Any]] | None = next(
                (
                    (key, child)
                    for key, child in (entry.get("child-sas") or {}).items()
                    if child.get("uniqueid") == old_child
                ),
                None,
            )
            await self._remember(ike_id)
            new_entry = self._cache.get(ike_id, (sa_name, {}))[1]
            new_child: dict[str, Any] = next(
                (
                    child
                    for child in (new_entry.get("child-sas") or {}).values()
                    if old_pair is not None
                    and child.get("name") == old_pair[1].get("name")
                    and child.get("uniqueid") != old_child
                ),
                {},
            )
            if old_pair is not None and not new_child:
                # The IKE SA was rekeyed too before this listing ran (swanctl --rekey of the
                # child, then of the IKE SA): the new Child SA now sits under the new IKE SA.
                new_child = await self._child_entry(_new_child_sa_id(fields))
            if old_pair is not None:
                broadcast(
                    "child-rekey",
                    {sa_name: {**without_children(new_entry),
                               "child-sas": {old_pair[0]: {"old": old_pair[1], "new": new_child}}}},
                )  # fmt: skip
        elif name == "IkeSaAddressChanged":
            sa_name, entry = self._cache.get(ike_id, (conn, {}))
            local, remote = fields.get("local_addr", ["", 0]), fields.get("remote_addr", ["", 0])
            broadcast(
                "ike-update",
                {"local-host": local[0], "local-port": str(local[1]),
                 "remote-host": remote[0], "remote-port": str(remote[1]),
                 sa_name: without_children(entry)},
            )  # fmt: skip
            await self._remember(ike_id)
        elif name in ("NegotiationFailed", "AuthenticationFailed", "PeerUnreachable"):
            self._alert(name, fields, ike_id, conn)

    def _alert(self, name: str, fields: Mapping[str, Any], ike_id: int, conn: str) -> None:
        """strongSwan's ``alert`` event for the failures the engine reports."""
        if name == "AuthenticationFailed":
            # "peer-rejected": the peer refused our AUTH (charon: local-auth-failed).
            rejected = fields.get("check") == "peer-rejected"
            kind = "local-auth-failed" if rejected else "peer-auth-failed"
        elif name == "PeerUnreachable":
            kind = "retransmit-send-timeout"
        else:
            notify = fields.get("notify")
            notify_name = getattr(notify, "name", str(notify))
            kind = _ALERTS.get(notify_name, "")
            if kind == "peer-auth-failed" and fields.get("received"):
                kind = "local-auth-failed"  # the peer refused our authentication
            if kind == "proposal-mismatch-ike" and fields.get("child"):
                kind = "proposal-mismatch-child"
            if not kind:
                return
        entry = self._cache.get(ike_id, (conn, {"uniqueid": str(ike_id)}))
        self.server.broadcast("alert", {"type": kind, "ike-sa": {entry[0]: entry[1]}})


def _new_child_sa_id(fields: Mapping[str, Any]) -> int | None:
    """The new Child SA's id of a ChildSaRekeyed record (its ``new`` field is the event's
    ChildSaEstablished, or its mapping once serialized)."""
    new = fields.get("new")
    if isinstance(new, Mapping):
        value = new.get("child_sa_id")
    else:
        value = getattr(new, "child_sa_id", None)
    return int(value) if value is not None else None
