"""Child SA glue: engine events into the data path (``child_spec``), updown scripts,
proxy ARP, trap policies and start actions, and the once-a-second use tracking behind
``sas``' use-in/use-out and strongSwan's ``inactivity``."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import structlog

from aioipsec.daemon.state import DaemonState
from aioipsec.log import sa_logger
from aioipsec.runtime.children import ChildSpec
from aioipsec.runtime.updown import calls_for
from esp.events import Lifetime
from ikev2 import events as ev
from ikev2.enums import IntegId

log = structlog.get_logger("aioipsec.daemon")

# _last_use of a Child SA that has carried no packet: packets in, when, packets out, when.
_NEVER_USED = (0, -1.0, 0, -1.0)
# Child SAs _track_use looks at per turn of the event loop: one pass over all of them held
# the loop 10-30 ms a second at 2,000-3,000 SAs, and IKE set-ups waited behind it.
USE_SLICE = 500


@functools.lru_cache(maxsize=256)
def _lifetime(
    soft_bytes: int | None,
    hard_bytes: int | None,
    soft_packets: int | None,
    hard_packets: int | None,
) -> Lifetime:
    """One (frozen) Lifetime per set of limits, shared by the Child SAs that have them."""
    return Lifetime(soft_bytes, hard_bytes, soft_packets, hard_packets)


def _address(address: Any) -> tuple[str, int]:
    """(host, port) as a tuple: the event's own when it is one already (no copy per SA)."""
    return address if type(address) is tuple else (address[0], address[1])


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
        local_addr=_address(event.local_addr),
        remote_addr=_address(event.remote_addr),
        replay_window=event.replay_window,
        lifetime=_lifetime(soft_bytes, hard_bytes, soft_packets, hard_packets),
        rekey_of=rekey_of,
        # Rekey responder: keep sending on the old SA until the initiator deletes it.
        defer_outbound=rekey_of is not None and not event.initiator,
    )


class ChildSaGlue(DaemonState):
    """Child SAs installed, trapped, started and closed after inactivity."""

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

    async def _track_use(self, interval: float = 1.0) -> None:
        """Record when each Child SA last carried a packet in each direction (to the
        second): the packet counters are read once per interval, nothing per packet, and
        USE_SLICE Child SAs per turn of the event loop."""
        assert self.datapath is not None
        last_use = self._last_use
        while True:
            children = self.datapath.children
            for child_sa_id in last_use.keys() - children.keys():
                del last_use[child_sa_id]
                self._closed_inactive.discard(child_sa_id)
            # Only children with an ``inactivity`` are checked (most configurations: none).
            timeouts = self._inactivity_timeouts()
            entries = list(children.items())
            for start in range(0, len(entries), USE_SLICE):
                if start:
                    await asyncio.sleep(0)  # the loop's other work between slices
                now_wall = time.time()
                for child_sa_id, entry in entries[start : start + USE_SLICE]:
                    packets_in, packets_out = entry.sa_in.packets_in, entry.sa_out.packets_out
                    seen = last_use.get(child_sa_id)
                    if seen is None:
                        if not packets_in and not packets_out:
                            # No packet yet: no entry of its own (a list per idle tunnel
                            # was 0.1 KiB each, 1.2 MiB at 10,000).
                            if timeouts:
                                self._close_if_inactive(entry, _NEVER_USED, now_wall, timeouts)
                            continue
                        seen = last_use[child_sa_id] = [0, -1.0, 0, -1.0]
                    if packets_in != seen[0]:
                        seen[0], seen[1] = packets_in, now_wall
                    if packets_out != seen[2]:
                        seen[2], seen[3] = packets_out, now_wall
                    if timeouts:
                        self._close_if_inactive(entry, seen, now_wall, timeouts)
            await asyncio.sleep(interval)

    def _inactivity_timeouts(self) -> dict[tuple[str, str], float]:
        """(connection, child) -> ``inactivity`` seconds, for the children that have one."""
        return {
            (name, child_name): child.inactivity
            for name, connection in self.settings.connections.items()
            for child_name, child in connection.children.items()
            if child.inactivity
        }

    def _close_if_inactive(
        self,
        entry: Any,
        seen: Sequence[float],
        now_wall: float,
        timeouts: dict[tuple[str, str], float],
    ) -> None:
        """strongSwan's ``inactivity``: a Child SA that carried no packet in either
        direction for that long is closed (deleted with the peer; the IKE SA stays)."""
        inactivity = timeouts.get((entry.connection, entry.child))
        if not inactivity or self.driver is None:
            return
        if entry.child_sa_id in self._closed_inactive:
            return
        assert self.datapath is not None
        if entry.child_sa_id not in self.datapath.children:
            return  # deleted while _track_use let the loop run
        last = max(seen[1], seen[3], entry.installed_at)
        if now_wall - last < inactivity:
            return
        self._closed_inactive.add(entry.child_sa_id)
        sa_logger(log, entry.connection, entry.ike_sa_id).info(
            "closing the CHILD SA after inactivity", child=entry.child,
            inactivity=inactivity, idle=round(now_wall - last),
        )  # fmt: skip
        terminate = self.driver.dispatcher.terminate_child
        self.driver.call(terminate, entry.ike_sa_id, entry.child_sa_id)
