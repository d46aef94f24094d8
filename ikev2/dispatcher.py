"""The front door of the engine: routes datagrams to IKE SAs by SPI and answers what needs
no state (RFC 7296 sec. 2.6 COOKIE, INVALID_KE_PAYLOAD, NO_PROPOSAL_CHOSEN).

Sans-I/O like ``IkeSa``: ``receive_datagram(data, remote_addr, local_addr, now)``,
``datagrams_to_send(now)``, ``get_timer()``, ``handle_timer(now)``, ``next_event()``.
The daemon strips the non-ESP marker before ``receive_datagram`` and adds it to
datagrams whose local or remote port is 4500.

Half-open SAs (IKE_SA_INIT answered, IKE_AUTH pending) are bounded with strongSwan's
defaults: above ``cookie_threshold`` half-open SAs in total, or ``cookie_threshold_ip``
from one address, a valid COOKIE is demanded; above ``block_threshold`` from one address
new requests are dropped; each half-open SA dies after ``half_open_timeout``.

No limit locks everyone out (issue 13, F2: an attacker with 200 addresses that answer
COOKIEs filled a global cap and every IKE_SA_INIT, a configured peer's included, was
dropped). Instead:

* at most ``half_open_per_prefix`` half-open SAs per /24 (IPv4) or /64 (IPv6): above it,
  the prefix's oldest half-open SA is evicted, so a prefix can only crowd out itself;
* when the table (``init_limit_half_open``) is full, a new request evicts the oldest
  half-open SA of the most-represented prefix;
* addresses a connection names in ``remote_addrs`` (anything narrower than %any) are
  preferred: outside the prefix buckets, never evicted for an unconfigured address;
* fragment reassembly memory is bounded for all SAs together
  (``reassembly_total_bytes``, :class:`ikev2.fragments.ReassemblyBudget`).

A legitimate initiator needs its half-open SA for one round trip (IKE_AUTH); eviction
shortens how long the attacker's SAs live, it does not keep anyone out.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import ipaddress
import logging
import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ikev2.config import DispatcherConfig, IkeConfig
from ikev2.cp import ConfigProvider
from ikev2.eap.external import ExternalEapAnswer
from ikev2.enums import EncrId, ExchangeType, IntegId, NotifyType
from ikev2.errors import ProtocolError, UsageError
from ikev2.events import (
    Address,
    Event,
    IkeSaDeleted,
    IkeSaEstablished,
    NegotiationFailed,
    PeerUnreachable,
)
from ikev2.fragments import ReassemblyBudget
from ikev2.message import IkeHeader, IkeMessage, parse_message, serialize_message
from ikev2.payloads import NoncePayload, NotifyPayload
from ikev2.policy import DEFAULT_POLICY, AlgorithmPolicy
from ikev2.redirect import GatewayIdentity
from ikev2.redirects import Redirects
from ikev2.sa import (
    Datagram,
    EngineContext,
    IkeSa,
    IkeSaInfo,
    PskLookup,
    Rng,
    WatchedTimerSet,
)
from ikev2.states import IkeState
from ikev2.tasks import Payload
from ikev2.tasks.ike_eap_relay import answer_relayed
from ikev2.tasks.ike_redirect import RedirectTask

log = logging.getLogger("ikev2.dispatcher")

__all__ = ["Datagram", "Dispatcher", "IkeSaExportKeys", "IkeSaInfo"]


@dataclass(frozen=True)
class IkeSaExportKeys:
    """One IKE SA's SK_e/SK_a keys and algorithms (:meth:`Dispatcher.ike_sa_keys_for_export`).
    For AEAD ciphers ``integ`` is None, ``sk_ai``/``sk_ar`` are empty and ``sk_ei``/``sk_er``
    include the salt (RFC 5282 sec. 7.1), as Wireshark expects them."""

    spi_i: int
    spi_r: int
    encr: EncrId
    encr_key_bits: int | None
    integ: IntegId | None
    sk_ei: bytes = field(repr=False)
    sk_er: bytes = field(repr=False)
    sk_ai: bytes = field(repr=False)
    sk_ar: bytes = field(repr=False)


def _address_matches(patterns: list[str], host: str) -> bool:
    if not patterns:
        return True
    address = ipaddress.ip_address(host)
    for pattern in patterns:
        pattern = pattern.strip()
        if pattern in ("%any", "%any4", "%any6", "0.0.0.0/0", "::/0"):
            if pattern == "%any4" and address.version != 4:
                continue
            if pattern == "%any6" and address.version != 6:
                continue
            return True
        try:
            if address in ipaddress.ip_network(pattern, strict=False):
                return True
        except ValueError:
            # A host name: the daemon resolves names; here only literal addresses match.
            continue
    return False


class Dispatcher:
    """All IKE SAs of one daemon.

    ``configs``: the connections (first match wins for responders). ``psk_lookup(local_id,
    remote_id)`` returns the pre-shared key for a pair of identities or None. ``rng(n)``
    returns n random octets (injectable for deterministic tests and ``explain --seed``).
    ``wall_time_offset``: added to ``now`` to get POSIX time for certificate validity.
    ``config_provider``: the address pools that answer a road warrior's CFG_REQUEST
    (``ikev2.cp.ConfigProvider``; the daemon gives ``aioipsec.pools.PoolManager``).
    ``eap_lookup(identity)``: the EAP (MS-CHAPv2) password of an EAP identity, or None.
    The daemon's ``now`` is POSIX time already (``aioipsec.runtime.engine.now``), so it
    leaves the offset at 0; a caller on another clock passes POSIX time minus that clock.
    Nothing here reads a clock. ``source_address(remote_host)``: the local address the host
    sends from to reach that peer (the daemon asks the routing table), or None.
    """

    def __init__(
        self,
        configs: list[IkeConfig],
        psk_lookup: PskLookup,
        *,
        limits: DispatcherConfig | None = None,
        policy: AlgorithmPolicy | None = None,
        rng: Rng | None = None,
        wall_time_offset: float = 0.0,
        source_address: Callable[[str], str | None] | None = None,
        config_provider: ConfigProvider | None = None,
        eap_lookup: Callable[[str], str | None] | None = None,
    ) -> None:
        self.limits = limits or DispatcherConfig()
        # The host's answer to "which of our addresses reaches this peer" (a routing lookup
        # the daemon makes; no packet is sent). Our IKE_SA_INIT leaves from that address,
        # so NAT_DETECTION_SOURCE_IP must hash it (RFC 7296 sec. 2.23), whatever local_addrs
        # says (%any, a subnet, a range or an address). None: the first literal local address.
        self.source_address = source_address
        self.ctx = EngineContext(
            rng=rng or os.urandom,
            key_exchange_rng=rng,
            psk_lookup=psk_lookup,
            config_provider=config_provider,
            eap_lookup=eap_lookup or (lambda identity: None),
            policy=policy or DEFAULT_POLICY,
            configs=list(configs),
            wall_time_offset=wall_time_offset,
        )
        self.ctx.register_sa = self._register
        self.ctx.reauthenticate = self._reauthenticate
        self.ctx.reassembly_budget = ReassemblyBudget(self.limits.reassembly_total_bytes)
        # RFC 5685: both roles; the daemon sets ``redirects.placement`` on a gateway.
        self.redirects = Redirects(self.limits, self.initiate, self._emit, self._sa)
        self.ctx.redirects = self.redirects
        self._by_spi: dict[bytes, IkeSa] = {}
        # Responder SAs by (initiator SPI, peer address) for as long as they live: a late
        # copy of an IKE_SA_INIT request must reach its SA, not open a new one.
        self._half_open: dict[tuple[bytes, str], IkeSa] = {}
        # Responder SAs not yet through IKE_AUTH, per peer address (cookie/block limits).
        self._pending_by_host: dict[str, set[int]] = {}
        self._pending_host: dict[int, str] = {}
        # The same SAs by prefix (/24, /64), oldest first (dicts keep insertion order), and
        # those from configured peers' addresses apart (never in a prefix bucket).
        self._pending_by_prefix: dict[str, dict[int, None]] = {}
        self._pending_prefix: dict[int, str | None] = {}  # None: a preferred address
        self._pending_preferred: dict[int, None] = {}
        self._sas: dict[int, IkeSa] = {}
        self._events: deque[Event] = deque()
        self._out: list[Datagram] = []
        self._cookie_secrets: list[tuple[int, bytes, float]] = []
        self._reauth: dict[int, IkeSa] = {}  # new IKE SA id -> the SA it replaces
        self._pending_children: dict[int, list[str]] = {}
        # Shared with the SAs (they count ICV failures under valid SPIs).
        self.counters: dict[str, int] = self.ctx.counters
        # Timers: a heap of (deadline, ike_sa_id) entries, the current earliest deadline
        # per SA (entries that do not match it are stale and skipped), and the SAs whose
        # timers changed since the last look (filled by their WatchedTimerSet).
        self._timer_heap: list[tuple[float, int]] = []
        self._deadlines: dict[int, float] = {}
        self._timers_changed: set[int] = set()

    # ------------------------------------------------------------------ configuration

    @property
    def configs(self) -> list[IkeConfig]:
        return self.ctx.configs

    def set_configs(self, configs: list[IkeConfig]) -> None:
        """Replace the connection list (existing SAs keep their config)."""
        self.ctx.configs = list(configs)

    def config(self, name: str) -> IkeConfig:
        for config in self.ctx.configs:
            if config.name == name:
                return config
        raise KeyError(f"no connection named {name!r}")

    # ------------------------------------------------------------------ I/O

    def receive_datagram(
        self, data: bytes, remote_addr: Address, local_addr: Address, now: float
    ) -> None:
        try:
            msg = parse_message(data)
        except ProtocolError as error:
            self._count("parse_error")
            log.info("dropping datagram from %s: %s", remote_addr, error.reason)
            if error.notify == NotifyType.UNSUPPORTED_CRITICAL_PAYLOAD:
                self._refuse_critical(data, remote_addr, local_addr, error)
            self._collect(now)
            return
        header = msg.header
        try:
            if header.exchange == ExchangeType.IKE_SA_INIT and not header.response:
                self._receive_init_request(msg, remote_addr, local_addr, now)
            else:
                self._route(msg, remote_addr, local_addr, now)
        except Exception:
            # Any exception other than ProtocolError is a bug in the engine (h11's rule).
            # A peer must not be able to stop the daemon with it: log it loudly, count it
            # (tests assert the counter stays zero) and drop the datagram.
            self._count("internal_error")
            log.exception("internal error handling a datagram from %s", remote_addr)
        finally:
            self._collect(now)

    def datagrams_to_send(self, now: float) -> list[Datagram]:
        self._collect(now)
        out, self._out = self._out, []
        return out

    def get_timer(self) -> float | None:
        self._refresh_timers()
        heap = self._timer_heap
        deadlines = self._deadlines
        # Lazy invalidation: an entry is current only while it matches the SA's deadline.
        while heap and deadlines.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def handle_timer(self, now: float) -> None:
        self._refresh_timers()
        heap = self._timer_heap
        deadlines = self._deadlines
        due: set[int] = set()
        while heap and heap[0][0] <= now:
            deadline, ike_sa_id = heapq.heappop(heap)
            if deadlines.get(ike_sa_id) == deadline:
                due.add(ike_sa_id)
        # In registration (id) order, as a scan over every SA would visit them; an SA
        # whose timers an earlier one changed is checked again before it runs.
        for ike_sa_id in sorted(due):
            sa = self._sas.get(ike_sa_id)
            if sa is None:
                continue
            timer = sa.get_timer()
            if timer is not None and timer <= now:
                try:
                    sa.handle_timer(now)
                except Exception:
                    # A bug; keep the other SAs running (see receive_datagram).
                    self._count("internal_error")
                    log.exception("internal error in a timer of %s", sa.describe())
                    sa.timers.clear()
                    self.ctx.dirty.add(sa.ike_sa_id)
            # Its heap entry is gone: have the next refresh push its deadline again.
            self._deadlines.pop(ike_sa_id, None)
            self._timers_changed.add(ike_sa_id)
        self._collect(now)

    def _refresh_timers(self) -> None:
        """Push the new earliest deadline of every SA whose timers changed (O(log n) each)."""
        changed = self._timers_changed
        if not changed:
            return
        heap = self._timer_heap
        deadlines = self._deadlines
        sas = self._sas
        while changed:
            ike_sa_id = changed.pop()
            sa = sas.get(ike_sa_id)
            deadline = sa.get_timer() if sa is not None else None
            if deadline is None:
                deadlines.pop(ike_sa_id, None)
            elif deadlines.get(ike_sa_id) != deadline:
                deadlines[ike_sa_id] = deadline
                heapq.heappush(heap, (deadline, ike_sa_id))
        if len(heap) > 2 * len(deadlines) + 64:
            # Too many stale entries (deadlines pushed later, e.g. DPD on every message):
            # rebuild from the current deadlines, O(n) once per O(n) changes.
            self._timer_heap = [(deadline, sa_id) for sa_id, deadline in deadlines.items()]
            heapq.heapify(self._timer_heap)

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    # ------------------------------------------------------------------ actions

    def initiate(
        self,
        connection: str,
        child: str | None = None,
        *,
        now: float,
        local_addr: Address | None = None,
        remote_addr: Address | None = None,
        children: list[str] | None = None,
    ) -> int:
        """Start an IKE SA for ``connection`` with ``child`` (default: its first child) in
        IKE_AUTH and ``children`` after it via CREATE_CHILD_SA. Returns the ike_sa_id."""
        config = self.config(connection)
        if remote_addr is None:
            remote_addr = (_first_address(config.remote_addrs, None), config.remote_port)
        if local_addr is None:
            source = self.source_address(remote_addr[0]) if self.source_address else None
            host = source or _first_address(config.local_addrs, "0.0.0.0")
            local_addr = (host, config.local_port)
        if child is None and config.children:
            child = config.children[0].name
        sa = IkeSa(
            self.ctx,
            config,
            initiator=True,
            spi_i=self.ctx.new_spi(8),
            spi_r=bytes(8),
            local_addr=local_addr,
            remote_addr=remote_addr,
        )
        sa.suppress_initial_contact = any(
            other.alive and other.remote_addr[0] == remote_addr[0] for other in self._sas.values()
        )
        self._register(sa)
        if child is not None and config.childless == "force":
            # RFC 6023 sec. 4: IKE_AUTH without a Child SA; the first one follows in
            # CREATE_CHILD_SA, like the others, once the IKE SA is up.
            children = [child, *(c for c in children or [] if c != child)]
            child = None
        if children:
            self._pending_children[sa.ike_sa_id] = [c for c in children if c != child]
        sa.initiate(child, now)
        self._collect(now)
        return sa.ike_sa_id

    def create_child(self, ike_sa_id: int, child: str, now: float) -> None:
        self._sa(ike_sa_id).create_child(child, now)
        self._collect(now)

    def rekey_ike(self, ike_sa_id: int, now: float) -> None:
        self._sa(ike_sa_id).rekey_ike(now)
        self._collect(now)

    def rekey_child(self, ike_sa_id: int, child_sa_id: int, now: float) -> None:
        self._sa(ike_sa_id).rekey_child(child_sa_id, now)
        self._collect(now)

    def terminate_ike(self, ike_sa_id: int, now: float) -> None:
        self._sa(ike_sa_id).delete_ike(now)
        self._collect(now)

    def terminate_child(self, ike_sa_id: int, child_sa_id: int, now: float) -> None:
        self._sa(ike_sa_id).delete_child(child_sa_id, now)
        self._collect(now)

    def send_liveness(self, ike_sa_id: int, now: float) -> None:
        self._sa(ike_sa_id).send_liveness(now)
        self._collect(now)

    def child_sa_limit_reached(self, spi_in: int, cause: str, hard: bool, now: float) -> None:
        """The data plane reports a byte/packet limit of the inbound SA ``spi_in``."""
        for sa in list(self._sas.values()):
            if any(c.spi_in == spi_in for c in sa.children.values()):
                sa.child_limit_reached(spi_in, cause, hard, now)
        self._collect(now)

    def peer_address_seen(self, ike_sa_id: int, remote_addr: Address, now: float) -> None:
        """The data plane authenticated a new ESP packet (replay window advanced) of this IKE
        SA's Child SAs from ``remote_addr`` (RFC 3948 sec. 3.5): the peer's NAT mapping
        changed. The IKE SA follows under the same rule as for IKE messages (RFC 7296 sec.
        2.23: only while the peer is behind a NAT and we are not) and emits
        IkeSaAddressChanged when it moved. Unknown or dead SAs are ignored."""
        sa = self._sas.get(ike_sa_id)
        if sa is None or not sa.alive:
            return
        sa.follow_peer((remote_addr[0], remote_addr[1]))
        self._collect(now)

    def redirect(self, ike_sa_id: int, gateway: str, now: float) -> None:
        """Gateway: send the client of this established IKE SA to ``gateway`` (an address
        or an FQDN) with an INFORMATIONAL REDIRECT (RFC 5685 sec. 5). UsageError when the
        SA is not established or its client did not announce REDIRECT_SUPPORTED; ValueError
        for a ``gateway`` that is neither an address nor a host name."""
        target = GatewayIdentity.from_text(gateway)
        sa = self._sa(ike_sa_id)
        if not sa.established:
            raise UsageError(f"cannot redirect {sa.describe()}: it is not established")
        if not sa.peer.redirect:
            raise UsageError(
                f"cannot redirect {sa.describe()}: the client did not announce "
                "REDIRECT_SUPPORTED in IKE_SA_INIT (RFC 5685 sec. 3)"
            )
        sa.queue_task(RedirectTask(target), now)
        self._collect(now)

    def redirect_resolved(self, ike_sa_id: int, address: str | None, now: float) -> None:
        """The daemon resolved the FQDN of an ``IkeSaRedirected`` event (None: it does not
        resolve; the redirect is refused and an established SA stays)."""
        self.redirects.resolved(ike_sa_id, address, now)
        self._collect(now)

    def address_ready(self, ike_sa_id: int, now: float) -> None:
        """The daemon has the address an ``AddressRequested`` event asked for (or knows it
        has none) in its pools: the deferred IKE_AUTH response is built and sent. Ignored
        when that IKE SA is gone or waits for nothing."""
        sa = self._sas.get(ike_sa_id)
        if sa is None or not sa.alive or sa.pending_address is None:
            return
        resume, sa.pending_address = sa.pending_address, None
        if sa.answer_deferred(lambda: resume(now), now):
            self._collect(now)

    def external_eap_answer(self, ike_sa_id: int, answer: ExternalEapAnswer, now: float) -> None:
        """The external authenticator's answer to an ``EapRelay`` event (``remote auth =
        eap-radius``): the deferred IKE_AUTH response goes out. Ignored when that IKE SA is
        gone or no longer waits (it failed or timed out meanwhile)."""
        sa = self._sas.get(ike_sa_id)
        if sa is None or not sa.alive:
            return
        relay_sa = sa  # narrowed for the closure

        def build() -> list[Payload]:
            payloads = answer_relayed(relay_sa, answer)
            if payloads is None:
                raise ProtocolError("an external EAP answer nothing waits for")
            return payloads

        if sa.answer_deferred(build, now):
            self._collect(now)

    def sas(self) -> list[IkeSaInfo]:
        return [sa.info() for sa in self._sas.values() if sa.alive]

    def ike_sa(self, ike_sa_id: int) -> IkeSa:
        return self._sa(ike_sa_id)

    def ike_sa_keys_for_export(self, ike_sa_id: int) -> IkeSaExportKeys | None:
        """What a debugging key log needs to decrypt this IKE SA's SK payloads (Wireshark's
        IKEv2 decryption table: SPIs, SK_ei/SK_er, SK_ai/SK_ar and both algorithms), or
        None before the keys exist (IKE_SA_INIT not done) or for an unknown SA.

        For the daemon's ``--save-keys`` only: these are live session keys. SK_d and SK_p*
        are not in it (decryption does not need them). Fields are ``repr=False``.
        """
        sa = self._sas.get(ike_sa_id)
        if sa is None or sa.keys is None or sa.encr is None:
            return None
        return IkeSaExportKeys(
            spi_i=int.from_bytes(sa.spi_i, "big"),
            spi_r=int.from_bytes(sa.spi_r, "big"),
            encr=EncrId(sa.encr),
            encr_key_bits=sa.encr_key_bits,
            integ=None if sa.integ is None else IntegId(sa.integ),
            sk_ei=sa.keys.sk_ei,
            sk_er=sa.keys.sk_er,
            sk_ai=sa.keys.sk_ai,
            sk_ar=sa.keys.sk_ar,
        )

    def _sa(self, ike_sa_id: int) -> IkeSa:
        try:
            return self._sas[ike_sa_id]
        except KeyError:
            raise KeyError(f"no IKE SA with id {ike_sa_id}") from None

    # ------------------------------------------------------------------ internals

    def _emit(self, event: Event) -> None:
        self._events.append(event)

    def _count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    def _register(self, sa: IkeSa) -> None:
        self._sas[sa.ike_sa_id] = sa
        self._by_spi[sa.our_spi] = sa
        timers = sa.timers
        if isinstance(timers, WatchedTimerSet):
            timers.changed = self._timers_changed
        # Timers set before registration (IKE rekey moves them onto the new SA) count too.
        self._timers_changed.add(sa.ike_sa_id)

    def _route(
        self, msg: IkeMessage, remote_addr: Address, local_addr: Address, now: float
    ) -> None:
        header = msg.header
        our_spi = header.spi_r if header.initiator else header.spi_i
        sa = self._by_spi.get(our_spi)
        if sa is None or not sa.alive or sa.spi_i != header.spi_i:
            self._count("unknown_spi")
            log.debug("no IKE SA for SPI %s from %s", our_spi.hex(), remote_addr)
            return
        sa.receive_message(msg, remote_addr, local_addr, now)

    def _half_open_count(self, host: str | None = None) -> int:
        """Responder SAs that answered IKE_SA_INIT and wait for IKE_AUTH (O(1))."""
        if host is None:
            return len(self._pending_host)
        return len(self._pending_by_host.get(host, ()))

    def half_open_by_prefix(self) -> dict[str, int]:
        """Half-open SAs per prefix ("preferred": configured peers' addresses)."""
        counts = {prefix: len(ids) for prefix, ids in self._pending_by_prefix.items()}
        if self._pending_preferred:
            counts["preferred"] = len(self._pending_preferred)
        return counts

    def _prefix(self, host: str) -> str:
        address = ipaddress.ip_address(host)
        bits = self.limits.prefix_v4 if address.version == 4 else self.limits.prefix_v6
        return str(ipaddress.ip_network(f"{host}/{bits}", strict=False))

    def _preferred(self, host: str) -> bool:
        """A connection names this address (or a network holding it) as its peer: a
        configured peer, whose half-open SAs unconfigured addresses cannot evict."""
        address = ipaddress.ip_address(host)
        for config in self.ctx.configs:
            for pattern in config.remote_addrs:
                pattern = pattern.strip()
                if pattern.startswith("%"):
                    continue
                try:
                    network = ipaddress.ip_network(pattern, strict=False)
                except ValueError:
                    continue
                if network.prefixlen and address in network:
                    return True
        return False

    def _make_room(self, host: str, preferred: bool, now: float) -> bool:
        """Evict what a new half-open SA from ``host`` displaces; False: drop the request
        (only when every half-open SA is a configured peer's and ``host`` is not one)."""
        limits = self.limits
        if not preferred:
            bucket = self._pending_by_prefix.get(self._prefix(host))
            if bucket and len(bucket) >= limits.half_open_per_prefix:
                self._evict(next(iter(bucket)), now)
        if len(self._pending_host) < limits.init_limit_half_open:
            return True
        victim: int | None = None
        if self._pending_by_prefix:
            # Most-represented prefix first, its oldest SA: the attacker's, when one
            # attacker fills the table.
            bucket = max(self._pending_by_prefix.values(), key=len)
            victim = next(iter(bucket))
        elif preferred and self._pending_preferred:
            victim = next(iter(self._pending_preferred))
        if victim is None:
            self._count("init_blocked")
            return False
        self._evict(victim, now)
        return True

    def _evict(self, ike_sa_id: int, now: float) -> None:
        sa = self._sas.get(ike_sa_id)
        if sa is None:  # never: _forget removes it from the buckets
            self._pending_host.pop(ike_sa_id, None)
            return
        self._count("half_open_evicted")
        self._no_longer_half_open(sa)
        sa.fail(now, "half-open IKE SA evicted to make room (RFC 7296 sec. 2.6)")

    def _no_longer_half_open(self, sa: IkeSa) -> None:
        ike_sa_id = sa.ike_sa_id
        host = self._pending_host.pop(ike_sa_id, None)
        if host is not None:
            ids = self._pending_by_host.get(host)
            if ids is not None:
                ids.discard(ike_sa_id)
                if not ids:
                    del self._pending_by_host[host]
        if ike_sa_id in self._pending_prefix:
            prefix = self._pending_prefix.pop(ike_sa_id)
            if prefix is None:
                self._pending_preferred.pop(ike_sa_id, None)
            else:
                bucket = self._pending_by_prefix.get(prefix)
                if bucket is not None:
                    bucket.pop(ike_sa_id, None)
                    if not bucket:
                        del self._pending_by_prefix[prefix]

    def _receive_init_request(
        self, msg: IkeMessage, remote_addr: Address, local_addr: Address, now: float
    ) -> None:
        header = msg.header
        if any(header.spi_r) or header.message_id != 0:
            self._count("bad_init")
            return
        key = (header.spi_i, remote_addr[0])
        existing = self._half_open.get(key)
        if existing is not None and existing.alive:
            existing.receive_message(msg, remote_addr, local_addr, now)  # retransmission
            return
        host = remote_addr[0]
        limits = self.limits
        half_open_ip = self._half_open_count(host)
        if half_open_ip >= limits.block_threshold:
            # One address crowds out only itself.
            self._count("init_blocked")
            return
        if (
            self._half_open_count() >= limits.cookie_threshold
            or half_open_ip >= limits.cookie_threshold_ip
        ) and not self._cookie_valid(msg, remote_addr, now):
            self._count("cookie_demanded")
            self._stateless_reply(
                msg, local_addr, remote_addr, NotifyType.COOKIE, self._make_cookie(msg, host, now)
            )
            return
        candidates = [
            c
            for c in self.ctx.configs
            if _address_matches(c.local_addrs, local_addr[0])
            and _address_matches(c.remote_addrs, host)
        ]
        if not candidates:
            self._count("no_config")
            reason = f"no connection configured for {local_addr[0]} <-> {host}"
            self._events.append(
                NegotiationFailed(
                    0,
                    "",
                    reason,
                    NotifyType.NO_PROPOSAL_CHOSEN,
                    received=False,
                    exchange="IKE_SA_INIT",
                )
            )
            self._stateless_reply(msg, local_addr, remote_addr, NotifyType.NO_PROPOSAL_CHOSEN)
            return
        redirect = self.redirects.at_init(msg.payloads, remote_addr)
        if redirect is not None:  # RFC 5685 sec. 4.2: stateless, carrying the client's Ni
            self._count("redirected_at_init")
            self._stateless_reply(
                msg, local_addr, remote_addr, NotifyType.REDIRECT, bytes(redirect.data)
            )
            return
        sa = IkeSa(
            self.ctx,
            candidates[0],
            initiator=False,
            spi_i=header.spi_i,
            spi_r=self.ctx.new_spi(8),
            local_addr=local_addr,
            remote_addr=remote_addr,
            candidate_configs=candidates,
        )
        try:
            sa.respond_init(msg, now)
        except ProtocolError as error:
            self._count(f"init_refused_{error.notify.name if error.notify else 'drop'}")
            if error.notify is None:
                return
            if error.notify != NotifyType.INVALID_KE_PAYLOAD:
                self._events.append(
                    NegotiationFailed(
                        sa.ike_sa_id,
                        sa.name,
                        error.reason,
                        error.notify,
                        received=False,
                        exchange="IKE_SA_INIT",
                    )
                )
                log.info("IKE_SA_INIT from %s refused: %s", remote_addr, error.reason)
            self._stateless_reply(msg, local_addr, remote_addr, error.notify, error.notify_data)
            return
        preferred = self._preferred(host)
        if not self._make_room(host, preferred, now):
            return
        self._register(sa)
        self._half_open[key] = sa
        self._pending_by_host.setdefault(host, set()).add(sa.ike_sa_id)
        self._pending_host[sa.ike_sa_id] = host
        if preferred:
            self._pending_prefix[sa.ike_sa_id] = None
            self._pending_preferred[sa.ike_sa_id] = None
        else:
            prefix = self._prefix(host)
            self._pending_prefix[sa.ike_sa_id] = prefix
            self._pending_by_prefix.setdefault(prefix, {})[sa.ike_sa_id] = None
        sa.timers.set("half_open", now + limits.half_open_timeout)

    def _refuse_critical(
        self, data: bytes, remote_addr: Address, local_addr: Address, error: ProtocolError
    ) -> None:
        """RFC 7296 sec. 2.5: an IKE_SA_INIT request with an unknown critical payload is
        answered with UNSUPPORTED_CRITICAL_PAYLOAD (data: the payload type); on an
        existing SA the SA itself answers (the payload is inside SK there)."""
        try:
            header = IkeHeader.parse(data)
        except ProtocolError:
            return
        if header.exchange != ExchangeType.IKE_SA_INIT or header.response:
            return
        self._stateless_reply(
            IkeMessage(header=header), local_addr, remote_addr, error.notify, error.notify_data
        )

    def _stateless_reply(
        self,
        msg: IkeMessage,
        local_addr: Address,
        remote_addr: Address,
        notify: NotifyType | None,
        data: bytes = b"",
    ) -> None:
        """A notify-only IKE_SA_INIT response with a zero responder SPI (sec. 2.6, 1.3)."""
        header = IkeHeader(
            spi_i=msg.header.spi_i,
            spi_r=bytes(8),
            exchange=ExchangeType.IKE_SA_INIT,
            response=True,
            message_id=0,
        )
        assert notify is not None
        payload = NotifyPayload(notify_type=notify, data=data)
        self._out.append(Datagram(serialize_message(header, [payload]), local_addr, remote_addr))

    # --- cookies (RFC 7296 sec. 2.6): Cookie = VersionIDofSecret | Hash(Ni | IPi | SPIi | secret)

    def _cookie_secret(self, now: float) -> tuple[int, bytes]:
        lifetime = self.limits.cookie_secret_lifetime
        if not self._cookie_secrets or now - self._cookie_secrets[-1][2] > lifetime:
            version = (self._cookie_secrets[-1][0] + 1) % 256 if self._cookie_secrets else 0
            self._cookie_secrets.append((version, self.ctx.rng(32), now))
            del self._cookie_secrets[:-2]  # the current and the previous secret
        version, secret, _ = self._cookie_secrets[-1]
        return version, secret

    @staticmethod
    def _cookie_value(version: int, secret: bytes, msg: IkeMessage, host: str) -> bytes:
        nonce = next((p.nonce for p in msg.payloads if isinstance(p, NoncePayload)), b"")
        digest = hashlib.sha256(
            bytes(nonce) + ipaddress.ip_address(host).packed + msg.header.spi_i + secret
        ).digest()
        return bytes([version]) + digest[:16]

    def _make_cookie(self, msg: IkeMessage, host: str, now: float) -> bytes:
        version, secret = self._cookie_secret(now)
        return self._cookie_value(version, secret, msg, host)

    def _cookie_valid(self, msg: IkeMessage, remote_addr: Address, now: float) -> bool:
        first = msg.payloads[0] if msg.payloads else None
        if not isinstance(first, NotifyPayload) or first.notify_type != NotifyType.COOKIE:
            return False
        cookie = bytes(first.data)
        self._cookie_secret(now)
        for version, secret, _ in self._cookie_secrets:
            if cookie[:1] == bytes([version]) and hmac.compare_digest(
                cookie, self._cookie_value(version, secret, msg, remote_addr[0])
            ):
                return True
        return False

    # --- bookkeeping after every call

    def _collect(self, now: float) -> None:
        # Only SAs with queued output are visited. Handling one SA's events can touch
        # others (INITIAL_CONTACT, reauthentication, restarts): repeat until all are
        # drained, before dead ones are forgotten.
        dirty = self.ctx.dirty
        while dirty:
            ike_sa_id = dirty.pop()
            sa = self._sas.get(ike_sa_id)
            if sa is None:
                continue
            self._out.extend(sa.datagrams_to_send(now))
            while (event := sa.next_event()) is not None:
                self._events.append(event)
                self._on_event(sa, event, now)
            self._out.extend(sa.datagrams_to_send(now))
            if sa.peer.initial_contact:
                sa.peer.initial_contact = False
                if sa.config.unique != "never":
                    self._initial_contact(sa, now)
            if not sa.alive:
                self._forget(sa)

    def _forget(self, sa: IkeSa) -> None:
        self._no_longer_half_open(sa)
        if self.ctx.reassembly_budget is not None:
            self.ctx.reassembly_budget.release(sa.ike_sa_id)
        self._sas.pop(sa.ike_sa_id, None)
        self._deadlines.pop(sa.ike_sa_id, None)
        if self._by_spi.get(sa.our_spi) is sa:
            del self._by_spi[sa.our_spi]
        key = (sa.spi_i, sa.remote_addr[0])
        if self._half_open.get(key) is sa:
            del self._half_open[key]
        else:
            for other_key, value in list(self._half_open.items()):
                if value is sa:
                    del self._half_open[other_key]

    def _on_event(self, sa: IkeSa, event: Event, now: float) -> None:
        self.redirects.on_event(sa, event, now)
        if isinstance(event, IkeSaEstablished):
            self._no_longer_half_open(sa)
            if sa.config.unique in ("replace", "keep"):
                self._check_unique(sa, now)
            for child in self._pending_children.pop(sa.ike_sa_id, []):
                sa.create_child(child, now)
            old = self._reauth.pop(sa.ike_sa_id, None)
            if old is not None and old.alive:
                # Make-before-break reauthentication: the new SA stands, drop the old one.
                old.delete_ike(now, "reauthenticated")
        elif isinstance(event, PeerUnreachable) and event.action == "restart":
            children = [c.config.name for c in sa.children.values() if c.alive]
            self._restart(sa, children, now)
        elif (
            isinstance(event, IkeSaDeleted)
            and event.reason == "deleted by peer"
            and sa.closed_children
            and any(sa.config.child(name).close_action == "start" for name in sa.closed_children)
        ):
            # swanctl close_action = start: the peer closed it, bring it back up.
            self._restart(sa, sa.closed_children, now)

    def _restart(self, sa: IkeSa, children: list[str], now: float) -> None:
        config = sa.config
        if not config.children:
            return
        names = children or [config.children[0].name]
        remote = sa.remote_addr[0]
        if not _address_matches(config.remote_addrs, remote):
            # A gateway we were redirected to (RFC 5685) died: start over where the
            # connection says, not at the dead gateway.
            remote = _first_address(config.remote_addrs, remote)
        new_id = self.initiate(
            config.name,
            names[0],
            now=now,
            local_addr=(sa.local_addr[0], config.local_port),
            remote_addr=(remote, config.remote_port),
            children=names,
        )
        # Ask for the virtual IPs we had (sec. 2.19), as charon's reestablish does: a pool
        # that still has the address free gives it back, so the tunnel keeps its inner address.
        self._sas[new_id].peer.local_vips = list(sa.peer.local_vips)
        log.info("%s: restarted as IKE SA %d (to %s)", sa.describe(), new_id, remote)

    def _reauthenticate(self, sa: IkeSa, now: float) -> None:
        """Reauthentication (strongSwan's reauth_time): a new IKE SA with the same
        children, established before the old one is deleted (make-before-break)."""
        config = sa.config
        children = [c.config.name for c in sa.children.values() if c.alive] or (
            [config.children[0].name] if config.children else []
        )
        new_id = self.initiate(
            config.name,
            children[0] if children else None,
            now=now,
            local_addr=(sa.local_addr[0], config.local_port),
            remote_addr=(sa.remote_addr[0], config.remote_port),
            children=children,
        )
        # The new IKE SA asks for the virtual IPs we have (sec. 2.19), so the tunnel keeps
        # its inner addresses across the reauthentication.
        self._sas[new_id].peer.local_vips = list(sa.peer.local_vips)
        self._reauth[new_id] = sa

    def _duplicates(self, sa: IkeSa) -> list[IkeSa]:
        """Other established IKE SAs of the same connection between the same identities
        (not the one being rekeyed or reauthenticated into ``sa``)."""
        return [
            other
            for other in self._sas.values()
            if other is not sa
            and other.alive
            and other.established
            and other.config.name == sa.config.name
            and other.remote_id == sa.remote_id
            and other.local_id == sa.local_id
            and other.state is not IkeState.REKEYED
            and other.successor is None
            and self._reauth.get(sa.ike_sa_id) is not other
        ]

    def _check_unique(self, sa: IkeSa, now: float) -> None:
        """strongSwan's ``unique = replace | keep`` once a new IKE SA is up."""
        duplicates = self._duplicates(sa)
        if not duplicates:
            return
        if sa.config.unique == "replace":
            for other in duplicates:
                other.delete_ike(now, "unique = replace: a new IKE SA with the same identities")
        else:
            sa.delete_ike(now, "unique = keep: an IKE SA with the same identities exists")

    def _initial_contact(self, sa: IkeSa, now: float) -> None:
        """RFC 7296 sec. 2.4 INITIAL_CONTACT: older IKE SAs between the same identities
        are stale (the peer rebooted): drop them without an exchange."""
        for other in list(self._sas.values()):
            if (
                other is not sa
                and other.alive
                and other.established
                and other.remote_id == sa.remote_id
                and other.local_id == sa.local_id
                and other.remote_addr[0] == sa.remote_addr[0]
                and other.state is not IkeState.REKEYED
                and other.successor is None
            ):
                other.destroy(now, "replaced (INITIAL_CONTACT)")


def _first_address(addresses: list[str], default: str | None) -> Any:
    for address in addresses:
        address = address.strip()
        if address.startswith("%") or "/" in address:
            continue
        try:
            ipaddress.ip_address(address)
        except ValueError:
            continue
        return address
    if default is None:
        raise ValueError("no usable remote address configured (pass remote_addr)")
    return default
