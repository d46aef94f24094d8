"""The aioipsec daemon: one asyncio program composing engine, data plane, TUN and sockets.

``aioipsec daemon`` (``aioipsec.cli``) calls :func:`run_daemon`. Start-up order, each step
undone in reverse if a later one fails, so a bad start leaves nothing behind:

1. the crypto self-test (:func:`aioipsec.selftest.run_selftest`): refuse to start on failure;
2. the configuration (TOML and/or swanctl.conf) into engine configs: a ``ConfigError``
   names the file, key and reason, and the daemon exits 1 before touching the system;
3. optional key export (``--save-keys``), with a warning;
4. the IKE ports; then the fail-closed rules (:mod:`aioipsec.runtime.failclosed`: traffic
   to every loaded connection's remote selectors is dropped unless it enters the tunnel,
   taking over what an earlier daemon left); the TUN device, the tunnel routing rule, the
   ESP sockets (UDP 500 via asyncio-dgram, UDP 4500 and raw ESP as plain non-blocking
   sockets, see docs/daemon.md);
5. the control socket and the VICI socket (``[daemon] vici_socket``, strongSwan's protocol
   for swanctl, see docs/vici.md: the same command handlers), the engine timer task,
   ``start_action = start`` / ``trap``.

SIGTERM/SIGINT: every IKE SA is deleted (DELETE sent, answers awaited briefly), routes and
the TUN device removed, exit status 0; the fail-closed rules stay unless
``fail_closed_after_stop = false``. SIGHUP: the ``--log-file`` is reopened (log
rotation) and the configuration reloaded.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import math
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import structlog

from aioipsec import revocation
from aioipsec.cluster.runtime import ClusterRuntime, redirect_limits
from aioipsec.cluster.runtime import Engine as ClusterEngine
from aioipsec.commands import DaemonCommands
from aioipsec.control import RequestError, SaSelector, sa_selector
from aioipsec.counters import IkeCounters
from aioipsec.log import RateLimitedLogger, sa_logger
from aioipsec.radius.relay import RadiusService
from aioipsec.ratelimit import LogBudget, install_log_budget
from aioipsec.runtime import shunts
from aioipsec.runtime.children import ChildSpec
from aioipsec.runtime.datapath import DEFAULT_TUN_MTU, DataPath
from aioipsec.runtime.engine import EngineDriver
from aioipsec.runtime.failclosed import (
    ChildKey,
    ChildPlan,
    FailClosed,
    FailClosedError,
    address_range,
    plan_for_configs,
    range_text,
    remove_table,
)
from aioipsec.runtime.farp import ProxyNeighbours
from aioipsec.runtime.listing import child_sa_listing, ike_sa_listing, ike_sa_timers
from aioipsec.runtime.pmtu import PathMtu, dont_fragment, fragments_allowed, open_no_df_twins
from aioipsec.runtime.remote_access import RemoteAccess, dhcp_settings
from aioipsec.runtime.routes import RouteManager
from aioipsec.runtime.sockets import (
    DrainingSocket,
    IkePort500,
    LocalAddressCache,
    RawEspSocket,
    open_udp_socket,
)
from aioipsec.runtime.updown import UpdownRunner, calls_for
from aioipsec.sdnotify import notify
from esp.events import Lifetime
from ikev2 import events as ev
from ikev2.eap.external import ExternalEapAnswer
from ikev2.enums import IntegId
from nat_t.demux import Udp4500Kind, classify
from nat_t.keepalive import KeepaliveTimer

log = structlog.get_logger("aioipsec.daemon")

NON_ESP_MARKER = b"\x00\x00\x00\x00"  # RFC 3948 sec. 2.2
DEFAULT_KEEPALIVE_INTERVAL = 20.0
SHUTDOWN_DELETE_WAIT = 2.0


_FAILURE_EVENTS = (
    ev.AuthenticationFailed,
    ev.NegotiationFailed,
    ev.IkeSaDeleted,
    ev.RedirectRefused,
)


def child_spec(event: ev.ChildSaEstablished, rekey_of: int | None = None) -> ChildSpec:
    """What the data path installs for an engine's ChildSaEstablished (``rekey_of``: the
    child_sa_id it replaces, from ChildSaRekeyed)."""
    # The engine gives rekey (soft) and life (hard) limits; a hard limit below the soft one
    # would be refused by Lifetime, so it is raised to the soft one.
    soft_bytes, hard_bytes = event.rekey_bytes or None, event.life_bytes or None
    soft_packets, hard_packets = event.rekey_packets or None, event.life_packets or None
    if hard_bytes is not None and soft_bytes is not None:
        hard_bytes = max(hard_bytes, soft_bytes)
    if hard_packets is not None and soft_packets is not None:
        hard_packets = max(hard_packets, soft_packets)
    if event.encr is None:
        raise ValueError("the data path installs ESP Child SAs only")
    return ChildSpec(
        child_sa_id=event.child_sa_id,
        ike_sa_id=event.ike_sa_id,
        connection=event.connection,
        child=event.child,
        mode=event.mode,
        spi_in=event.spi_in,
        spi_out=event.spi_out,
        encr=event.encr,
        integ=event.integ if event.integ is not None else IntegId.NONE,
        esn=event.esn,
        encr_key_in=event.encr_key_in,
        encr_key_out=event.encr_key_out,
        integ_key_in=event.integ_key_in,
        integ_key_out=event.integ_key_out,
        local_ts=tuple(event.local_ts),
        remote_ts=tuple(event.remote_ts),
        udp_encap=event.udp_encap,
        local_addr=(event.local_addr[0], event.local_addr[1]),
        remote_addr=(event.remote_addr[0], event.remote_addr[1]),
        replay_window=event.replay_window,
        lifetime=Lifetime(
            soft_bytes=soft_bytes,
            hard_bytes=hard_bytes,
            soft_packets=soft_packets,
            hard_packets=hard_packets,
        ),
        rekey_of=rekey_of,
        # Rekey responder: keep sending on the old SA until the initiator deletes it.
        defer_outbound=rekey_of is not None and not event.initiator,
    )


class StartupError(RuntimeError):
    """The daemon refuses to start; the message says why (already user-facing)."""


@dataclass
class IkeSaState:
    """What the daemon remembers about one established IKE SA."""

    established: ev.IkeSaEstablished
    established_at: float  # wall clock, for listings
    children: dict[int, ev.ChildSaEstablished] = field(default_factory=dict)
    keepalive: asyncio.Task[None] | None = None


class Daemon(DaemonCommands):
    """The running daemon. ``settings`` is the loaded configuration (aioipsec.config).

    Commands (JSON control socket and VICI socket alike) are the handlers of
    :meth:`control_handlers`; those that came with VICI are in :mod:`aioipsec.commands`."""

    def __init__(self, options: Any, settings: Any, loop: asyncio.AbstractEventLoop) -> None:
        from aioipsec import config as config_module

        self.options = options
        self.settings = settings
        self.loop = loop
        # keyingtries: attempts so far, and connections with a retry scheduled.
        self._keying_attempts: dict[str, int] = {}
        self._keying_pending: set[str] = set()
        self._config_module = config_module
        daemon_table = settings.daemon
        self.ike_port: int = daemon_table.ike_port
        self.nat_t_port: int = daemon_table.nat_t_port
        self.tun_name: str = daemon_table.tun_name
        self.control_path: str = daemon_table.control_socket
        self.keepalive_interval: float = getattr(
            daemon_table, "keep_alive", DEFAULT_KEEPALIVE_INTERVAL
        )
        self.engine_configs = engine_configs(config_module, settings)
        self.psk_lookup = settings.psk_lookup
        self.local_addresses = LocalAddressCache()
        self.updown = UpdownRunner()
        self.ike_sas: dict[int, IkeSaState] = {}
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self._cleanups: list[Callable[[], Any]] = []
        self.exporter: Any = None
        self.driver: EngineDriver | None = None
        self.radius = RadiusService(self._radius_answer)  # remote auth = eap-radius
        self.datapath: DataPath | None = None
        self.remote_access: RemoteAccess | None = None
        self.farp: ProxyNeighbours | None = None  # [daemon] proxy_arp_interface
        self.routes: RouteManager | None = None
        self.fail_closed: FailClosed | None = None
        self._fail_closed_plans: dict[ChildKey, ChildPlan] = {}
        self._start_failed = False
        self.port500: list[IkePort500] = []
        self.port4500: list[DrainingSocket] = []
        self.raw_esp: list[RawEspSocket] = []
        self.started_at = time.time()
        self._refusal_log = RateLimitedLogger(log, interval=10.0)
        self.log_budget: LogBudget | None = None  # run_daemon installs it (F3)
        # Control connections following the daemon (``subscribe``): one bounded queue each.
        self._subscribers: set[asyncio.Queue[dict[str, Any]]] = set()
        self.subscriber_drops = 0
        # child_sa_id -> [packets in, wall time they last grew, packets out, time]: the
        # "N s ago" of ``sas`` (swanctl's use-in/use-out), sampled once a second by
        # _track_use rather than timed on the per-packet path.
        self._last_use: dict[int, list[float]] = {}
        # Child SAs closed for inactivity (their DELETE is under way).
        self._closed_inactive: set[int] = set()
        # IKE SAs negotiated under a connection's settings that a reload has changed since:
        # they keep running, but ``initiate`` does not add Child SAs to them (their config
        # is the old one) and starts a new IKE SA instead.
        self._outdated_ike_sas: set[int] = set()
        self.counters = IkeCounters()
        self.vici: Any = None
        self._init_commands()

    # ------------------------------------------------------------------ start / stop

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            self._start_failed = True
            await self._teardown()
            raise

    async def _start(self) -> None:
        from ikev2.dispatcher import Dispatcher
        from tun.device import TunDevice

        save_keys = getattr(self.options, "save_keys_dir", None)
        if save_keys:
            from aioipsec.keyexport import KeyExporter

            self.exporter = KeyExporter(save_keys)
            log.warning(
                "key export is ON: session keys are written to disk for Wireshark",
                directory=str(save_keys),
            )

        # The ports first: a second daemon (or charon) holding 500/4500 must make us fail
        # before we touch the TUN device or the routing rules another daemon may use.
        bound = await self._bind_ports()
        # Before the TUN device: from here on nothing to a remote selector leaves in clear.
        self._start_fail_closed()
        self._apply_shunts(starting=True)  # pass/drop children (runtime/shunts.py)

        # vnet_hdr: decrypted TCP goes back to the kernel coalesced (runtime/forwarding.py).
        tun = TunDevice.create(self.tun_name, mtu=self._initial_tun_mtu(), vnet_hdr=True)
        self._cleanups.append(tun.close)
        self.routes = RouteManager(tun)
        self.routes.install_rules()
        self._cleanups.append(self.routes.close)
        # Remote access: pools for road warriors (the engine asks them for leases) and our
        # own virtual IPs (installed before their Child SAs' routes).
        self.remote_access = RemoteAccess(
            tun,
            self.routes,
            self.settings.pools.values(),
            log,
            dns_hook=self.settings.daemon.dns_hook,
            dhcp=dhcp_settings(self.settings),
        )
        self._cleanups.append(self.remote_access.close)
        self.radius.on_accept = self.remote_access.pools.offer_radius  # pools = radius
        if self.settings.daemon.proxy_arp_interface:
            # Proxy ARP/NDP for the clients' addresses on the LAN (runtime/farp.py).
            self.farp = ProxyNeighbours(self.settings.daemon.proxy_arp_interface, log)
            try:
                self.farp.start()
            except ValueError as exc:
                raise StartupError(str(exc)) from None
            self._cleanups.append(self.farp.close)

        # The PSK lookup goes through the current settings, so a reload changes it too.
        dispatcher = Dispatcher(
            self.engine_configs,
            lambda local, remote: self.psk_lookup(local, remote),
            source_address=self._source_address,
            limits=redirect_limits(self.settings.daemon),
            config_provider=self.remote_access.pools,
            # EAP passwords through the current settings too (reloads change them).
            eap_lookup=lambda identity: self.settings.eap_lookup(identity),
        )
        self.driver = EngineDriver(dispatcher, self._send_ike, self._on_event, self.loop)
        driver = self.driver  # pools = dhcp: the engine asks again once the lease is in
        self.remote_access.dhcp.resume = lambda ike_sa_id: driver.call(
            dispatcher.address_ready, ike_sa_id
        )
        self._cleanups.append(self.radius.close)
        # RFC 5685 and [cluster] (aioipsec/cluster/runtime.py, docs/cluster.md).
        self.cluster = ClusterRuntime(
            self.settings.cluster, self._cluster_engine(), self.remote_access.pools
        )
        await self.cluster.start()
        self._cleanups.append(self.cluster.close)
        self.datapath = DataPath(
            tun,
            self.routes,
            on_acquire=self._on_acquire,
            on_limit=self._on_limit,
            exporter=self.exporter,
            on_peer_moved=self._on_esp_peer_moved,
            clock=self.driver.now,
            # [daemon] workers / AIOIPSEC_WORKERS: 2 starts the encrypt worker process.
            workers=self._workers(),
            log_settings=(
                getattr(self.options, "log_level", None) or "info",
                getattr(self.options, "log_format", None) or "console",
            ),
        )

        self._start_sockets(bound)
        self.datapath.start(self.loop)
        self.updown.start(self.loop)
        self._cleanups.append(self.datapath.close)

        self._tasks.append(self.loop.create_task(self.driver.run_timer(), name="ike-timer"))
        self._tasks.append(self.loop.create_task(self._track_use(), name="use-tracker"))
        # CRLs of the authorities' crl_uris fetched ahead of their nextUpdate (docs/revocation.md).
        self._tasks.append(
            self.loop.create_task(
                revocation.keep_fresh(lambda: revocation.stores_of(self.engine_configs)),
                name="revocation-refresh",
            )
        )

        from aioipsec.control import ControlServer

        self.control = ControlServer(
            self.control_path,
            self.control_handlers(),
            group=self.settings.daemon.control_group,
        )
        await self.control.start()
        self._cleanups.append(self.control.close)
        self._cleanups.append(self._remove_creds_directory)

        vici_path = self._config_module.vici_socket_path(self.settings.daemon)
        if vici_path is not None:
            from aioipsec.vici.commands import ViciFrontend

            self.vici = ViciFrontend(
                vici_path, self.control_handlers(), group=self.settings.daemon.control_group
            )
            await self.vici.start()
            self._cleanups.append(self.vici.close)

        for signal_number, handler in (
            (signal.SIGTERM, self.request_stop),
            (signal.SIGINT, self.request_stop),
            (signal.SIGHUP, self._on_sighup),
        ):
            self.loop.add_signal_handler(signal_number, handler)
            self._cleanups.append(partial(self.loop.remove_signal_handler, signal_number))

        # Sockets, TUN device and control socket are open: keep only what later steps need.
        _drop_capabilities()
        try:
            # workers = 2: the encrypt worker, with no more capabilities than we kept.
            await self.datapath.start_worker()
        except RuntimeError as exc:
            raise StartupError(str(exc)) from None
        self._apply_start_actions(self.engine_configs)
        log.info(
            "daemon started",
            tun=tun.name,
            mtu=tun.mtu,
            ike_port=self.ike_port,
            nat_t_port=self.nat_t_port,
            control=str(self.control_path),
            vici=vici_path,
            connections=[c.name for c in self.engine_configs],
        )

    # ------------------------------------------------------------------ fail closed

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

    def _workers(self) -> int:
        from aioipsec.runtime.workers import worker_count

        try:
            return worker_count(getattr(self.settings.daemon, "workers", 1))
        except ValueError as exc:
            raise StartupError(str(exc)) from None

    def _initial_tun_mtu(self) -> int:
        # strongSwan's kernel-libipsec value; lowered/raised to the installed SAs' worst-case
        # inner MTU as soon as one is installed (DataPath._update_tun_mtu).
        return DEFAULT_TUN_MTU

    async def _bind_ports(self) -> list[tuple[socket.AddressFamily, IkePort500, Any]]:
        """Bind UDP 500 (asyncio-dgram) and 4500 (plain socket) for IPv4 and IPv6."""
        families = [("0.0.0.0", socket.AF_INET)]
        if socket.has_ipv6 and _ipv6_enabled():
            families.append(("::", socket.AF_INET6))
        bound = []
        for host, family in families:
            with _port_in_use(host, self.ike_port, "ike_port"):
                port500 = await IkePort500.bind(host, self.ike_port)
            self._cleanups.append(port500.close)
            with _port_in_use(host, self.nat_t_port, "nat_t_port"):
                udp_socket = open_udp_socket(host, self.nat_t_port)
            self._cleanups.append(udp_socket.close)
            bound.append((family, port500, udp_socket))
        return bound

    def _start_sockets(self, bound: list[tuple[socket.AddressFamily, IkePort500, Any]]) -> None:
        """Start reading the bound ports, and the raw ESP sockets."""
        assert self.datapath is not None
        for family, port500, udp_socket in bound:
            self.port500.append(port500)
            self._tasks.append(
                self.loop.create_task(
                    port500.receive_forever(self._received_on_500), name=f"ike500-{family.name}"
                )
            )
            udp = DrainingSocket(
                udp_socket,
                self._received_on_4500,
                f"udp{self.nat_t_port}-{'v6' if family == socket.AF_INET6 else 'v4'}",
            )
            udp.start(self.loop)
            self.port4500.append(udp)
            self._cleanups.append(udp.close)
            raw = RawEspSocket(family, self.datapath.esp_received_raw)
            raw.start(self.loop)
            self.raw_esp.append(raw)
            self._cleanups.append(raw.close)
        self.datapath.set_sockets(self.port4500, self.raw_esp)
        # copy_df: DF on the outer packets, a send-only twin for those without; the tunnel
        # MTU follows the path MTU.
        self.pmtu = PathMtu(self.datapath.table, self.datapath.update_tun_mtu)
        for outer in (*self.port4500, *self.raw_esp):
            dont_fragment(outer.sock)
            outer.on_too_big = self.pmtu.too_big
        open_no_df_twins((*self.port4500, *self.raw_esp))
        self._tasks.append(self.loop.create_task(self.pmtu.run(), name="path-mtu"))

    def request_stop(self) -> None:
        self._stopping.set()

    async def wait_stopped(self) -> None:
        await self._stopping.wait()

    async def stop(self) -> None:
        """Delete every IKE SA (RFC 7296 sec. 1.4.1), then undo everything start() did."""
        notify("STOPPING=1", "STATUS=deleting the IKE SAs and stopping")
        driver = self.driver
        if driver is not None and self.ike_sas:
            for ike_sa_id in list(self.ike_sas):
                with contextlib.suppress(Exception):
                    driver.call(driver.dispatcher.terminate_ike, ike_sa_id)
            deadline = self.loop.time() + SHUTDOWN_DELETE_WAIT
            while self.ike_sas and self.loop.time() < deadline:
                await asyncio.sleep(0.05)
            if self.ike_sas:
                log.warning("peers did not answer our DELETE in time", ike_sas=len(self.ike_sas))
        # Every Child SA still up goes down for the updown script too (strongSwan does).
        for state in self.ike_sas.values():
            for child_sa_id in state.children:
                self.updown.child_down(child_sa_id)
        await self.updown.close()
        await self._teardown()
        log.info("daemon stopped")

    async def _teardown(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        for state in self.ike_sas.values():
            if state.keepalive is not None:
                state.keepalive.cancel()
        while self._cleanups:
            cleanup = self._cleanups.pop()
            try:
                result = cleanup()
                if asyncio.iscoroutine(result):
                    await result
            except Exception:
                log.exception("cleanup step failed")

    # ------------------------------------------------------------------ IKE datagrams

    def _source_address(self, remote_host: str) -> str | None:
        """The address our IKE sockets (bound to the wildcard) send from to reach
        REMOTE_HOST: the engine hashes it into NAT_DETECTION_SOURCE_IP (RFC 7296 sec. 2.23)
        whatever local_addrs says. None when no route leads there."""
        local = self.local_addresses.local_for(remote_host)
        return None if local in ("0.0.0.0", "::") else local

    def _received_on_500(
        self, data: memoryview, remote: tuple[str, int], destination: str | None = None
    ) -> None:
        assert self.driver is not None
        # The address the request was sent to (IP_PKTINFO), which NAT detection hashes and
        # our answers leave from; the routing table's choice only when the kernel gave none.
        local = (destination or self.local_addresses.local_for(remote[0]), self.ike_port)
        self.counters.message(data, incoming=True)
        if self._subscribers:
            self._publish(ike_message_record(bytes(data), "in", local, remote))
        self.driver.feed(bytes(data), remote, local)

    def _received_on_4500(self, data: memoryview, remote: tuple[str, int]) -> None:
        """Port 4500 demultiplexing, RFC 3948 sec. 2.2 / 2.3."""
        assert self.driver is not None and self.datapath is not None
        kind = classify(data)
        if kind is Udp4500Kind.ESP:
            self.datapath.esp_received_udp(data, remote)
        elif kind is Udp4500Kind.IKE:
            local = (self.local_addresses.local_for(remote[0]), self.nat_t_port)
            self.counters.message(data[4:], incoming=True)
            if self._subscribers:
                self._publish(ike_message_record(bytes(data[4:]), "in", local, remote))
            self.driver.feed(bytes(data[4:]), remote, local)
        elif kind is Udp4500Kind.KEEPALIVE:
            self.datapath.keepalives_in += 1
        else:
            self.datapath.esp_drops += 1

    def _send_ike(self, data: bytes, local: tuple[str, int], remote: tuple[str, int]) -> None:
        self.counters.message(data, incoming=False)
        if self._subscribers:
            self._publish(ike_message_record(data, "out", local, remote))
        family = socket.AF_INET6 if ":" in remote[0] else socket.AF_INET
        # The local port decides the socket (a NAT may map port 500 to anything, RFC 7296
        # sec. 2.23): from 4500 with the non-ESP marker, from 500 without.
        if local[1] == self.nat_t_port:
            for udp in self.port4500:
                if udp.sock.family == family:
                    with fragments_allowed(udp.sock):  # DF is for ESP (runtime/pmtu.py)
                        udp.sendto(NON_ESP_MARKER + data, remote)
                    return
        else:
            source = None if local[0] in ("0.0.0.0", "::", "%any") else local[0]
            for port500 in self.port500:
                if port500.family == family:
                    port500.sendto(data, remote, source)
                    return
        log.warning("no socket to send an IKE message", remote=remote)

    def _radius_answer(self, ike_sa_id: int, answer: ExternalEapAnswer) -> None:
        assert self.driver is not None
        self.driver.call(self.driver.dispatcher.external_eap_answer, ike_sa_id, answer)

    # ------------------------------------------------------------------ engine events

    def _on_event(self, event: ev.Event) -> None:
        assert self.datapath is not None
        self._count_event(event)
        if self._subscribers:
            self._publish(event_record(event))
        self.cluster.on_event(event)  # resolves a REDIRECT's FQDN
        if self.radius.on_event(event, self.settings.radius):
            return  # remote auth = eap-radius: the EAP round trip (aioipsec/radius/relay.py)
        bound = sa_logger(log, event.connection, event.ike_sa_id)
        if self.remote_access is not None and self.remote_access.on_event(event, bound):
            return
        if isinstance(event, ev.IkeSaEstablished):
            new_state = IkeSaState(event, time.time())
            self.ike_sas[event.ike_sa_id] = new_state
            self._keying_attempts.pop(event.connection, None)
            self.datapath.nat_local[event.ike_sa_id] = event.nat_local
            bound.info(
                "IKE SA established",
                local=event.local_addr,
                remote=event.remote_addr,
                remote_id=event.remote_id,
                nat_local=event.nat_local,
                nat_remote=event.nat_remote,
                encap=event.udp_encap,
            )
            if event.nat_local and event.udp_encap:
                new_state.keepalive = self.loop.create_task(self._keepalive(event.ike_sa_id))
            self._export_ike_keys(event)
        elif isinstance(event, ev.IkeSaRekeyed):
            # The Child SAs move to the new IKE SA unchanged (RFC 7296 sec. 2.18).
            old = self.ike_sas.pop(event.old_ike_sa_id, None)
            if old is not None:
                old.established = _replace_ike(old.established, event)
                # The new IKE SA is established now (what charon's list-sas shows too).
                old.established_at = time.time()
                self.ike_sas[event.ike_sa_id] = old
                for child_id, child in list(old.children.items()):
                    old.children[child_id] = replace(child, ike_sa_id=event.ike_sa_id)
                if old.keepalive is not None:
                    old.keepalive.cancel()
                    old.keepalive = self.loop.create_task(self._keepalive(event.ike_sa_id))
            self.datapath.rebind_ike_sa(event.old_ike_sa_id, event.ike_sa_id)
            if event.old_ike_sa_id in self._outdated_ike_sas:  # the new SA has the old config
                self._outdated_ike_sas.discard(event.old_ike_sa_id)
                self._outdated_ike_sas.add(event.ike_sa_id)
            bound.info("IKE SA rekeyed", old_ike_sa_id=event.old_ike_sa_id)
            self._export_ike_keys(event)
        elif isinstance(event, ev.IkeSaDeleted):
            state = self.ike_sas.pop(event.ike_sa_id, None)
            self._outdated_ike_sas.discard(event.ike_sa_id)
            self.datapath.nat_local.pop(event.ike_sa_id, None)
            if state is not None:
                if state.keepalive is not None:
                    state.keepalive.cancel()
                for child in list(state.children.values()):
                    self.datapath.remove_child(child.child_sa_id)
                    self.updown.child_down(child.child_sa_id)
                    if self.farp is not None:
                        self.farp.child_down(child.child_sa_id)
            bound.info("IKE SA deleted", reason=event.reason)
            if self.exporter is not None:
                self.exporter.remove_ike_sa(event.spi_i, event.spi_r)
        elif isinstance(event, ev.ChildSaEstablished):
            self._install_child(event, bound)
            self._updown_up(event)
        elif isinstance(event, ev.ChildSaRekeyed):
            self._install_child(event.new, bound, rekey_of=event.old_child_sa_id)
            self.updown.child_rekeyed(event.old_child_sa_id, event.new.child_sa_id)
        elif isinstance(event, ev.ChildSaDeleted):
            if event.reason == "deleted by peer":
                # close_action = trap: the peer closed it; the next packet renegotiates.
                name = event.child
                self._trap_children(
                    event.connection,
                    lambda c: c.name == name and c.close_action == "trap",
                )
            state = self.ike_sas.get(event.ike_sa_id)
            if state is not None:
                state.children.pop(event.child_sa_id, None)
            self.datapath.remove_child(event.child_sa_id)
            self.updown.child_down(event.child_sa_id)
            if self.farp is not None:
                self.farp.child_down(event.child_sa_id)
            bound.info(
                "CHILD SA deleted",
                child=event.child,
                spi_in=f"{event.spi_in:08x}",
                spi_out=f"{event.spi_out:08x}",
                reason=event.reason,
            )
        elif isinstance(event, ev.AuthenticationFailed):
            bound.error(
                "authentication failed",
                check=event.check,
                # sent to the peer, or (check peer-rejected) received from it
                notify="AUTHENTICATION_FAILED",
                reason=event.reason,
                remote=event.remote_addr,
            )
        elif isinstance(event, ev.NegotiationFailed) and _refused_init(event):
            # Anyone can send IKE_SA_INIT, from any (spoofed) address: one line per
            # connection and notify every 10 s, with the count of those not logged.
            self._refusal_log.error(
                "negotiation failed",
                key=(event.connection, event.notify),
                connection=event.connection,
                ike_sa_id=event.ike_sa_id,
                exchange=event.exchange,
                reason=event.reason,
                notify=event.notify.name if event.notify is not None else None,
                received=event.received,
                child=event.child,
            )
        elif isinstance(event, ev.NegotiationFailed):
            bound.error(
                "negotiation failed",
                exchange=event.exchange,
                reason=event.reason,
                notify=event.notify.name if event.notify is not None else None,
                received=event.received,
                child=event.child,
            )
        elif isinstance(event, ev.PeerUnreachable):
            bound.warning("peer unreachable", action=event.action, remote=event.remote_addr)
            if event.action == "trap":
                # dpd_action = trap: the next packet renegotiates (strongSwan semantics).
                self._trap_children(event.connection, lambda c: c.dpd_action == "trap")
            self._retry_keying(event)
        elif isinstance(event, ev.IkeSaAddressChanged):
            self._follow_peer(event)
            bound.info(
                "peer address changed (NAT mapping, authenticated IKE)",
                old=event.old_remote_addr,
                new=event.remote_addr,
            )
        else:
            bound.info(type(event).__name__, **_public_fields(event))

    def _count_event(self, event: ev.Event) -> None:
        """The IKE counters (swanctl --counters) that follow engine events."""
        if isinstance(event, ev.IkeSaEstablished):
            self.counters.ike_sa_up(event.connection, event.spi_i)
        elif isinstance(event, ev.IkeSaDeleted):
            self.counters.ike_sa_down(event.spi_i)
        elif isinstance(event, ev.IkeSaRekeyed):
            # RFC 7296 sec. 2.18: who rekeyed is the new IKE SA's original initiator.
            assert self.driver is not None
            try:
                initiator = bool(self.driver.dispatcher.ike_sa(event.ike_sa_id).initiator)
            except Exception:  # already gone again
                initiator = False
            self.counters.ike_rekeyed(event.connection, event.old_spi_i, event.spi_i, initiator)
        elif isinstance(event, ev.ChildSaRekeyed):
            self.counters.child_rekeyed(event.connection)

    def _on_esp_peer_moved(self, ike_sa_id: int, remote: tuple[str, int]) -> None:
        """ESP followed the peer to a new NAT mapping: let the IKE SA follow too (the engine
        applies RFC 7296 sec. 2.23 and answers with IkeSaAddressChanged when it moved)."""
        assert self.driver is not None
        self.driver.call(self.driver.dispatcher.peer_address_seen, ike_sa_id, remote)

    def _follow_peer(self, event: ev.IkeSaAddressChanged) -> None:
        """The engine follows the peer to a new NAT mapping (RFC 7296 sec. 2.23): send the
        Child SAs' ESP-in-UDP and the keepalives there too, so IKE and ESP agree."""
        assert self.datapath is not None
        state = self.ike_sas.get(event.ike_sa_id)
        if state is not None:
            state.established = replace(
                state.established, remote_addr=event.remote_addr, local_addr=event.local_addr
            )
        # The Child SAs of one IKE SA share one PeerAddressTracker (datapath._peer_tracker).
        for entry in self.datapath.children.values():
            if entry.ike_sa_id == event.ike_sa_id and entry.peer.address != event.remote_addr:
                entry.peer.address = (event.remote_addr[0], event.remote_addr[1])
                entry.peer.updates += 1
        self.datapath.peers_changed()  # an encrypt worker sends there too (workers = 2)

    def _trap_children(self, connection: str, wanted: Callable[[Any], bool]) -> None:
        assert self.datapath is not None
        for config in self.engine_configs:
            if config.name != connection:
                continue
            for child in config.children:
                if wanted(child) and not self.datapath.has_trap(config.name, child.name):
                    self.datapath.add_trap(config, child)

    def _install_child(
        self, event: ev.ChildSaEstablished, bound: Any, rekey_of: int | None = None
    ) -> None:
        assert self.datapath is not None
        state = self.ike_sas.get(event.ike_sa_id)
        if state is not None:
            state.children[event.child_sa_id] = event
        spec = child_spec(event, rekey_of)
        if any(c.name == event.connection and c.pools for c in self.engine_configs):
            # A gateway's Child SAs of one configured child belong to different clients.
            spec = replace(spec, reqid_key=",".join(str(ts) for ts in event.remote_ts))
        connection = self.settings.connections.get(event.connection)
        settings = connection.children.get(event.child) if connection is not None else None
        if settings is not None:  # reqid, priority, icmp (docs/configuration.md)
            spec = replace(spec, fixed_reqid=settings.reqid, priority=settings.priority,
                           icmp=settings.icmp, copy_df=settings.copy_df)  # fmt: skip
        routes = self.datapath.install_child(spec)
        if self.farp is not None:
            self.farp.child_up(event.child_sa_id, event.child, event.remote_ts)
        self._close_child(event)
        bound.info(
            "CHILD SA rekeyed" if rekey_of is not None else "CHILD SA established",
            child=event.child,
            child_sa_id=event.child_sa_id,
            spi_in=f"{event.spi_in:08x}",
            spi_out=f"{event.spi_out:08x}",
            local_ts=[str(ts) for ts in event.local_ts],
            remote_ts=[str(ts) for ts in event.remote_ts],
            encap=event.udp_encap,
            routes=routes,
            mtu=self.datapath.tun_mtu,
        )

    def _updown_up(self, event: ev.ChildSaEstablished) -> None:
        """strongSwan's updown = COMMAND of the child, once per policy (runtime/updown.py).
        PLUTO_INTERFACE is our TUN device: the tunnel's traffic leaves and arrives there
        (docs/daemon.md, "updown scripts")."""
        assert self.datapath is not None
        connection = self.settings.connections.get(event.connection)
        child = connection.children.get(event.child) if connection is not None else None
        if child is None or not child.updown:
            return
        state = self.ike_sas.get(event.ike_sa_id)
        calls = calls_for(
            state.established if state is not None else None,
            event,
            interface=self.tun_name,
            reqid=self.datapath.table.reqid_for(event.connection, event.child),
            host_access=child.hostaccess,
        )
        self.updown.child_up(event.child_sa_id, child.updown, calls)

    def _export_ike_keys(self, event: ev.IkeSaEstablished | ev.IkeSaRekeyed) -> None:
        if self.exporter is None or self.driver is None:
            return
        from aioipsec.keyexport import IkeKeyRow

        keys = self.driver.dispatcher.ike_sa_keys_for_export(event.ike_sa_id)
        if keys is None:
            log.warning("cannot export IKE keys: no keys", ike_sa_id=event.ike_sa_id)
            return
        self.exporter.add_ike_sa(
            IkeKeyRow(
                spi_i=keys.spi_i,
                spi_r=keys.spi_r,
                encr=keys.encr,
                encr_key_bits=keys.encr_key_bits,
                integ=keys.integ,
                sk_ei=keys.sk_ei,
                sk_er=keys.sk_er,
                sk_ai=keys.sk_ai,
                sk_ar=keys.sk_ar,
            )
        )

    def _on_acquire(self, connection: str, child: str) -> None:
        """A packet hit a trap policy (start_action = trap): negotiate that child."""
        assert self.driver is not None
        for state in self.ike_sas.values():
            if state.established.connection == connection:
                log.info("trap hit: creating CHILD SA", connection=connection, child=child)
                self.driver.call(
                    self.driver.dispatcher.create_child, state.established.ike_sa_id, child
                )
                return
        log.info("trap hit: initiating", connection=connection, child=child)
        self.driver.call(self.driver.dispatcher.initiate, connection, child=child)

    def _on_limit(self, spi_in: int, cause: str, hard: bool) -> None:
        """The data plane reached a byte/packet lifetime on a Child SA (RFC 4301 sec. 4.4.2.1)."""
        assert self.driver is not None
        self.driver.call(self.driver.dispatcher.child_sa_limit_reached, spi_in, cause, hard)

    async def _track_use(self, interval: float = 1.0) -> None:
        """Record when each Child SA last carried a packet in each direction (to the
        second): the packet counters are read once per interval, nothing per packet."""
        assert self.datapath is not None
        while True:
            now_wall = time.time()
            children = self.datapath.children
            for child_sa_id in [c for c in self._last_use if c not in children]:
                del self._last_use[child_sa_id]
                self._closed_inactive.discard(child_sa_id)
            for child_sa_id, entry in children.items():
                packets_in, packets_out = entry.sa_in.packets_in, entry.sa_out.packets_out
                seen = self._last_use.setdefault(child_sa_id, [0, -1.0, 0, -1.0])
                if packets_in != seen[0]:
                    seen[0], seen[1] = packets_in, now_wall
                if packets_out != seen[2]:
                    seen[2], seen[3] = packets_out, now_wall
                self._close_if_inactive(entry, seen, now_wall)
            await asyncio.sleep(interval)

    def _close_if_inactive(self, entry: Any, seen: list[float], now_wall: float) -> None:
        """strongSwan's ``inactivity``: a Child SA that carried no packet in either
        direction for that long is closed (deleted with the peer; the IKE SA stays)."""
        connection = self.settings.connections.get(entry.connection)
        child = connection.children.get(entry.child) if connection is not None else None
        if child is None or not child.inactivity or self.driver is None:
            return
        if entry.child_sa_id in self._closed_inactive:
            return
        last = max(seen[1], seen[3], entry.installed_at)
        if now_wall - last < child.inactivity:
            return
        self._closed_inactive.add(entry.child_sa_id)
        sa_logger(log, entry.connection, entry.ike_sa_id).info(
            "closing the CHILD SA after inactivity", child=entry.child,
            inactivity=child.inactivity, idle=round(now_wall - last),
        )  # fmt: skip
        terminate = self.driver.dispatcher.terminate_child
        self.driver.call(terminate, entry.ike_sa_id, entry.child_sa_id)

    async def _keepalive(self, ike_sa_id: int) -> None:
        """NAT keepalives (RFC 3948 sec. 2.3) while a NAT is in front of us, as their own
        task. ESP sent to the peer refreshes the NAT mapping too: the SA's packet counter is
        read once per interval (nothing is added to the per-packet path)."""
        assert self.datapath is not None
        timer = KeepaliveTimer(self.loop.time(), self.keepalive_interval)
        last_packets = -1
        while True:
            due = timer.next_due()
            await asyncio.sleep(max(0.0, (due or self.loop.time()) - self.loop.time()))
            state = self.ike_sas.get(ike_sa_id)
            if state is None:
                return
            packets = self.datapath.packets_out_of(ike_sa_id)
            if packets != last_packets and last_packets >= 0:
                timer.packet_sent(self.loop.time())
            last_packets = packets
            keepalive = timer.poll(self.loop.time())
            if keepalive is None:
                continue
            remote = self.datapath.peer_address(ike_sa_id) or state.established.remote_addr
            family = socket.AF_INET6 if ":" in remote[0] else socket.AF_INET
            for udp in self.port4500:
                if udp.sock.family == family:
                    udp.sendto(keepalive, remote)
                    self.datapath.keepalives_out += 1

    def _retry_keying(self, event: ev.PeerUnreachable) -> None:
        """strongSwan's keyingtries: a ``start_action = start`` connection whose IKE SA
        never came up (the peer did not answer) is tried again, with a back-off, until
        keyingtries attempts (0: forever). An SA that was up follows its dpd_action."""
        connection = self.settings.connections.get(event.connection)
        if event.ike_sa_id in self.ike_sas or connection is None:
            return
        starts = [c.name for c in connection.children.values() if c.start_action == "start"]
        if not starts or event.connection in self._keying_pending:
            return
        attempts = self._keying_attempts.get(event.connection, 1)
        delay = connection.keying_retry_delay(attempts)
        if delay is None:
            self._keying_attempts.pop(event.connection, None)
            log.warning("giving up after keyingtries attempts", connection=event.connection,
                        attempts=attempts)  # fmt: skip
            return
        self._keying_attempts[event.connection] = attempts + 1
        self._keying_pending.add(event.connection)
        log.info("peer unreachable: trying again (keyingtries)", connection=event.connection,
                 attempt=attempts + 1, keyingtries=connection.keyingtries, delay=delay)  # fmt: skip

        def retry() -> None:
            self._keying_pending.discard(event.connection)
            current = self.settings.connections.get(event.connection)
            if (
                current is None
                or self.driver is None
                or any(
                    state.established.connection == event.connection
                    for state in self.ike_sas.values()
                )
            ):
                return
            self.driver.call(self.driver.dispatcher.initiate, event.connection, child=starts[0],
                             children=starts[1:])  # fmt: skip

        self.loop.call_later(delay, retry)

    def _apply_start_actions(self, configs: list[Any]) -> None:
        assert self.driver is not None and self.datapath is not None
        for config in configs:
            for child in config.children:
                if child.start_action == "start":
                    log.info(
                        "initiating (start_action=start)", connection=config.name, child=child.name
                    )
                    self.driver.call(self.driver.dispatcher.initiate, config.name, child=child.name)
                elif child.start_action == "trap":
                    self.datapath.add_trap(config, child)

    # ------------------------------------------------------------------ reload

    def _request_reload(self) -> None:
        self.loop.create_task(self._reload_notified())

    async def _reload_notified(self) -> None:
        """A reload systemd hears about (sd_notify: RELOADING=1, then READY=1 again)."""
        notify("RELOADING=1", "STATUS=reloading the configuration")
        try:
            await self.reload()
        finally:
            notify("READY=1", "STATUS=" + _status(self))

    def _on_sighup(self) -> None:
        """SIGHUP, as for charon and most daemons: reopen the log file (logrotate moved
        it), then re-read the configuration."""
        with contextlib.suppress(RequestError):  # logged: the old file stays in use
            self._reopen_logs()
        self._request_reload()

    def _reopen_logs(self) -> str | None:
        from aioipsec.log import reopen_log_file

        try:
            path = reopen_log_file()
        except OSError as exc:
            log.error("cannot reopen the log file: still writing to the old one", error=str(exc))
            raise RequestError(f"cannot reopen the log file: {exc}") from exc
        if path is not None:
            log.info("log file reopened", path=path)
        return path

    async def _cmd_reopen_logs(self, args: dict[str, Any]) -> dict[str, Any]:
        path = self._reopen_logs()
        if path is None:
            return {"message": "the daemon logs to stderr: no log file to reopen", "path": None}
        return {"message": f"log file {path} reopened", "path": path}

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

    # ------------------------------------------------------------------ control socket

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

    def _cluster_engine(self) -> ClusterEngine:
        driver = self.driver
        assert driver is not None
        return ClusterEngine(
            call=driver.call,
            dispatcher=driver.dispatcher,
            established=lambda: [state.established for state in self.ike_sas.values()],
            child_sas=lambda: sum(len(state.children) for state in self.ike_sas.values()),
        )

    # ------------------------------------------------------------------ event stream

    def _publish(self, record: dict[str, Any]) -> None:
        """Queue one record for every subscriber; a subscriber that does not keep up loses
        records (counted) rather than growing the daemon's memory."""
        for queue in self._subscribers:
            try:
                queue.put_nowait(record)
            except asyncio.QueueFull:
                self.subscriber_drops += 1

    async def _cmd_subscribe(self, args: dict[str, Any]) -> Any:
        """Stream one JSON record per IKE message sent or received and per engine event
        (``aioipsec explain --follow``). Never keys: with ``--save-keys`` the first record
        points to the key files."""
        from aioipsec.control import Stream

        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=SUBSCRIBER_QUEUE)
        # Not "key_files": the control socket's secret filter redacts any "key" field, and
        # these are file names, not keys.
        tables = None
        if self.exporter is not None:
            tables = [str(self.exporter.ike_table_path), str(self.exporter.esp_table_path)]
        queue.put_nowait(
            {"type": "subscribed", "time": time.time(), "pid": os.getpid(),
             "decryption_tables": tables}
        )  # fmt: skip
        self._subscribers.add(queue)

        async def items() -> Any:
            while True:
                yield await queue.get()

        return Stream(items(), on_close=lambda: self._subscribers.discard(queue))

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


