"""Reload (SIGHUP, ``aioipsec reload``): the configuration re-read and applied to new
negotiations, the log file reopened, systemd told (RELOADING=1, READY=1)."""

from __future__ import annotations

import contextlib
from typing import Any

import structlog

from aioipsec.control import RequestError
from aioipsec.daemon.state import DaemonState, status_line
from aioipsec.log import reopen_log_file
from aioipsec.sdnotify import notify

log = structlog.get_logger("aioipsec.daemon")


class Reloading(DaemonState):
    """SIGHUP and ``reload``: new settings in force, running SAs kept."""

    def _request_reload(self) -> None:
        self.loop.create_task(self._reload_notified())

    async def _reload_notified(self) -> None:
        """A reload systemd hears about (sd_notify: RELOADING=1, then READY=1 again)."""
        notify("RELOADING=1", "STATUS=reloading the configuration")
        try:
            await self.reload()
        finally:
            notify("READY=1", "STATUS=" + status_line(self))

    def _on_sighup(self) -> None:
        """SIGHUP, as for charon and most daemons: reopen the log file (logrotate moved
        it), then re-read the configuration."""
        with contextlib.suppress(RequestError):  # logged: the old file stays in use
            self._reopen_logs()
        self._request_reload()

    def _reopen_logs(self) -> str | None:
        try:
            path = reopen_log_file()
        except OSError as exc:
            log.error("cannot reopen the log file: still writing to the old one", error=str(exc))
            raise RequestError(f"cannot reopen the log file: {exc}") from exc
        if path is not None:
            log.info("log file reopened", path=path)
        return path

    async def reload(self) -> dict[str, Any]:
        """Re-read the configuration files (SIGHUP, ``aioipsec reload``).

        A broken file changes nothing: the error is logged/returned and the running
        configuration stays. Existing SAs are kept; new/changed connections apply to new
        negotiations.
        """
        assert self.driver is not None and self.datapath is not None
        try:
            settings = self.options.load()
            # What was loaded over the sockets (load-conn, load-shared, ...) stays.
            self._overlay(settings)
            configs = engine_configs(self._config_module, settings)
        except Exception as exc:
            log.error("reload failed, keeping the running configuration", error=str(exc))
            return {"reloaded": False, "error": str(exc)}
        old_configs = {c.name: c for c in self.engine_configs}
        self._apply_settings(settings, configs)
        if self.remote_access is not None:
            self.remote_access.reload(settings.pools.values())
        summary = self._reload_summary(old_configs, configs)
        for state in self.ike_sas.values():
            if state.established.connection in summary["changed"]:
                self._outdated_ike_sas.add(state.established.ike_sa_id)
        log.info(
            "configuration reloaded",
            added=summary["added"],
            removed=summary["removed"],
            changed=summary["changed"],
            unchanged=summary["unchanged"],
        )
        return {"reloaded": True, "connections": [c.name for c in configs], **summary}

    def _apply_settings(self, settings: Any, configs: list[Any] | None = None) -> list[Any]:
        """Make SETTINGS the running configuration: engine configs (CONFIGS when already
        converted), PSK lookup, traps, and the start actions of connections that are new.
        Raises ConfigError (nothing changed) when SETTINGS do not convert."""
        assert self.driver is not None and self.datapath is not None
        if configs is None:
            configs = engine_configs(self._config_module, settings)
        old_names = {c.name for c in self.engine_configs}
        self.settings = settings
        self.engine_configs = configs
        self.psk_lookup = settings.psk_lookup
        self.driver.dispatcher.set_configs(configs)
        self._reload_fail_closed(configs)
        self._apply_shunts()
        self.datapath.clear_traps()
        self._apply_start_actions([c for c in configs if c.name not in old_names])
        for config in configs:
            if config.name in old_names:
                for child in config.children:
                    if child.start_action == "trap":
                        self.datapath.add_trap(config, child)
        return configs

    def _reload_summary(self, old: dict[str, Any], configs: list[Any]) -> dict[str, Any]:
        """What a reload changed, and what that did to the running SAs (``reload``'s
        answer): SAs are never torn down by a reload; a change applies to the next
        negotiation, as with ``swanctl --load-conns``."""
        new = {c.name: c for c in configs}
        added = sorted(set(new) - set(old))
        removed = sorted(set(old) - set(new))
        changed = sorted(n for n in set(new) & set(old) if not _same_config(old[n], new[n]))
        unchanged = sorted(n for n in set(new) & set(old) if n not in changed)
        running: dict[str, int] = {}
        for state in self.ike_sas.values():
            name = state.established.connection
            running[name] = running.get(name, 0) + 1
        effects: list[str] = []
        for name in added:
            starts = [c.name for c in new[name].children if c.start_action == "start"]
            traps = [c.name for c in new[name].children if c.start_action == "trap"]
            if starts:
                effects.append(f"{name}: added, initiating {', '.join(starts)} (start_action)")
            elif traps:
                effects.append(f"{name}: added, trap policies for {', '.join(traps)}")
            else:
                effects.append(f"{name}: added (start it with 'aioipsec initiate --ike {name}')")
        kept = {
            "removed": "{n} IKE SA(s) keep running until they end or you run 'aioipsec "
            "terminate --ike {name}'",
            "changed": "{n} IKE SA(s) keep running with the old settings; 'aioipsec initiate' "
            "negotiates a new IKE SA with the new ones ('aioipsec terminate --ike {name}' "
            "closes the old)",
        }
        for what, names in (("removed", removed), ("changed", changed)):
            for name in names:
                n = running.get(name, 0)
                effects.append(
                    f"{name}: {what}; its " + kept[what].format(n=n, name=name)
                    if n
                    else f"{name}: {what} (no SA was up)"
                )
        return {
            "added": added,
            "removed": removed,
            "changed": changed,
            "unchanged": unchanged,
            "effects": effects,
        }


def engine_configs(config_module: Any, settings: Any) -> list[Any]:
    """The engine's IkeConfigs; ``to_engine_configs`` applies the daemon-wide ``[daemon]``
    retransmission settings (strongSwan's charon.retransmit_*) to every connection."""
    return config_module.to_engine_configs(settings)


def _same_config(old: Any, new: Any) -> bool:
    """Whether two engine connection configs are equal (dataclass equality; repr when a
    field does not compare)."""
    try:
        return bool(old == new)
    except Exception:
        return repr(old) == repr(new)
