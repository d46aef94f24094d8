"""The daemon's data path: a :class:`ChildTable` (control) and a :class:`Forwarder` (the
per-packet functions) composed, with the TUN device's life and MTU, key export, listings
and counters.

* ``aioipsec.runtime.children``: install/remove of Child SAs from a neutral
  :class:`ChildSpec`, traps, reqids, the SAD/SPD and the indexes; one lookup from a
  policy to everything a packet needs;
* ``aioipsec.runtime.forwarding``: TUN -> policy -> ESP -> socket and socket -> SA ->
  ESP -> TUN, the GSO batch (see that module for the path of a packet);
* ``aioipsec.runtime.workers``: with ``workers = 2`` the outbound direction (TUN -> ESP)
  runs in an encrypt worker process; this class then sends it every Child SA change and
  applies its counters, and the daemon's own forwarder only decrypts. With
  ``worker_steering = sa`` N workers each own some Child SAs, both directions
  (``aioipsec.runtime.steering``), and the daemon's forwarder handles no ESP of ours.

Time base: one clock for the whole daemon, ``aioipsec.runtime.engine.now`` (POSIX
seconds, ``time.time()``): the engine's timers and certificate checks, the SAs' install
times, the SPD's hold timers and the listings. ``DataPath(clock=...)`` takes it from the
daemon (tests may pass their own).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from typing import Any

import structlog

from aioipsec.keyexport import EspKeyRow

from .children import ChildEntry, ChildSpec, ChildTable
from .engine import now as wall_clock
from .forwarding import Address, Forwarder
from .routes import RouteManager
from .sockets import DrainingSocket, RawEspSocket
from .workers import EncryptWorker, SteeredWorkers, TrapSpec

log = structlog.get_logger("aioipsec.datapath")

# A rekey responder switches its outbound traffic to the new SA when the initiator deletes
# the old one, or after this many seconds.
OUTBOUND_SWITCH_MAX = 2.0
# How long the inbound SA of a rekeyed Child SA still decrypts after its deletion
# (strongSwan's charon.delete_rekeyed_delay, same default): see ChildTable.remove.
REKEYED_INBOUND_GRACE = 5.0
DEFAULT_TUN_MTU = 1400  # strongSwan's kernel-libipsec default, before any SA is known


class DataPath:
    """The data plane of the daemon (see the module doc)."""

    def __init__(
        self,
        tun: Any,
        routes: RouteManager,
        *,
        on_acquire: Callable[[str, str], None],
        on_limit: Callable[[int, str, bool], None],
        exporter: Any = None,
        on_peer_moved: Callable[[int, Address], None] | None = None,
        clock: Callable[[], float] = wall_clock,
        workers: int = 1,
        steering: str = "direction",
        log_settings: tuple[str, str] = ("info", "console"),
    ) -> None:
        self.tun = tun
        self.routes = routes
        self.exporter = exporter
        self.clock = clock
        self.table = ChildTable(routes, on_acquire=on_acquire, on_limit=on_limit)
        if workers > 1 and on_peer_moved is not None:
            # ESP from a peer's new NAT mapping (the daemon decrypts it): the encrypt worker
            # must send there too, now rather than at its next counter report.
            daemon_peer_moved = on_peer_moved

            def peer_moved(ike_sa_id: int, address: Address) -> None:
                self.peers_changed()
                daemon_peer_moved(ike_sa_id, address)

            on_peer_moved = peer_moved
        self.forwarder = Forwarder(tun, self.table, clock, on_peer_moved=on_peer_moved)
        # What the daemon reads and changes (the table's own dictionaries).
        self.children = self.table.children
        self.nat_local = self.table.nat_local
        self._loop: asyncio.AbstractEventLoop | None = None
        self.tun_mtu = DEFAULT_TUN_MTU
        # workers >= 2: the encrypt worker reads the TUN (aioipsec.runtime.workers).
        self.worker: EncryptWorker | SteeredWorkers | None = None
        # worker_steering = sa: the engine's hook for our inbound SPIs (the owner's index).
        self.spi_hook: Callable[[bytes], bytes] | None = None
        if workers > 1 and steering == "sa":
            self.worker = SteeredWorkers(
                self.table, tun=tun, workers=workers, on_acquire=on_acquire,
                on_limit=on_limit, log_level=log_settings[0], log_format=log_settings[1],
            )  # fmt: skip
            self.worker.on_too_big = self._worker_too_big
            self.worker.on_peer_moved = on_peer_moved
            self.spi_hook = self.worker.steering.hook
        elif workers > 1:
            self.worker = EncryptWorker(
                self.table,
                tun_fd=tun.fileno(),
                vnet_hdr=bool(getattr(tun, "vnet_hdr", False)),
                on_acquire=on_acquire,
                on_limit=on_limit,
                log_level=log_settings[0],
                log_format=log_settings[1],
            )
            self.worker.on_too_big = self._worker_too_big

    # ------------------------------------------------------------------ lifecycle

    def set_sockets(self, udp: list[DrainingSocket], raw: list[RawEspSocket]) -> None:
        self.forwarder.set_sockets(udp, raw)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.tun_mtu = self.tun.mtu
        if isinstance(self.worker, SteeredWorkers):
            # Before the daemon drops CAP_NET_RAW: the workers' sockets and TUN queues.
            self.worker.open(self.forwarder.udp, self.forwarder.raw)
        if self.worker is not None:
            return  # the encrypt worker reads the TUN: start_worker()
        loop.add_reader(self.tun.fileno(), self.forwarder.tun_readable)

    async def start_worker(self, timeout: float = 30.0) -> None:
        """With an encrypt worker: start it (the daemon calls this once it has dropped the
        capabilities it does not need, which the worker then does not have either) and
        wait until it reads the TUN (its interpreter takes a few tenths of a second to
        start), so that "daemon started" means packets are sent."""
        if self.worker is None or self._loop is None:
            return
        forwarder = self.forwarder
        self.worker.start(
            self._loop,
            [sock.sock.fileno() for sock in forwarder.udp],
            [sock.sock.fileno() for sock in forwarder.raw],
            [sock.no_df.sock.fileno() for sock in (*forwarder.udp, *forwarder.raw)],
        )
        try:
            await asyncio.wait_for(self.worker.ready.wait(), timeout)
        except TimeoutError:
            raise RuntimeError(
                f"the encrypt worker did not start within {timeout:.0f} s: see its log lines "
                "above, or set [daemon] workers = 1"
            ) from None

    def close(self) -> None:
        if self.worker is not None:
            self.worker.close()
        if self._loop is not None:
            try:
                self._loop.remove_reader(self.tun.fileno())
            except (ValueError, OSError):
                pass
            self._loop = None
        self.table.flush()

    # ------------------------------------------------------------------ receiving

    def esp_received_udp(self, packet: memoryview, remote: Address) -> None:
        self.forwarder.esp_received_udp(packet, remote)

    def esp_received_raw(self, packet: memoryview, remote: Address) -> None:
        self.forwarder.esp_received_raw(packet, remote)

    # ------------------------------------------------------------------ counters the daemon moves

    @property
    def esp_drops(self) -> int:
        return self.forwarder.counters.esp_drops

    @esp_drops.setter
    def esp_drops(self, value: int) -> None:
        self.forwarder.counters.esp_drops = value

    @property
    def keepalives_in(self) -> int:
        return self.forwarder.counters.keepalives_in

    @keepalives_in.setter
    def keepalives_in(self, value: int) -> None:
        self.forwarder.counters.keepalives_in = value

    @property
    def keepalives_out(self) -> int:
        return self.forwarder.counters.keepalives_out

    @keepalives_out.setter
    def keepalives_out(self, value: int) -> None:
        self.forwarder.counters.keepalives_out = value

    # ------------------------------------------------------------------ Child SAs

    def install_child(self, spec: ChildSpec) -> list[str]:
        """Install a Child SA (see :meth:`ChildTable.install` for make-before-break);
        return the routes added. Packets held for its policies leave now."""
        now = self.clock()
        entry, routes = self.table.install(spec, now)
        if not entry.outbound_active and self._loop is not None:
            # The fallback of a deferred outbound switch (rekey responder).
            self._loop.call_later(OUTBOUND_SWITCH_MAX, self.table.activate_outbound, entry)
        self._update_tun_mtu()
        if self.exporter is not None:
            self._export(entry)
        if self.worker is not None:
            self.worker.install(entry)
            return routes
        self.forwarder.send_held(entry, self.table.spd.release_held(entry.reqid, now))
        return routes

    def remove_child(self, child_sa_id: int) -> None:
        # A rekeyed SA (or a collision's redundant one) keeps its inbound side a while:
        # the peer's packets sent on it before the switch are still arriving.
        keep = self._loop is not None and self.table.replaced(child_sa_id)
        entry = self.table.remove(child_sa_id, keep_inbound=keep)
        if entry is None:
            return
        if self.worker is not None:
            self.worker.remove(child_sa_id, entry.sa_out.spi, keep_inbound=keep)
        self._update_tun_mtu()
        if keep and self._loop is not None:
            self._loop.call_later(REKEYED_INBOUND_GRACE, self._drop_inbound, entry)
        elif self.exporter is not None:
            self.exporter.remove_esp_sa(entry.sa_in.spi, entry.sa_out.spi)

    def _drop_inbound(self, entry: ChildEntry) -> None:
        self.table.drop_inbound(entry)
        if self.exporter is not None:
            self.exporter.remove_esp_sa(entry.sa_in.spi, entry.sa_out.spi)

    def rebind_ike_sa(self, old_ike_sa_id: int, new_ike_sa_id: int) -> None:
        """After an IKE SA rekey its Child SAs belong to the new IKE SA."""
        self.table.rebind_ike_sa(old_ike_sa_id, new_ike_sa_id)
        if self.worker is not None:
            self.worker.send(("rebind", old_ike_sa_id, new_ike_sa_id))

    def _worker_too_big(self, host: str) -> None:
        """The worker's send to HOST failed with EMSGSIZE: what the daemon's own sockets
        report to the daemon's PathMtu (``on_too_big``, set by the daemon)."""
        for sock in (*self.forwarder.udp, *self.forwarder.raw):
            if sock.on_too_big is not None:
                sock.on_too_big(host)
                return

    def peers_changed(self) -> None:
        """A peer's address changed in the table (NAT mapping, MOBIKE): with an encrypt
        worker, tell it now (it also compares at every counter report)."""
        if self.worker is not None:
            self.worker.sync_peers()

    def packets_out_of(self, ike_sa_id: int) -> int:
        children = self.table.children_of(ike_sa_id)
        return sum(entry.sa_out.packets_out for entry in children.values())

    def peer_address(self, ike_sa_id: int) -> Address | None:
        for entry in self.table.children_of(ike_sa_id).values():
            return entry.peer.address
        return None

    def update_tun_mtu(self) -> None:
        """The TUN device's MTU: the smallest tunnel MTU (after a path MTU change too)."""
        self._update_tun_mtu()
        if self.worker is not None:
            self.worker.send_mtus()  # the Child SAs' tunnel MTUs may have changed

    def _update_tun_mtu(self) -> None:
        if not self.children:
            return
        mtu = min(self.table.mtu_counts)  # a few distinct MTUs, not one per Child SA
        if mtu != self.tun_mtu:
            try:
                self.tun.set_mtu(mtu)
                self.tun_mtu = mtu
            except OSError as exc:
                log.warning("cannot set the TUN MTU", mtu=mtu, error=str(exc))

    def _export(self, entry: ChildEntry) -> None:
        spec = entry.spec
        natted = spec.udp_encap
        local = "*" if natted else spec.local_addr[0]
        remote = "*" if natted else spec.remote_addr[0]
        ipv6 = ":" in spec.remote_addr[0]
        self.exporter.add_esp_sa(
            EspKeyRow(
                local, remote, spec.spi_out, spec.encr, spec.integ,
                spec.encr_key_out, spec.integ_key_out, ipv6,
            ),
            EspKeyRow(
                remote, local, spec.spi_in, spec.encr, spec.integ,
                spec.encr_key_in, spec.integ_key_in, ipv6,
            ),
        )  # fmt: skip

    # ------------------------------------------------------------------ traps

    def add_trap(self, config: Any, child: Any) -> None:
        """Install the trap policies (and routes) of a ``start_action = trap`` child."""
        self.table.add_trap(config, child)
        if self.worker is not None:
            self.worker.add_trap(TrapSpec.of(config, child))

    def has_trap(self, connection: str, child: str) -> bool:
        return self.table.has_trap(connection, child)

    def clear_traps(self) -> None:
        self.table.clear_traps()
        if self.worker is not None:
            self.worker.clear_traps()

    # ------------------------------------------------------------------ listings

    def child_counters(self, child_sa_id: int) -> dict[str, Any]:
        entry = self.children.get(child_sa_id)
        if entry is None:
            return {}
        counters_in = entry.sa_in.counters()
        counters_out = entry.sa_out.counters()
        if self.worker is not None:
            counters_out["packets_out"] = self.worker.packets_out(entry.sa_out)
        return {
            "bytes_in": counters_in["bytes_in"],
            "packets_in": counters_in["packets_in"],
            "bytes_out": counters_out["bytes_out"],
            "packets_out": counters_out["packets_out"],
            "installed_at": entry.installed_at,
            "drops_in": {
                k: v
                for k, v in counters_in.items()
                if k not in ("bytes_in", "packets_in", "bytes_out", "packets_out")
            },
        }

    def policies_listing(self) -> list[dict[str, Any]]:
        """The SPD as JSON, each policy with its connection/child and whether it is a trap,
        plus the inbound policy checks of the installed SAs."""
        listing = []
        traps = {index for table in self.table.trap_policies.values() for index in table.values()}
        for item in self.table.spd.to_json():
            reqid = item["reqid"]
            assert isinstance(reqid, int)  # Policy.to_json
            names = self.table.reqid_names.get(reqid)
            if names is not None:
                item["connection"], item["child"] = names
            item["trap"] = item["index"] in traps
            sa = self.table.sad.lookup_outbound(reqid)
            if sa is not None:
                item["spi"] = f"{sa.spi:08x}"
            listing.append(item)
        for entry in self.children.values():
            for selector in entry.sa_in.selectors:
                listing.append(
                    {
                        "dir": "in",
                        "action": "protect",
                        "selector": selector.to_json(),
                        "connection": entry.connection,
                        "child": entry.child,
                        "reqid": entry.reqid,
                        "spi": f"{entry.sa_in.spi:08x}",
                    }
                )
        return listing

    def policies_text(self) -> str:
        """``ip xfrm policy`` style (outbound SPD), then the inbound checks of the SAs."""
        lines = [self.table.spd.text().rstrip("\n")] if len(self.table.spd) else []
        for entry in self.children.values():
            for selector in entry.sa_in.selectors:
                lines.append(
                    f"{selector.text()}\n\tdir in action allow (protect)\n"
                    f"\ttmpl src {entry.sa_in.src} dst {entry.sa_in.dst}\n"
                    f"\t\tproto esp spi 0x{entry.sa_in.spi:08x} reqid {entry.reqid} "
                    f"mode {entry.spec.mode}"
                )
        return "\n".join(lines)

    def sad_text(self) -> str:
        """``ip -s xfrm state`` style (keys never shown)."""
        return self.table.sad.text()

    def stats(self) -> dict[str, Any]:
        totals: collections.Counter[str] = collections.Counter()
        for entry in self.children.values():
            totals.update(entry.sa_in.counters())
            totals.update({k: v for k, v in entry.sa_out.counters().items() if "out" in k})
        counters = self.forwarder.counters
        worker = self.worker

        def outbound(name: str) -> int:
            """The encrypt worker's part of a counter (0 with workers = 1)."""
            return 0 if worker is None else worker.total(name)

        if worker is not None:
            totals["packets_out"] -= sum(
                worker.skipped.get(e.sa_out.spi, 0) for e in self.children.values()
            )
        stats: dict[str, Any] = {
            **dict(totals),
            "no_policy": self.table.spd.no_policy + outbound("no_policy"),
            "unknown_spi": self.table.sad.unknown_spi + outbound("unknown_spi"),
            "held": self.table.spd.held + outbound("held"),
            "held_dropped": self.table.spd.held_dropped + outbound("held_dropped"),
            "esp_drops": counters.esp_drops + outbound("esp_drops"),
            "bypass_dropped": counters.bypass_dropped + outbound("bypass_dropped"),
            "too_big_sent": counters.too_big_sent + outbound("too_big_sent"),
            "fragmented_before_encryption": counters.fragmented + outbound("fragmented"),
            "keepalives_in": counters.keepalives_in,
            "keepalives_out": counters.keepalives_out,
            "nat_mapping_changes": counters.nat_mapping_changes + outbound("nat_mapping_changes"),
            "send_failures": counters.send_failures + outbound("send_failures"),
            "tun_mtu": self.tun_mtu,
            "child_sas": len(self.children),
        }
        if worker is not None:
            stats["workers"] = 2
            stats["worker_restarts"] = worker.restarts
            stats["worker_pid"] = worker.process.pid if worker.process is not None else 0
        if isinstance(worker, SteeredWorkers):
            stats["workers"] = worker.count
            stats["worker_steering"] = "sa"
            stats["worker_list"] = worker.listing()  # per worker: pid, SAs owned, counters
            for name in ("handed_off", "handoff_dropped", "foreign_in"):
                stats[name] = worker.total(name)  # summed, beside the per-worker figures
        return stats