def engine_configs(config_module: Any, settings: Any) -> list[Any]:
    """The engine's IkeConfigs; ``to_engine_configs`` applies the daemon-wide ``[daemon]``
    retransmission settings (strongSwan's charon.retransmit_*) to every connection."""
    return config_module.to_engine_configs(settings)


SUBSCRIBER_QUEUE = 10000  # records kept for a slow ``subscribe`` client before dropping


def ike_message_record(
    data: bytes, direction: str, local: tuple[str, int], remote: tuple[str, int]
) -> dict[str, Any]:
    """One IKE message as the ``subscribe`` stream shows it, decoded with our parser: header
    fields and payload names in RFC 7296 notation. Encrypted messages are not decrypted
    (the stream carries no keys): their SK payload names the first payload inside it."""
    from aioipsec.decode import short_name
    from ikev2.enums import ExchangeType, PayloadType
    from ikev2.message import parse_message
    from ikev2.payloads import SkPayload

    record: dict[str, Any] = {
        "type": "ike", "time": time.time(), "direction": direction,
        "local": list(local), "remote": list(remote), "length": len(data),
    }  # fmt: skip
    try:
        message = parse_message(data)
    except Exception as error:  # a datagram the engine will refuse: say so, do not fail
        record["error"] = str(getattr(error, "reason", error))
        return record
    header = message.header
    try:
        exchange = ExchangeType(header.exchange).name
    except ValueError:
        exchange = str(int(header.exchange))
    names = []
    for payload in message.payloads:
        if isinstance(payload, SkPayload):
            try:
                first = PayloadType(payload.first_inner).name
            except ValueError:
                first = str(payload.first_inner)
            names.append(f"SK{{{first}...}}")
        else:
            names.append(short_name(payload, hide_nonce_role=True))
    record.update(
        exchange=exchange, message_id=header.message_id, response=header.response,
        initiator_flag=header.initiator, spi_i=header.spi_i.hex(), spi_r=header.spi_r.hex(),
        payloads=names,
    )  # fmt: skip
    return record


