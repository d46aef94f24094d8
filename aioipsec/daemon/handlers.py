"""The one command table (:meth:`ControlHandlers.control_handlers`) and the handlers that
came before VICI: ``sas``, ``initiate``, ``terminate``, ``rekey``, ``stats``, ... (those
that came with VICI are in :mod:`aioipsec.commands`). The JSON control socket serves the
table as it is, the VICI socket through :mod:`aioipsec.vici.commands`."""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aioipsec.commands import DaemonCommands
from aioipsec.control import RequestError, SaSelector, sa_selector
from aioipsec.daemon.state import DaemonState
from aioipsec.runtime.listing import child_sa_listing, ike_sa_listing, ike_sa_timers
from ikev2 import events as ev

_FAILURE_EVENTS = (
    ev.AuthenticationFailed,
    ev.NegotiationFailed,
    ev.IkeSaDeleted,
    ev.RedirectRefused,
)


class ControlHandlers(DaemonCommands, DaemonState):
    """The control commands, found by name in :meth:`control_handlers` only."""

    def control_handlers(self) -> dict[str, Callable[[dict[str, Any]], Awaitable[Any]]]:
        """The one command table: the JSON control socket serves it as it is, the VICI
        socket through aioipsec.vici.commands (which maps VICI's commands onto these)."""
        return {
            "sas": self._cmd_sas,
            "list-sas": self._cmd_sas,
            "conns": self._cmd_conns,
            "list-conns": self._cmd_list_conns,
            "pools": self._cmd_pools,
            "policies": self._cmd_policies,
            "list-policies": self._cmd_list_policies,
            "stats": self._cmd_stats,
            "version": self._cmd_version,
            "initiate": self._cmd_initiate,
            "terminate": self._cmd_terminate,
            "rekey": self._cmd_rekey,
            "install": self._cmd_install,
            "uninstall": self._cmd_uninstall,
            "reload": self._cmd_reload,
            "reopen-logs": self._cmd_reopen_logs,
            "subscribe": self._cmd_subscribe,
            "redirect": self.cluster.cmd_redirect,
            "drain": self.cluster.cmd_drain,
            "get-counters": self._cmd_get_counters,
            "reset-counters": self._cmd_reset_counters,
            "get-algorithms": self._cmd_get_algorithms,
            "load-conn": self._cmd_load_conn,
            "unload-conn": self._cmd_unload_conn,
            "get-conns": self._cmd_get_conns,
            "load-shared": self._cmd_load_shared,
            "unload-shared": self._cmd_unload_shared,
            "get-shared": self._cmd_get_shared,
            "load-key": self._cmd_load_key,
            "unload-key": self._cmd_unload_key,
            "get-keys": self._cmd_get_keys,
            "load-cert": self._cmd_load_cert,
            "clear-creds": self._cmd_clear_creds,
            "list-certs": self._cmd_list_certs,
            "list-authorities": self._cmd_list_authorities,
            "get-authorities": self._cmd_get_authorities,
            "get-pools": self._cmd_get_pools,
            "load-pool": self._cmd_load_pool,
            "unload-pool": self._cmd_unload_pool,
        }

    async def _cmd_sas(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        """``swanctl --list-sas`` / VICI ``list-sas``: one ``{name: ike_sa}`` dict per SA,
        with the IKE SA's rekey/reauth/expiry timers and each Child SA's reqid and the
        seconds since its last packet in and out, as charon lists them."""
        assert self.driver is not None and self.datapath is not None
        wanted_ike, wanted_ike_id = args.get("ike"), args.get("ike_id")
        wanted_child, wanted_child_id = args.get("child"), args.get("child_id")
        result = []
        now_wall = time.time()
        for info in self._sa_infos(wanted_ike_id):
            state = self.ike_sas.get(info.ike_sa_id)
            if wanted_ike and info.connection != wanted_ike:
                continue
            if wanted_ike_id and info.ike_sa_id != int(wanted_ike_id):
                continue
            entry = ike_sa_listing(info, state, now_wall)
            if state is not None:
                timers = self.driver.dispatcher.ike_sa(info.ike_sa_id).timers
                entry.update(ike_sa_timers(timers.get, self.driver.now()))
            children: dict[str, dict[str, Any]] = {}
            if state is not None:
                for child in state.children.values():
                    if wanted_child and child.child != wanted_child:
                        continue
                    if wanted_child_id and child.child_sa_id != int(wanted_child_id):
                        continue
                    counters = self.datapath.child_counters(child.child_sa_id)
                    installed = self.datapath.children.get(child.child_sa_id)
                    if installed is not None:
                        counters["reqid"] = installed.reqid
                    use = self._last_use.get(child.child_sa_id)
                    if use is not None:
                        for direction, at in (("in", use[1]), ("out", use[3])):
                            if at >= 0:
                                counters[f"use_{direction}"] = now_wall - at
                    key = f"{child.child}-{child.child_sa_id}"
                    children[key] = child_sa_listing(child, counters, now_wall)
            entry["child-sas"] = children
            result.append({info.connection: entry})
        return result

    def _sa_infos(self, ike_sa_id: Any = None) -> list[Any]:
        """The engine's snapshots of every live IKE SA, or of one (without building the
        others': the VICI events ask for one SA per engine event)."""
        assert self.driver is not None
        dispatcher = self.driver.dispatcher
        if not ike_sa_id:
            return list(dispatcher.sas())
        try:
            sa = dispatcher.ike_sa(int(ike_sa_id))
        except Exception:  # no such SA (any more)
            return []
        return [sa.info()] if sa.alive else []

    async def _cmd_pools(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        """The address pools and their leases (``swanctl --list-pools --leases``)."""
        if self.remote_access is None:
            return []
        return self.remote_access.listing(leases=bool(args.get("leases", True)))

    async def _cmd_conns(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        """``swanctl --list-conns`` / VICI ``list-conns`` (never contains secrets)."""
        return self._config_module.connection_listing(self.settings)

    async def _cmd_policies(self, args: dict[str, Any]) -> dict[str, Any]:
        assert self.datapath is not None and self.routes is not None
        return {
            "policies": self.datapath.policies_listing(),
            "text": self.datapath.policies_text(),
            "routes": self.routes.routes(),
            "fail-closed": (
                self.fail_closed.listing() if self.fail_closed is not None else "disabled"
            ),
        }

    async def _cmd_stats(self, args: dict[str, Any]) -> dict[str, Any]:
        assert self.driver is not None and self.datapath is not None
        sas = self.driver.dispatcher.sas()
        return {
            "pid": os.getpid(),
            "uptime": round(time.time() - self.started_at, 1),
            "ike-sas": len(self.ike_sas),
            # strongSwan's "half-open": IKE SAs not yet established (IKE_SA_INIT/IKE_AUTH).
            "ike-sas-total": len(sas),
            "ike-sas-half-open": sum(1 for info in sas if info.ike_sa_id not in self.ike_sas),
            "ike-messages-in": self.driver.messages_in,
            "ike-messages-out": self.driver.messages_out,
            # The engine's responder counters (cookie_demanded, init_blocked, no_config,
            # ...): how a flood of IKE_SA_INIT shows (RFC 7296 sec. 2.6, RFC 8019).
            "ike": dict(self.driver.dispatcher.counters),
            # Half-open SAs per /24 or /64 ("preferred": configured peers), issue 13 F2.
            "half-open": self.driver.dispatcher.half_open_by_prefix(),
            "log": self.log_budget.stats() if self.log_budget is not None else {},
            "ike500-send-errors": sum(p.send_errors for p in self.port500),
            "sockets": {
                s.name: {"datagrams-in": s.datagrams_in, "send-errors": s.send_errors}
                for s in [*self.port4500, *self.raw_esp]
            },
            "esp": self.datapath.stats(),
            # What a long run must keep constant (issue 20, bench.churn_soak): a task or a
            # descriptor left behind per SA shows here.
            "tasks": len(asyncio.all_tasks()),
            "open-fds": len(os.listdir("/proc/self/fd")),
        }

    async def _cmd_initiate(self, args: dict[str, Any]) -> dict[str, Any]:
        """Start a Child SA (and its IKE SA when there is none) and wait for that Child SA,
        as ``swanctl --initiate`` does: an IKE SA whose Child SA the peer refused (e.g.
        NO_PROPOSAL_CHOSEN in IKE_AUTH, RFC 7296 sec. 1.2) is a failure, not a success."""
        assert self.driver is not None
        child = args.get("child")
        ike = args.get("ike")
        if ike is None:
            ike = self._connection_of_child(child)
        config = next((c for c in self.engine_configs if c.name == ike), None)
        if config is None:
            raise RequestError(f"no connection named {ike!r}")
        if child is not None and not any(c.name == child for c in config.children):
            raise RequestError(f"connection {ike!r} has no child named {child!r}")
        # The engine negotiates the first child in IKE_AUTH when none is named.
        wanted = child if child is not None else (
            config.children[0].name if config.children else None
        )  # fmt: skip
        timeout = float(args.get("timeout", 10.0))
        existing = next(
            (
                s
                for s in self.ike_sas.values()
                if s.established.connection == ike
                and s.established.ike_sa_id not in self._outdated_ike_sas
            ),
            None,
        )
        # Only events of the IKE SA this request started (or the one it uses) count.
        target: list[int] = [] if existing is None else [existing.established.ike_sa_id]

        def ours(e: ev.Event) -> bool:
            return e.connection == ike and (not target or e.ike_sa_id == target[0])

        def succeeded(e: ev.Event) -> bool:
            if not ours(e):
                return False
            if wanted is None:
                return isinstance(e, ev.IkeSaEstablished)
            return isinstance(e, ev.ChildSaEstablished) and e.child == wanted

        def failed(e: ev.Event) -> bool:
            if isinstance(e, ev.IkeSaRedirected) and ours(e):
                target.clear()  # RFC 5685: the SA that comes up is a new one (any id)
                return False
            if isinstance(e, ev.IkeSaDeleted) and e.reason.startswith("redirected to"):
                return False
            if not ours(e):
                return False
            if isinstance(e, ev.RedirectRefused):
                return True
            if isinstance(e, ev.NegotiationFailed):
                return e.child is None or e.child == wanted
            return isinstance(e, ev.AuthenticationFailed | ev.IkeSaDeleted | ev.PeerUnreachable)

        waiter = self._wait_for(succeeded, failed)
        if existing is not None and wanted is not None:
            self.driver.call(
                self.driver.dispatcher.create_child, existing.established.ike_sa_id, wanted
            )
        else:
            # --ike NAME: all the connection's children, the first in IKE_AUTH (waited for).
            others = [c.name for c in config.children[1:]] if child is None else []
            target.append(
                self.driver.call(
                    self.driver.dispatcher.initiate, ike, child=child, children=others or None
                )
            )
        what = f"{ike}/{wanted}" if wanted else ike
        try:
            event = await asyncio.wait_for(waiter, timeout)
        except TimeoutError as exc:
            raise RequestError(
                f"{what}: timed out after {timeout:g}s without an answer from the peer "
                "(see the log; 'aioipsec doctor' checks ports and firewall)"
            ) from exc
        if isinstance(event, ev.PeerUnreachable):
            raise RequestError(f"{what}: peer {event.remote_addr} unreachable")
        if isinstance(event, _FAILURE_EVENTS):
            raise RequestError(f"{what}: {event.reason}")
        return {
            "message": f"initiated {what} (IKE SA #{event.ike_sa_id}"
            + (
                f", CHILD SA #{event.child_sa_id})"
                if isinstance(event, ev.ChildSaEstablished)
                else ")"
            ),
            "ike": ike,
            "child": wanted,
            "ike_sa_id": event.ike_sa_id,
        }

    def _select(self, selector: SaSelector) -> tuple[list[int], list[tuple[int, int]]]:
        """The IKE SAs and (IKE SA, Child SA) pairs named by ike/child/ike_id/child_id, or
        every IKE SA for an explicit ``all``; empty when nothing matches. The selector was
        checked by ``control.sa_selector`` before anything is looked up."""
        ike_sas: list[int] = []
        children: list[tuple[int, int]] = []
        for state in self.ike_sas.values():
            established = state.established
            if selector.ike is not None and established.connection != selector.ike:
                continue
            if selector.ike_id is not None and established.ike_sa_id != selector.ike_id:
                continue
            if selector.child is not None or selector.child_id is not None:
                for child_sa in state.children.values():
                    if (selector.child is None or child_sa.child == selector.child) and (
                        selector.child_id is None or child_sa.child_sa_id == selector.child_id
                    ):
                        children.append((established.ike_sa_id, child_sa.child_sa_id))
            else:
                ike_sas.append(established.ike_sa_id)
        return ike_sas, children

    @staticmethod
    def _no_match(selector: SaSelector) -> RequestError:
        named = {
            "ike": selector.ike,
            "child": selector.child,
            "ike_id": selector.ike_id,
            "child_id": selector.child_id,
        }
        return RequestError(
            "no SA matches " + ", ".join(f"{k}={v}" for k, v in named.items() if v is not None)
        )

    async def _cmd_terminate(self, args: dict[str, Any]) -> dict[str, Any]:
        assert self.driver is not None
        dispatcher = self.driver.dispatcher
        selection = {key: value for key, value in args.items() if key != "wait"}
        # The selector is checked first, on every path: a bad one is an error and never
        # removes fail-closed rules (issue 13 F5).
        selector = sa_selector("terminate", selection)
        wait = args.get("wait") or 0
        if isinstance(wait, bool) or not isinstance(wait, int | float) or not 0 <= wait < math.inf:
            raise RequestError("terminate: wait must be a number of seconds, 0 or more")
        ike_sas, children = self._select(selector)
        opened = self._open_children(self._terminated_keys(selector, ike_sas, children))
        if not ike_sas and not children and not selector.all:
            # No SA, but a loaded start_action = none connection can still be opened.
            if not opened:
                raise self._no_match(selector)
            return {
                "message": "no SA to terminate; fail-closed rules removed for " + ", ".join(opened),
                "ike_sas": [],
                "child_sas": [],
                "fail_closed_removed": opened,
            }
        for ike_sa_id, child_sa_id in children:
            self.driver.call(dispatcher.terminate_child, ike_sa_id, child_sa_id)
        for ike_sa_id in ike_sas:
            self.driver.call(dispatcher.terminate_ike, ike_sa_id)
        # wait = seconds to wait for the SAs to be gone (VICI terminate waits; 0: not).
        deadline = self.loop.time() + wait
        while wait and self.loop.time() < deadline and self._remaining(ike_sas, children):
            await asyncio.sleep(0.05)
        remaining = self._remaining(ike_sas, children) if wait else 0
        if remaining:
            raise RequestError(
                f"terminate timed out: {remaining} of {len(ike_sas) + len(children)} SA(s) "
                f"still there after {wait:g} s (the peer does not answer the DELETE?)"
            )
        message = f"terminating {len(ike_sas)} IKE SA(s), {len(children)} CHILD SA(s)"
        if opened:
            message += "; fail-closed rules removed for " + ", ".join(opened)
        return {
            "message": message,
            "ike_sas": ike_sas,
            "child_sas": [c for _, c in children],
            "terminated": len(ike_sas) + len(children) if wait else 0,
            "fail_closed_removed": opened,
        }

    def _remaining(self, ike_sas: list[int], children: list[tuple[int, int]]) -> int:
        """How many of these SAs still exist."""
        alive = sum(1 for ike_sa_id in ike_sas if ike_sa_id in self.ike_sas)
        for ike_sa_id, child_sa_id in children:
            state = self.ike_sas.get(ike_sa_id)
            alive += state is not None and child_sa_id in state.children
        return alive

    async def _cmd_rekey(self, args: dict[str, Any]) -> dict[str, Any]:
        assert self.driver is not None
        dispatcher = self.driver.dispatcher
        selector = sa_selector("rekey", args)
        ike_sas, children = self._select(selector)
        if not ike_sas and not children and not selector.all:
            raise self._no_match(selector)
        for ike_sa_id, child_sa_id in children:
            self.driver.call(dispatcher.rekey_child, ike_sa_id, child_sa_id)
        for ike_sa_id in ike_sas:
            self.driver.call(dispatcher.rekey_ike, ike_sa_id)
        return {
            "message": f"rekeying {len(ike_sas)} IKE SA(s), {len(children)} CHILD SA(s)",
            "ike_sas": ike_sas,
            "child_sas": [c for _, c in children],
        }

    async def _cmd_reload(self, args: dict[str, Any]) -> dict[str, Any]:
        result = await self.reload()
        if not result.get("reloaded"):
            raise RequestError(result.get("error", "reload failed"))
        return result

    async def _cmd_reopen_logs(self, args: dict[str, Any]) -> dict[str, Any]:
        path = self._reopen_logs()
        if path is None:
            return {"message": "the daemon logs to stderr: no log file to reopen", "path": None}
        return {"message": f"log file {path} reopened", "path": path}

    def _connection_of_child(self, child: str | None) -> str:
        if child is None:
            raise RequestError("name a child (--child) or a connection (--ike)")
        for config in self.engine_configs:
            if any(c.name == child for c in config.children):
                return config.name
        raise RequestError(f"no connection has a child named {child!r}")

    def _wait_for(
        self, success: Callable[[ev.Event], bool], failure: Callable[[ev.Event], bool]
    ) -> asyncio.Future[ev.Event]:
        """A future resolved by the first event matching SUCCESS or FAILURE."""
        future: asyncio.Future[ev.Event] = self.loop.create_future()
        original = self._on_event

        def watching(event: ev.Event) -> None:
            original(event)
            if not future.done() and (success(event) or failure(event)):
                future.set_result(event)

        assert self.driver is not None
        self.driver._on_event = watching

        def restore(_: object) -> None:
            if self.driver is not None and self.driver._on_event is watching:
                self.driver._on_event = original

        future.add_done_callback(restore)
        return future
