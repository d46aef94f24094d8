"""The daemon's side of the fail-closed rules (:mod:`aioipsec.runtime.failclosed`):
installed at start (taking over an earlier daemon's), updated when Child SAs come up, on
terminate and on reload, kept or removed at stop (docs/hardening.md, "Fail closed"); and
the shunt policies of pass/drop children (:mod:`aioipsec.runtime.shunts`), which go with
them."""

from __future__ import annotations

from typing import Any

import structlog

from aioipsec.control import RequestError, SaSelector
from aioipsec.daemon.state import DaemonState, StartupError
from aioipsec.runtime import shunts
from aioipsec.runtime.failclosed import (
    ChildKey,
    FailClosed,
    FailClosedError,
    address_range,
    plan_for_configs,
    range_text,
    remove_table,
)
from ikev2 import events as ev

log = structlog.get_logger("aioipsec.daemon")


class FailClosedRules(DaemonState):
    """Fail-closed rules and shunts of the loaded connections over the daemon's life."""

    def _apply_shunts(self, starting: bool = False) -> None:
        """strongSwan's pass/drop children as kernel state (aioipsec/runtime/shunts.py): at
        start a failure stops the daemon (a drop policy must not be missing), on reload it
        is logged and the previous shunts stay."""
        wanted = shunts.shunts_of(self.settings.connections)
        if not wanted and not getattr(self, "_shunts_installed", False):
            return
        try:
            shunts.apply(wanted)
        except shunts.ShuntError as error:
            if starting:
                raise StartupError(
                    f"{error} (the pass/drop children of the configuration)"
                ) from None
            log.error("shunt policies not changed", error=str(error))
            return
        if not getattr(self, "_shunts_installed", False):
            self._cleanups.append(self._remove_shunts)
        self._shunts_installed = True
        log.info("shunt policies installed", shunts=[s.name for s in wanted])

    def _remove_shunts(self) -> None:
        """At stop: the shunts go with the fail-closed rules, or stay with them (a pass
        shunt keeps its traffic out of the kept drop rules, as while we ran)."""
        daemon = self.settings.daemon
        if getattr(daemon, "fail_closed", True) and getattr(daemon, "fail_closed_after_stop", True):
            return
        try:
            shunts.remove()
        except shunts.ShuntError as error:
            log.warning("shunt policies not removed", error=str(error))

    def _start_fail_closed(self) -> None:
        """Install the fail-closed rules for the loaded connections, taking over those a
        previous daemon left (docs/hardening.md, "Fail closed")."""
        if not getattr(self.settings.daemon, "fail_closed", True):
            log.warning(
                "fail_closed = false: traffic to the remote selectors leaves in clear "
                "whenever the daemon is not running or a tunnel is down"
            )
            return
        plans = plan_for_configs(self.engine_configs)
        try:
            fail_closed = FailClosed(self.tun_name)
            adoption = fail_closed.adopt(plans)
        except FailClosedError as exc:
            raise StartupError(str(exc)) from None
        self.fail_closed = fail_closed
        self._fail_closed_plans = plans
        self._cleanups.append(self._release_fail_closed)
        previous = adoption.previous
        if previous is not None and previous.owner is not None:
            log.info(
                "took over the fail-closed rules of an earlier daemon",
                previous_pid=previous.owner.pid,
                previous_state=previous.owner.state,
                dropped_while_down=previous.dropped,
                children=[f"{c}/{n}" for c, n in adoption.adopted],
            )
        for (connection, child), ranges in adoption.stale.items():
            log.warning(
                "fail-closed rules of a connection no longer loaded removed",
                connection=connection,
                child=child,
                selectors=[range_text(r) for r in ranges],
            )
        log.info("fail-closed rules installed", rules=fail_closed.listing())

    def _release_fail_closed(self) -> None:
        fail_closed = self.fail_closed
        if fail_closed is None:
            return
        self.fail_closed = None
        if self._start_failed:
            # A bad start leaves nothing behind, but never opens what an earlier daemon
            # had closed: its rules stay (now in our name) until a daemon runs again.
            if not fail_closed.existed_before:
                remove_table()
            return
        keep = getattr(self.settings.daemon, "fail_closed_after_stop", True)
        fail_closed.stop(keep)
        if keep:
            log.info(
                "fail-closed rules kept after the stop: traffic to the remote selectors is "
                "dropped until the daemon runs again or 'aioipsec cleanup' removes them"
            )
        else:
            log.info("fail-closed rules removed (fail_closed_after_stop = false)")

    def _close_child(self, event: ev.ChildSaEstablished) -> None:
        """A Child SA is installed: its config is closed (again, after a terminate) and
        covers the negotiated remote selectors (those a ``dynamic`` child learns)."""
        if self.fail_closed is None:
            return
        key = (event.connection, event.child)
        ranges = [address_range(ts.start, ts.end) for ts in event.remote_ts]
        try:
            if self.fail_closed.close(key, self._fail_closed_plans.get(key), ranges):
                log.info(
                    "fail-closed rules updated",
                    connection=event.connection,
                    child=event.child,
                    selectors=self.fail_closed.listing().get(f"{key[0]}/{key[1]}"),
                )
        except FailClosedError as exc:
            log.error("cannot update the fail-closed rules", error=str(exc))

    def _open_children(self, keys: list[ChildKey]) -> list[str]:
        """An explicit terminate: children with ``start_action = none`` lose their
        fail-closed rules (the others come back by themselves, so they stay closed)."""
        if self.fail_closed is None:
            return []
        wanted = []
        for config in self.engine_configs:
            for child in config.children:
                key = (config.name, child.name)
                if key in keys and child.start_action == "none" and key not in wanted:
                    wanted.append(key)
        try:
            opened = self.fail_closed.open(wanted)
        except FailClosedError as exc:
            raise RequestError(f"cannot remove the fail-closed rules: {exc}") from None
        names = [f"{connection}/{child}" for connection, child in opened]
        if names:
            log.info("fail-closed rules removed by terminate", children=names)
        return names

    def _terminated_keys(
        self, selector: SaSelector, ike_sas: list[int], children: list[tuple[int, int]]
    ) -> list[ChildKey]:
        """The Child configs a terminate names: those of the selected SAs, or, when no SA
        is up, those of the named connection or child (not for SA ids: an id that matches
        nothing names no config)."""
        keys: list[ChildKey] = []
        for ike_sa_id in ike_sas:
            state = self.ike_sas.get(ike_sa_id)
            if state is not None:
                connection = state.established.connection
                for config in self.engine_configs:
                    if config.name == connection:
                        keys += [(connection, child.name) for child in config.children]
        for ike_sa_id, child_sa_id in children:
            state = self.ike_sas.get(ike_sa_id)
            child_event = state.children.get(child_sa_id) if state is not None else None
            if child_event is not None:
                keys.append((child_event.connection, child_event.child))
        if not ike_sas and not children:
            if selector.ike_id is not None or selector.child_id is not None:
                return []
            if selector.ike is None and selector.child is None:
                return []
            for config in self.engine_configs:
                if selector.ike is not None and config.name != selector.ike:
                    continue
                for child in config.children:
                    if selector.child is None or child.name == selector.child:
                        keys.append((config.name, child.name))
        return keys

    def _reload_fail_closed(self, configs: list[Any]) -> None:
        """Unloaded children lose their fail-closed rules; new and changed ones get them."""
        if self.fail_closed is None:
            return
        plans = plan_for_configs(configs)
        changed = {key for key, plan in plans.items() if self._fail_closed_plans.get(key) != plan}
        try:
            removed = self.fail_closed.reload(plans, changed)
        except FailClosedError as exc:
            log.error("cannot update the fail-closed rules", error=str(exc))
            return
        self._fail_closed_plans = plans
        if removed:
            log.info(
                "fail-closed rules of unloaded connections removed",
                children=[f"{connection}/{child}" for connection, child in removed],
            )