def event_record(event: ev.Event) -> dict[str, Any]:
    """One engine event for the ``subscribe`` stream (key fields are left out: they are
    ``repr=False`` in ikev2.events)."""
    return {
        "type": "event",
        "time": time.time(),
        "event": type(event).__name__,
        "connection": event.connection,
        "ike_sa_id": event.ike_sa_id,
        "fields": _public_fields(event),
    }


def _public_fields(event: ev.Event) -> dict[str, Any]:
    from dataclasses import fields

    return {
        f.name: getattr(event, f.name)
        for f in fields(event)
        if f.repr and f.name not in ("ike_sa_id", "connection")
    }


def _replace_ike(old: ev.IkeSaEstablished, rekeyed: ev.IkeSaRekeyed) -> ev.IkeSaEstablished:
    from dataclasses import replace

    return replace(
        old,
        ike_sa_id=rekeyed.ike_sa_id,
        spi_i=rekeyed.spi_i,
        spi_r=rekeyed.spi_r,
        encr=rekeyed.encr,
        encr_key_bits=rekeyed.encr_key_bits,
        integ=rekeyed.integ,
        prf=rekeyed.prf,
        ke=rekeyed.ke,
    )


def _selftest_summary(report: Any) -> str:
    passed = getattr(report, "passed", None)
    return (
        f"{passed} vectors passed, {getattr(report, 'skipped', 0)} skipped, {report.seconds:.2f} s"
    )


