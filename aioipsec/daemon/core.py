"""The ``Daemon``: its state, start-up in order (each step undone if a later one fails),
stop and teardown; the other concerns are the parts it is composed of."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from functools import partial
from typing import Any

import structlog

from aioipsec import config as config_module
from aioipsec import revocation
from aioipsec.cluster.runtime import ClusterRuntime, redirect_limits
from aioipsec.cluster.runtime import Engine as ClusterEngine
from aioipsec.control import ControlServer
from aioipsec.counters import IkeCounters
from aioipsec.daemon.children import ChildSaGlue
from aioipsec.daemon.events import EngineEvents
from aioipsec.daemon.failclosed import FailClosedRules
from aioipsec.daemon.handlers import ControlHandlers
from aioipsec.daemon.privileges import drop_capabilities
from aioipsec.daemon.reload import Reloading, engine_configs
from aioipsec.daemon.state import (
    DEFAULT_KEEPALIVE_INTERVAL,
    SHUTDOWN_DELETE_WAIT,
    DaemonState,
    StartupError,
)
from aioipsec.daemon.stream import EventStream
from aioipsec.daemon.transport import IkeTransport
from aioipsec.gcpolicy import CollectorPolicy
from aioipsec.keyexport import KeyExporter
from aioipsec.log import RateLimitedLogger
from aioipsec.radius.relay import RadiusService
from aioipsec.runtime.datapath import DEFAULT_TUN_MTU, DataPath
from aioipsec.runtime.engine import EngineDriver
from aioipsec.runtime.farp import ProxyNeighbours
from aioipsec.runtime.remote_access import RemoteAccess, dhcp_settings
from aioipsec.runtime.routes import RouteManager
from aioipsec.runtime.sockets import LocalAddressCache
from aioipsec.runtime.steering import steering_mode
from aioipsec.runtime.updown import UpdownRunner
from aioipsec.runtime.workers import worker_count
from aioipsec.sdnotify import notify
from ikev2 import events as ev
from ikev2.dispatcher import Dispatcher
from tun.device import TunDevice

log = structlog.get_logger("aioipsec.daemon")

# Engine events after which long-lived objects (an SA's) are garbage.
_RELEASES = (
    ev.IkeSaDeleted, ev.IkeSaRekeyed, ev.ChildSaDeleted, ev.ChildSaRekeyed,
    ev.NegotiationFailed, ev.AuthenticationFailed, ev.PeerUnreachable,
)  # fmt: skip


class Daemon(
    Reloading,
    ControlHandlers,
    EngineEvents,
    ChildSaGlue,
    FailClosedRules,
    IkeTransport,
    EventStream,
    DaemonState,
):
    """The running daemon. ``settings`` is the loaded configuration (aioipsec.config).

    Commands (JSON control socket and VICI socket alike) are the handlers of
    :meth:`control_handlers`; those that came with VICI are in :mod:`aioipsec.commands`."""

    def __init__(self, options: Any, settings: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.options = options
        self.settings = settings
        self.loop = loop
        # keyingtries: attempts so far, and connections with a retry scheduled.
        self._keying_attempts = {}
        self._keying_pending = set()
        self._config_module = config_module
        daemon_table = settings.daemon
        self.ike_port = daemon_table.ike_port
        self.nat_t_port = daemon_table.nat_t_port
        self.tun_name = daemon_table.tun_name
        self.control_path = daemon_table.control_socket
        self.keepalive_interval = getattr(daemon_table, "keep_alive", DEFAULT_KEEPALIVE_INTERVAL)
        self.engine_configs = engine_configs(config_module, settings)
        self.psk_lookup = settings.psk_lookup
        self.local_addresses = LocalAddressCache()
        self.updown = UpdownRunner()
        self.ike_sas = {}
        self._stopping = asyncio.Event()
        self._tasks = []
        self._cleanups = []
        self.exporter = None
        self.driver = None
        self.radius = RadiusService(self._radius_answer)  # remote auth = eap-radius
        self.datapath = None
        self.remote_access = None
        self.farp = None  # [daemon] proxy_arp_interface
        self.routes = None
        self.fail_closed = None
        self._fail_closed_plans = {}
        self._start_failed = False
        self.port500 = []
        self.port4500 = []
        self.raw_esp = []
        self.started_at = time.time()
        self._refusal_log = RateLimitedLogger(log, interval=10.0)
        self.log_budget = None  # run_daemon installs it (F3)
        # Control connections following the daemon (``subscribe``): one bounded queue each.
        self._subscribers = set()
        self.subscriber_drops = 0
        # child_sa_id -> [packets in, wall time they last grew, packets out, time]: the
        # "N s ago" of ``sas`` (swanctl's use-in/use-out), sampled once a second by
        # _track_use rather than timed on the per-packet path.
        self._last_use = {}
        # Child SAs closed for inactivity (their DELETE is under way).
        self._closed_inactive = set()
        # IKE SAs negotiated under a connection's settings that a reload has changed since:
        # they keep running, but ``initiate`` does not add Child SAs to them (their config
        # is the old one) and starts a new IKE SA instead.
        self._outdated_ike_sas = set()
        self.counters = IkeCounters()
        self.vici = None
        # The cyclic collector: heap frozen once started, SA churn reclaimed (gcpolicy).
        self.collector = CollectorPolicy(live=lambda: len(self.ike_sas))
        self._init_commands()

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            self._start_failed = True
            await self._teardown()
            raise

    async def _start(self) -> None:
        save_keys = getattr(self.options, "save_keys_dir", None)
        if save_keys:
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
        # worker_steering = sa: one TUN queue per worker (aioipsec/runtime/steering.py).
        steered = self._steering() == "sa" and self._workers() > 1
        tun = TunDevice.create(
            self.tun_name, mtu=self._initial_tun_mtu(), vnet_hdr=True, multi_queue=steered
        )
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
            steering=self._steering(),
            log_settings=(
                getattr(self.options, "log_level", None) or "info",
                getattr(self.options, "log_format", None) or "console",
            ),
        )

        if self.datapath.spi_hook is not None:
            # Our inbound SPIs carry the owning worker's index (runtime/steering.py).
            dispatcher.ctx.esp_spi_hook = self.datapath.spi_hook
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
            # Imported here, after logging is configured: aioipsec.vici binds its loggers
            # when imported, which before configure_logging froze the console format.
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
        drop_capabilities()
        # After the drop: the thread it starts (and numpy's) must not keep root's capabilities.
        self.datapath.forwarder.start_offloads()
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

    def _on_event(self, event: ev.Event) -> None:
        if isinstance(event, _RELEASES):
            # An SA's objects (reference cycles) became garbage: the collector must look
            # again at what it froze, in time (aioipsec/gcpolicy.py).
            self.collector.released()
        super()._on_event(event)

    def _apply_settings(self, settings: Any, configs: list[Any] | None = None) -> list[Any]:
        applied = super()._apply_settings(settings, configs)
        self.collector.released()  # the old configuration's objects
        return applied

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

    def _workers(self) -> int:
        try:
            return worker_count(getattr(self.settings.daemon, "workers", 1), self._steering())
        except ValueError as exc:
            raise StartupError(str(exc)) from None

    def _steering(self) -> str:
        try:
            return steering_mode(getattr(self.settings.daemon, "worker_steering", "direction"))
        except ValueError as exc:
            raise StartupError(str(exc)) from None

    def _initial_tun_mtu(self) -> int:
        # strongSwan's kernel-libipsec value; lowered/raised to the installed SAs' worst-case
        # inner MTU as soon as one is installed (DataPath._update_tun_mtu).
        return DEFAULT_TUN_MTU

    def _cluster_engine(self) -> ClusterEngine:
        driver = self.driver
        assert driver is not None
        return ClusterEngine(
            call=driver.call,
            dispatcher=driver.dispatcher,
            established=lambda: [state.established for state in self.ike_sas.values()],
            child_sas=lambda: sum(len(state.children) for state in self.ike_sas.values()),
        )
