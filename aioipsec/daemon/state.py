"""What the parts of the daemon share: the state of one running daemon, declared once.

:class:`aioipsec.daemon.core.Daemon` is composed of mixins (one per concern: sockets,
engine events, Child SA glue, fail-closed rules, reload, control commands, event stream);
each of them derives from :class:`DaemonState`, which declares the attributes the Daemon
sets in ``__init__``/``start`` and the methods one part calls on another, so every part is
type-checked against the same names.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from aioipsec.cluster.runtime import ClusterRuntime
from aioipsec.control import ControlServer, SaSelector
from aioipsec.log import RateLimitedLogger
from aioipsec.radius.relay import RadiusService
from aioipsec.ratelimit import LogBudget
from aioipsec.runtime.datapath import DataPath
from aioipsec.runtime.engine import EngineDriver
from aioipsec.runtime.failclosed import ChildKey, ChildPlan, FailClosed
from aioipsec.runtime.farp import ProxyNeighbours
from aioipsec.runtime.pmtu import PathMtu
from aioipsec.runtime.remote_access import RemoteAccess
from aioipsec.runtime.routes import RouteManager
from aioipsec.runtime.sockets import DrainingSocket, IkePort500, LocalAddressCache, RawEspSocket
from aioipsec.runtime.updown import UpdownRunner
from ikev2 import events as ev

DEFAULT_KEEPALIVE_INTERVAL = 20.0
SHUTDOWN_DELETE_WAIT = 2.0


class StartupError(RuntimeError):
    """The daemon refuses to start; the message says why (already user-facing)."""


@dataclass(slots=True)
class IkeSaState:
    """What the daemon remembers about one established IKE SA."""

    established: ev.IkeSaEstablished
    established_at: float  # wall clock, for listings
    children: dict[int, ev.ChildSaEstablished] = field(default_factory=dict)
    keepalive: asyncio.Task[None] | None = None


class DaemonState:
    """The running daemon's state (set by ``Daemon.__init__`` and ``Daemon.start``) and
    the methods its parts call on each other, declared for the type checker."""

    options: Any
    settings: Any  # aioipsec.config.Configuration
    loop: asyncio.AbstractEventLoop
    _config_module: Any  # the aioipsec.config package (ConfigError, to_engine_configs, ...)
    ike_port: int
    nat_t_port: int
    tun_name: str
    control_path: str
    keepalive_interval: float
    engine_configs: list[Any]
    psk_lookup: Any
    local_addresses: LocalAddressCache
    updown: UpdownRunner
    ike_sas: dict[int, IkeSaState]
    _keying_attempts: dict[str, int]
    _keying_pending: set[str]
    _stopping: asyncio.Event
    _tasks: list[asyncio.Task[Any]]
    _cleanups: list[Callable[[], Any]]
    exporter: Any
    driver: EngineDriver | None
    radius: RadiusService
    datapath: DataPath | None
    remote_access: RemoteAccess | None
    farp: ProxyNeighbours | None
    routes: RouteManager | None
    fail_closed: FailClosed | None
    _fail_closed_plans: dict[ChildKey, ChildPlan]
    _start_failed: bool
    port500: list[IkePort500]
    port4500: list[DrainingSocket]
    raw_esp: list[RawEspSocket]
    pmtu: PathMtu
    cluster: ClusterRuntime
    control: ControlServer
    vici: Any
    started_at: float
    _refusal_log: RateLimitedLogger
    log_budget: LogBudget | None
    _subscribers: set[asyncio.Queue[dict[str, Any]]]
    subscriber_drops: int
    _last_use: dict[int, list[float]]
    _closed_inactive: set[int]
    _outdated_ike_sas: set[int]
    # IkeCounters; Any as before the split: message() is annotated bytes but is handed
    # the receive buffers' memoryviews, which it reads the same way.
    counters: Any

    # Methods one part calls on another (each is defined in the part named).
    _publish: Callable[[dict[str, Any]], None]  # stream
    _cmd_subscribe: Callable[[dict[str, Any]], Awaitable[Any]]  # stream
    _keepalive: Callable[[int], Coroutine[Any, Any, None]]  # transport
    _on_event: Callable[[ev.Event], None]  # events
    _install_child: Callable[..., None]  # children
    _updown_up: Callable[[ev.ChildSaEstablished], None]  # children
    _trap_children: Callable[[str, Callable[[Any], bool]], None]  # children
    _apply_start_actions: Callable[[list[Any]], None]  # children
    _close_child: Callable[[ev.ChildSaEstablished], None]  # failclosed
    _open_children: Callable[[list[ChildKey]], list[str]]  # failclosed
    _terminated_keys: Callable[
        [SaSelector, list[int], list[tuple[int, int]]], list[ChildKey]
    ]  # failclosed
    _reload_fail_closed: Callable[[list[Any]], None]  # failclosed
    _apply_shunts: Callable[..., None]  # failclosed
    reload: Callable[[], Awaitable[dict[str, Any]]]  # reload
    _reopen_logs: Callable[[], str | None]  # reload
    _overlay: Callable[[Any], None]  # aioipsec.commands


def status_line(daemon: DaemonState) -> str:
    """systemctl status' one line: what runs."""
    return (
        f"{len(daemon.engine_configs)} connection(s), {len(daemon.ike_sas)} IKE SA(s); "
        f"control socket {daemon.control_path}"
    )