def _refused_init(event: ev.NegotiationFailed) -> bool:
    """An IKE_SA_INIT request we refused (before any authentication)."""
    return event.exchange == "IKE_SA_INIT" and not event.received


# Linux capability numbers (linux/capability.h) and the calls to drop them.
CAP_NET_ADMIN = 12
_PR_CAPBSET_DROP = 24
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


def _drop_capabilities(keep: tuple[int, ...] = (CAP_NET_ADMIN,)) -> None:
    """Drop every capability but KEEP, from this thread and every program it starts.

    Once the sockets, the TUN device and the control socket are open, the daemon only
    changes routes, rules and the TUN MTU (CAP_NET_ADMIN, also for the ``ip`` commands it
    runs). The bounding set is cut too: a root process regains its bounding set on
    ``execve``, so without that the ``ip`` children would run with every capability.
    Capabilities are per thread: threads started before this call keep theirs.
    """
    import ctypes
    import os

    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    try:
        with open("/proc/sys/kernel/cap_last_cap") as file:
            last = int(file.read())
    except OSError:
        last = 40
    for capability in range(last + 1):
        if capability not in keep and libc.prctl(_PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            log.warning(
                "cannot drop capabilities: running with all of them",
                error=os.strerror(ctypes.get_errno()),
            )
            return
    mask = sum(1 << capability for capability in keep)
    header = (ctypes.c_uint32 * 2)(_LINUX_CAPABILITY_VERSION_3, 0)
    # Two {effective, permitted, inheritable} triples: capabilities 0-31, then 32-63.
    data = (ctypes.c_uint32 * 6)(
        mask & 0xFFFFFFFF, mask & 0xFFFFFFFF, mask & 0xFFFFFFFF,
        mask >> 32, mask >> 32, mask >> 32,
    )  # fmt: skip
    if libc.capset(header, data) != 0:
        log.warning(
            "cannot drop capabilities: running with all of them",
            error=os.strerror(ctypes.get_errno()),
        )
        return
    log.info("capabilities dropped", kept=["CAP_NET_ADMIN" if c == CAP_NET_ADMIN else c
                                            for c in keep])  # fmt: skip


@contextlib.contextmanager
def _port_in_use(host: str, port: int, setting: str) -> Any:
    """Turn EADDRINUSE into a StartupError that names the process holding the port (as
    ``aioipsec doctor`` does) and what to do."""
    try:
        yield
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        from aioipsec.doctor import describe_port_holders

        raise StartupError(
            f"UDP {host} port {port} is already in use{describe_port_holders(port)}: stop "
            f"that IKE daemon, or set {setting} in [daemon] to another port"
        ) from None


def _same_config(old: Any, new: Any) -> bool:
    """Whether two engine connection configs are equal (dataclass equality; repr when a
    field does not compare)."""
    try:
        return bool(old == new)
    except Exception:
        return repr(old) == repr(new)


def _ipv6_enabled() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


async def run_daemon(options: Any) -> int:
    """Run the daemon until SIGTERM/SIGINT; the exit status for the CLI.

    0 after a clean shutdown; 1 when the configuration is bad or the self-test fails (the
    message says which file/key and why), nothing having been started.
    """
    from aioipsec import config as config_module
    from aioipsec.selftest import run_selftest

    try:
        settings = options.load()
    except config_module.ConfigError as exc:
        log.error("bad configuration", error=str(exc))
        return 1
    if getattr(options, "run_selftest", True):
        report = run_selftest()
        if not report.ok:
            from aioipsec.selftest import format_table

            log.error("self-test failed: refusing to start\n" + format_table(report))
            return 1
        log.info("self-test passed", summary=_selftest_summary(report))
    loop = asyncio.get_running_loop()
    try:
        daemon = Daemon(options, settings, loop)
    except config_module.ConfigError as exc:
        log.error("bad configuration", error=str(exc))
        return 1
    try:
        await daemon.start()
    except (OSError, StartupError) as exc:
        log.error("cannot start", error=str(exc))
        return 1
    # From here on the network can make lines: one budget over all of them (issue 13, F3).
    daemon.log_budget, uninstall_budget = install_log_budget(loop)
    # The self-test passed and every socket is bound: systemd's Type=notify may go on.
    notify("READY=1", "STATUS=" + _status(daemon))
    try:
        await daemon.wait_stopped()
        await daemon.stop()
    finally:
        uninstall_budget()
    return 0


def _status(daemon: Daemon) -> str:
    """systemctl status' one line: what runs."""
    return (
        f"{len(daemon.engine_configs)} connection(s), {len(daemon.ike_sas)} IKE SA(s); "
        f"control socket {daemon.control_path}"
    )


def _configure_logging(options: Any) -> None:
    """structlog set-up (console by default, JSON with --log-format json), as the CLI does."""
    from aioipsec.log import configure_logging

    configure_logging(
        getattr(options, "log_level", None) or "info",
        getattr(options, "log_format", None) or "console",
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m aioipsec.daemon -c FILE``: the daemon without the rest of the CLI
    (the same options as ``aioipsec daemon``; tests and the demo use it)."""
    import argparse
    from pathlib import Path

    from aioipsec.config import DaemonOptions

    parser = argparse.ArgumentParser(prog="python -m aioipsec.daemon")
    parser.add_argument("-c", "--config", type=Path)
    parser.add_argument("--swanctl-conf", type=Path)
    parser.add_argument("--socket")
    parser.add_argument("--log-format", choices=["console", "json"])
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--save-keys", type=Path)
    parser.add_argument("--no-selftest", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    options = DaemonOptions(
        config_file=args.config,
        swanctl_conf=args.swanctl_conf,
        socket_path=args.socket,
        log_format=args.log_format,
        log_level=args.log_level,
        save_keys_dir=args.save_keys,
        run_selftest=not args.no_selftest,
    )
    _configure_logging(options)
    return asyncio.run(run_daemon(options))


if __name__ == "__main__":
    raise SystemExit(main())
