"""The daemon's side of RFC 5685 and of the cluster (docs/cluster.md).

:class:`ClusterRuntime` gives the engine its placement (``Dispatcher.redirects.placement``),
publishes this member's load and drain flag through the store every heartbeat, resolves the
FQDN of a REDIRECT we follow as a client (the engine does no I/O: ``IkeSaRedirected`` with
``address`` None, answered with ``Dispatcher.redirect_resolved``), and implements two
control commands (one handler each in the daemon's table):

* ``redirect``: send the clients of the selected IKE SAs to a gateway (RFC 5685 sec. 5),
  with the selectors of ``swanctl --redirect``: ike (connection), ike_id, peer_ip, peer_id;
* ``drain``: take no new IKE SAs here (new clients are redirected at IKE_SA_INIT) and
  redirect every established one to other members, ``drain_rate`` per second; ``cancel``
  ends it, ``status`` reports it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aioipsec.cluster.leases import LeaseSync
from aioipsec.cluster.placement import MemberState, Placement
from aioipsec.cluster.settings import ClusterSettings
from aioipsec.cluster.store import RedisStore, StoreView, View, open_store
from aioipsec.control import RequestError
from aioipsec.pools import PoolManager
from ikev2 import events as ev
from ikev2.config import DispatcherConfig
from ikev2.errors import UsageError
from ikev2.redirect import GatewayIdentity

log = logging.getLogger("aioipsec.cluster")

RESOLVE_TIMEOUT = 5.0
CLOSE_WAIT = 5.0
REDIRECT_SELECTORS = ("ike", "ike_id", "peer_ip", "peer_id")


@dataclass
class Engine:
    """What the runtime needs of the daemon: ``call(function, *args)`` runs an engine call
    with the current time (``EngineDriver.call``), ``dispatcher`` is the engine,
    ``established()`` the IKE SAs up now, ``child_sas()`` how many Child SAs are."""

    call: Callable[..., Any]
    dispatcher: Any
    established: Callable[[], list[ev.IkeSaEstablished]]
    child_sas: Callable[[], int]


@dataclass
class DrainState:
    active: bool = False
    target: str | None = None
    started: float = 0.0
    total: int = 0
    redirected: int = 0
    unsupported: list[int] = field(default_factory=list)  # clients without REDIRECT_SUPPORTED
    done: bool = False


class ClusterRuntime:
    def __init__(
        self, settings: ClusterSettings | None, engine: Engine, pools: PoolManager | None = None
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.store: StoreView | None = None
        self.leases: LeaseSync | None = None
        self.placement: Placement | None = None
        self.drain = DrainState()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False
        self._cpu = (time.process_time(), time.monotonic())
        if settings is not None:
            self.store = open_store(settings)
            self.placement = Placement(settings.member, settings.policy, {}, usable=False)
            self.store.on_change = self._view_changed
            engine.dispatcher.redirects.placement = self.placement
            if isinstance(self.store, RedisStore) and pools is not None:
                # VIP leases in the store (aioipsec/cluster/leases.py): a client moved to
                # another member gets its address back there.
                self.leases = LeaseSync(self.store.client, settings.name, settings.member,
                                        self._alive, grace=settings.ttl)  # fmt: skip
                self.leases.attach(pools)

    # ------------------------------------------------------------------ life

    async def start(self) -> None:
        if self.store is None:
            return
        await self.publish()
        self._spawn(self._heartbeat(), "cluster-heartbeat")
        if self.leases is not None:
            await self.leases.sync()  # spares reserved before the first client
            self._spawn(self.leases.run(), "cluster-leases")
        assert self.settings is not None
        log.info(
            "cluster %s: member %s, policy %s, store %s, %d member(s) seen",
            self.settings.name,
            self.settings.member,
            self.settings.policy,
            self.settings.store or "none (static members)",
            len(self.store.view),
        )

    async def close(self) -> None:
        self._closing = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            # Bounded: a cancellation that lands inside the Redis client's connect may be
            # turned into a ConnectionError and swallowed; the loop then ends on _closing.
            await asyncio.wait(tasks, timeout=CLOSE_WAIT)
        if self.leases is not None:
            with contextlib.suppress(Exception):  # the releases of the last IKE SAs
                await asyncio.wait_for(self.leases.sync(), CLOSE_WAIT)
        if self.store is not None:
            with contextlib.suppress(Exception):  # the server may be gone: closing anyway
                await asyncio.wait_for(self.store.close(), CLOSE_WAIT)

    def _spawn(self, coroutine: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _view_changed(self, view: View, usable: bool) -> None:
        if self.placement is not None:
            self.placement.view = view
            self.placement.usable = usable
            self.placement.sent.clear()

    def _alive(self) -> set[str] | None:
        if self.store is None or not self.store.usable:
            return None
        return set(self.store.view)

    def own_state(self) -> MemberState:
        assert self.settings is not None
        process, wall = time.process_time(), time.monotonic()
        last_process, last_wall = self._cpu
        self._cpu = (process, wall)
        cpu = (process - last_process) / (wall - last_wall) if wall > last_wall else 0.0
        return MemberState(
            member=self.settings.member,
            ike_sas=len(self.engine.established()),
            child_sas=self.engine.child_sas(),
            cpu=cpu,
            draining=self.drain.active,
            max_ike_sas=self.settings.max_ike_sas,
        )

    async def publish(self) -> None:
        """Publish this member's state now and refresh the view (every heartbeat)."""
        assert self.store is not None and self.settings is not None
        try:
            # Bounded: the next heartbeat must come whatever one command does.
            await asyncio.wait_for(self.store.publish(self.own_state()), 2 * self.settings.ttl)
        except TimeoutError:
            log.warning("cluster store: publishing took more than %gs", 2 * self.settings.ttl)
        if self.leases is not None:
            await self.leases.sync()

    async def _heartbeat(self) -> None:
        assert self.settings is not None
        while not self._closing:
            await asyncio.sleep(self.settings.heartbeat)
            if not self._closing:
                await self.publish()

    # ------------------------------------------------------------------ engine events

    def on_event(self, event: ev.Event) -> None:
        """Client side: resolve the FQDN of a REDIRECT we follow."""
        if isinstance(event, ev.IkeSaRedirected) and event.address is None:
            self._spawn(self._resolve(event), f"resolve-{event.gateway}")

    async def _resolve(self, event: ev.IkeSaRedirected) -> None:
        loop = asyncio.get_running_loop()
        want = ipaddress.ip_address(event.old_remote_addr[0]).version
        address: str | None = None
        try:
            infos = await asyncio.wait_for(
                loop.getaddrinfo(event.gateway, None, type=socket.SOCK_DGRAM), RESOLVE_TIMEOUT
            )
        except (OSError, TimeoutError) as error:
            log.warning(
                "%s: the REDIRECT names %s, which does not resolve (%s); staying where we are",
                event.connection,
                event.gateway,
                error,
            )
        else:
            # The address family we reach the old gateway with first (our sockets, routes).
            addresses = sorted(
                {str(info[4][0]) for info in infos},
                key=lambda a: ipaddress.ip_address(a).version != want,
            )
            address = addresses[0] if addresses else None
        self.engine.call(self.engine.dispatcher.redirect_resolved, event.ike_sa_id, address)

    # ------------------------------------------------------------------ control: redirect

    async def cmd_redirect(self, args: dict[str, Any]) -> dict[str, Any]:
        """``aioipsec redirect``: RFC 5685 sec. 5 for the selected IKE SAs."""
        gateway = args.get("gateway")
        if not isinstance(gateway, str) or not gateway:
            raise RequestError("redirect needs gateway: the address or FQDN to send clients to")
        try:
            GatewayIdentity.from_text(gateway)
        except ValueError as error:
            raise RequestError(f"redirect: {error}") from None
        unknown = sorted(k for k in args if k not in (*REDIRECT_SELECTORS, "gateway"))
        if unknown:
            known = ", ".join(REDIRECT_SELECTORS)
            raise RequestError(f"redirect: unknown selector {unknown[0]!r} (known: {known})")
        selector = {k: args[k] for k in REDIRECT_SELECTORS if args.get(k) is not None}
        if not selector:
            raise RequestError("redirect needs a selector: ike, ike_id, peer_ip or peer_id")
        chosen = [sa for sa in self.engine.established() if _matches(sa, selector)]
        if not chosen:
            shown = ", ".join(f"{k}={v}" for k, v in selector.items())
            raise RequestError(f"redirect: no established IKE SA matches {shown}")
        redirected, refused = self._redirect_all([sa.ike_sa_id for sa in chosen], gateway)
        message = f"redirecting {len(redirected)} IKE SA(s) to {gateway}"
        if refused:
            message += f"; {len(refused)} not: " + "; ".join(
                f"#{k}: {v}" for k, v in sorted(refused.items())
            )
        if not redirected:
            raise RequestError(message)
        return {"message": message, "ike_sas": redirected, "refused": refused}

    def _redirect_all(self, ids: list[int], gateway: str) -> tuple[list[int], dict[int, str]]:
        redirected: list[int] = []
        refused: dict[int, str] = {}
        for ike_sa_id in ids:
            try:
                self.engine.call(self.engine.dispatcher.redirect, ike_sa_id, gateway)
            except (UsageError, KeyError) as error:
                refused[ike_sa_id] = getattr(error, "reason", str(error))
                continue
            redirected.append(ike_sa_id)
        return redirected, refused

    # ------------------------------------------------------------------ control: drain

    async def cmd_drain(self, args: dict[str, Any]) -> dict[str, Any]:
        """``aioipsec drain [--to GW] [--cancel | --status]``."""
        if args.get("status"):
            return self._drain_status()
        if args.get("cancel"):
            was = self.drain.active
            self.drain.active = False
            if self.placement is not None:
                self.placement.draining = False
            await self._publish_now()
            return {"message": "drain cancelled" if was else "not draining", **self._drain_status()}
        target = args.get("to")
        if target is not None:
            try:
                GatewayIdentity.from_text(str(target))
            except ValueError as error:
                raise RequestError(f"drain --to: {error}") from None
        if self.placement is None and target is None:
            raise RequestError(
                "drain needs --to GW, or a [cluster] section naming the other members "
                "(this daemon has none)"
            )
        if self.placement is not None:
            destination = self.placement.drain_target(target)
            if destination is None:
                raise RequestError(
                    "drain: no other member can take the clients (all draining, full or "
                    "dead, or the store is unreachable); nothing was changed"
                )
            self.placement.draining = True
        self.drain = DrainState(active=True, target=target, started=time.monotonic())
        await self._publish_now()
        ids = [sa.ike_sa_id for sa in self.engine.established()]
        self.drain.total = len(ids)
        self._spawn(self._drain(ids), "drain")
        rate = self.settings.drain_rate if self.settings is not None else 20.0
        return {
            "message": f"draining: no new IKE SAs here; redirecting {len(ids)} IKE SA(s) "
            f"at {rate:g}/s" + (f" to {target}" if target else " to the least-loaded members"),
            **self._drain_status(),
        }

    async def _drain(self, ids: list[int]) -> None:
        rate = self.settings.drain_rate if self.settings is not None else 20.0
        for ike_sa_id in ids:
            if not self.drain.active:
                return
            target = self.drain.target
            if target is None and self.placement is not None:
                target = self.placement.drain_target(None)
            if target is None:
                log.warning("drain: no member can take IKE SA #%d now; retrying", ike_sa_id)
                await asyncio.sleep(1.0)
                target = self.placement.drain_target(None) if self.placement else None
                if target is None:
                    continue
            redirected, refused = self._redirect_all([ike_sa_id], target)
            self.drain.redirected += len(redirected)
            if refused:
                self.drain.unsupported.append(ike_sa_id)
                log.warning("drain: IKE SA #%d stays: %s", ike_sa_id, refused[ike_sa_id])
            await asyncio.sleep(1.0 / rate)
        self.drain.done = True
        log.info(
            "drain: %d IKE SA(s) redirected, %d could not be (no redirect support)",
            self.drain.redirected,
            len(self.drain.unsupported),
        )

    async def _publish_now(self) -> None:
        if self.store is not None:
            await self.publish()

    def _drain_status(self) -> dict[str, Any]:
        drain = self.drain
        return {
            "draining": drain.active,
            "to": drain.target,
            "ike_sas_at_start": drain.total,
            "redirected": drain.redirected,
            "not_redirectable": drain.unsupported,
            "ike_sas_now": len(self.engine.established()),
            "sent_all": drain.done,
            "seconds": round(time.monotonic() - drain.started, 1) if drain.started else 0.0,
        }


def redirect_limits(daemon: Any) -> DispatcherConfig:
    """The engine's limits with ``[daemon]``'s RFC 5685 client settings (the rest are the
    engine's defaults)."""
    return DispatcherConfig(
        follow_redirects=daemon.follow_redirects,
        accept_redirect_to=list(daemon.accept_redirect_to),
        redirect_limit=daemon.redirect_limit,
        redirect_period=daemon.redirect_period,
    )


def _matches(sa: ev.IkeSaEstablished, selector: dict[str, Any]) -> bool:
    if "ike" in selector and sa.connection != selector["ike"]:
        return False
    if "ike_id" in selector and sa.ike_sa_id != int(selector["ike_id"]):
        return False
    if "peer_ip" in selector and sa.remote_addr[0] != str(selector["peer_ip"]):
        return False
    return "peer_id" not in selector or sa.remote_id == str(selector["peer_id"])
