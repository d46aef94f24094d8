"""RFC 5685 redirection as one engine runs it: :class:`Redirects` implements
``ikev2.tasks.context.RedirectHooks`` for the tasks of ``ikev2.tasks.ike_redirect``.

Client side: whether to follow (``follow_redirects``), where to (``accept_redirect_to``),
how often (``redirect_limit`` in ``redirect_period``: a loop between gateways stops at the
limit), and how: a new IKE SA with the same connection and children to the new gateway,
whose IKE_SA_INIT carries REDIRECTED_FROM; an established IKE SA is deleted only when the
new one is up (make-before-break); if the new one fails, the old one stays. A gateway
named by an FQDN is resolved by the daemon, not here (:class:`ikev2.events.IkeSaRedirected`
with ``address`` None, answered through ``Dispatcher.redirect_resolved``).

Gateway side: a :class:`RedirectPlacement` set by the daemon (the cluster) decides at
IKE_SA_INIT and at IKE_AUTH; it must answer from memory (it runs inside the engine call).
"""

from __future__ import annotations

import ipaddress
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, cast

from ikev2.config import DispatcherConfig, IkeConfig
from ikev2.events import (
    Address,
    Event,
    IkeSaDeleted,
    IkeSaEstablished,
    IkeSaRedirected,
    RedirectRefused,
)
from ikev2.payloads import NoncePayload, NotifyPayload
from ikev2.redirect import GatewayIdentity
from ikev2.tasks import Payload, TaskContext
from ikev2.tasks.ike_redirect import init_redirect_notify, peer_announced, redirected_from

log = logging.getLogger("ikev2.redirects")

INIT, AUTH, INFORMATIONAL = "IKE_SA_INIT", "IKE_AUTH", "INFORMATIONAL"


class RedirectPlacement(Protocol):
    """Where a gateway sends a client (the cluster's placement): a gateway as text (an
    address or an FQDN), or None to serve it here. Never this gateway itself."""

    def at_init(self, remote_addr: Address, redirected_from: str | None) -> str | None: ...
    def at_auth(self, remote_id: str, remote_addr: Address) -> str | None: ...


# The dispatcher's ``initiate`` (connection, child, *, now, remote_addr, children) -> id.
Initiate = Callable[..., int]


class _Sa(TaskContext, Protocol):
    """An IKE SA as the dispatcher holds it (``ikev2.sa.IkeSa``)."""

    def wanted_children(self) -> list[str]: ...


@dataclass
class _Pending:
    """A redirect waiting for the daemon to resolve an FQDN."""

    sa: _Sa
    config: IkeConfig
    children: list[str]
    exchange: str
    gateway: GatewayIdentity


@dataclass
class Redirects:
    limits: DispatcherConfig
    initiate: Initiate
    emit: Callable[[Event], None]
    ike_sa: Callable[[int], _Sa] | None = None  # the dispatcher's SA by id
    placement: RedirectPlacement | None = None
    _history: dict[str, deque[float]] = field(default_factory=dict)
    _origin: dict[int, GatewayIdentity] = field(default_factory=dict)  # new SA -> old gateway
    _replaces: dict[int, _Sa] = field(default_factory=dict)  # new SA -> old (make-before-break)
    _unresolved: dict[int, _Pending] = field(default_factory=dict)  # by the old SA's id
    _initiating: GatewayIdentity | None = None

    # ------------------------------------------------------------------ hooks (tasks)

    @property
    def follow_redirects(self) -> bool:
        return self.limits.follow_redirects

    def redirected_from(self, sa: TaskContext) -> GatewayIdentity | None:
        if self._initiating is not None:
            # The new IKE SA builds its IKE_SA_INIT inside initiate(), before its id is
            # known to _go: it is the only SA that asks meanwhile.
            self._origin[sa.ike_sa_id] = self._initiating
        return self._origin.get(sa.ike_sa_id)

    def placement_at_auth(self, sa: TaskContext) -> GatewayIdentity | None:
        if self.placement is None:
            return None
        return _gateway_or_none(self.placement.at_auth(sa.remote_id, sa.remote_addr))

    def follow(
        self,
        sa: TaskContext,
        gateway: GatewayIdentity,
        exchange: str,
        now: float,
        children: list[str] | None,
    ) -> None:
        owned = _owned(sa)
        wanted = owned.wanted_children() if children is None else children
        reason = self._refusal(owned, gateway, now)
        if reason is not None:
            self._refuse(owned, gateway, exchange, reason, now)
            return
        self._history.setdefault(owned.name, deque()).append(now)
        old_remote = owned.remote_addr
        if gateway.is_fqdn:
            self._unresolved[owned.ike_sa_id] = _Pending(
                owned, owned.config, wanted, exchange, gateway
            )
            self.emit(
                IkeSaRedirected(
                    owned.ike_sa_id, owned.name, gateway.value, exchange, None, old_remote
                )
            )
            if exchange != INFORMATIONAL:
                owned.destroy(now, f"redirected to {gateway} ({exchange})")
            return
        self.emit(
            IkeSaRedirected(
                owned.ike_sa_id, owned.name, gateway.value, exchange, gateway.value, old_remote
            )
        )
        self._go(_Pending(owned, owned.config, wanted, exchange, gateway), gateway.value, now)

    # ------------------------------------------------------------------ the daemon

    def resolved(self, ike_sa_id: int, address: str | None, now: float) -> None:
        """The daemon's answer for an FQDN gateway (None: it does not resolve)."""
        pending = self._unresolved.pop(ike_sa_id, None)
        if pending is None:
            return
        if address is None:
            self._refuse(
                pending.sa,
                pending.gateway,
                pending.exchange,
                f"the gateway name {pending.gateway} does not resolve",
                now,
            )
            return
        if (
            self.limits.accept_redirect_to
            and not _allowed(self.limits.accept_redirect_to, GatewayIdentity.from_text(address))
            and not _allowed(self.limits.accept_redirect_to, pending.gateway)
        ):
            self._refuse(
                pending.sa, pending.gateway, pending.exchange,
                f"{pending.gateway} resolves to {address}, not in accept_redirect_to", now,
            )  # fmt: skip
            return
        self._go(pending, address, now)

    def at_init(self, payloads: list[Payload], remote_addr: Address) -> NotifyPayload | None:
        """Gateway: the REDIRECT to answer an IKE_SA_INIT request with, or None."""
        origin = redirected_from(payloads)
        if origin is not None:
            log.info("IKE_SA_INIT from %s, redirected here by %s", remote_addr, origin)
        if self.placement is None or not peer_announced(payloads):
            return None
        came_from = origin.value if origin is not None else None
        gateway = _gateway_or_none(self.placement.at_init(remote_addr, came_from))
        if gateway is None:
            return None
        nonce = next((bytes(p.nonce) for p in payloads if isinstance(p, NoncePayload)), b"")
        if not nonce:
            return None  # no Ni to bind the REDIRECT to: the SA code refuses the request
        log.info("redirecting %s to %s (IKE_SA_INIT)", remote_addr[0], gateway)
        return init_redirect_notify(gateway, nonce)

    def on_event(self, sa: _Sa, event: Event, now: float) -> None:
        """Make-before-break bookkeeping, from the dispatcher's event loop."""
        if isinstance(event, IkeSaEstablished):
            old = self._replaces.pop(sa.ike_sa_id, None)
            if old is not None and old.alive:
                old.delete_ike(now, f"redirected to {sa.remote_addr[0]}")
        elif isinstance(event, IkeSaDeleted):
            self._origin.pop(sa.ike_sa_id, None)
            old = self._replaces.pop(sa.ike_sa_id, None)
            if old is not None and old.alive and event.reason != "deleted locally":
                reason = (
                    f"the new IKE SA to {sa.remote_addr[0]} failed ({event.reason}); "
                    f"staying on {old.remote_addr[0]}"
                )
                self._refuse(old, GatewayIdentity.from_text(sa.remote_addr[0]),
                             INFORMATIONAL, reason, now)  # fmt: skip
            pending = self._unresolved.get(sa.ike_sa_id)
            if pending is not None and pending.exchange == INFORMATIONAL:
                self._unresolved.pop(sa.ike_sa_id)

    # ------------------------------------------------------------------ internals

    def _refusal(self, sa: _Sa, gateway: GatewayIdentity, now: float) -> str | None:
        limits = self.limits
        if gateway.value == sa.remote_addr[0]:
            return f"the REDIRECT names the gateway we are talking to ({gateway})"
        if limits.accept_redirect_to and not _allowed(limits.accept_redirect_to, gateway):
            return (
                f"{gateway} is not in accept_redirect_to ({', '.join(limits.accept_redirect_to)})"
            )
        history = self._history.get(sa.name)
        if history is None:
            return None
        while history and history[0] <= now - limits.redirect_period:
            history.popleft()
        return self._loop(sa, history)

    def _loop(self, sa: _Sa, history: deque[float]) -> str | None:
        limits = self.limits
        if len(history) >= limits.redirect_limit:
            return (
                f"redirect loop: connection '{sa.name}' was redirected {len(history)} times "
                f"within {limits.redirect_period:g} s (redirect_limit {limits.redirect_limit} "
                f"in redirect_period); not following, check the gateways' placement"
            )
        return None

    def _refuse(
        self, sa: _Sa, gateway: GatewayIdentity, exchange: str, reason: str, now: float
    ) -> None:
        established = sa.alive and sa.established
        log.warning(
            "%s: REDIRECT to %s (%s) refused: %s%s",
            sa.describe(),
            gateway,
            exchange,
            reason,
            "; the IKE SA stays as it is" if established else "",
        )
        self.emit(RedirectRefused(sa.ike_sa_id, sa.name, gateway.value, exchange, reason))
        if sa.alive and not established:
            sa.fail(now, f"redirect to {gateway} refused: {reason}")

    def _go(self, pending: _Pending, address: str, now: float) -> None:
        old = pending.sa
        config = pending.config
        children = pending.children
        self._initiating = GatewayIdentity.from_text(old.remote_addr[0])
        try:
            new_id = self.initiate(
                config.name,
                children[0] if children else None,
                now=now,
                remote_addr=(address, config.remote_port),
                children=children,
            )
        finally:
            self._initiating = None
        if self.ike_sa is not None and old.peer.local_vips:
            # Ask the new gateway for the virtual IPs we have (RFC 7296 sec. 2.19), as on
            # reauthentication: with shared leases the client keeps its inner address.
            self.ike_sa(new_id).peer.local_vips = list(old.peer.local_vips)
        replaced = self._replaces.pop(old.ike_sa_id, None)
        if replaced is not None:
            # The new IKE SA of a make-before-break was itself redirected (at IKE_SA_INIT
            # or IKE_AUTH): the SA it was to replace waits for this one instead.
            self._replaces[new_id] = replaced
        if pending.exchange == INFORMATIONAL and old.alive:
            self._replaces[new_id] = old
        elif old.alive:
            old.destroy(now, f"redirected to {pending.gateway} ({pending.exchange})")
        log.info(
            "%s: following the REDIRECT (%s) to %s as IKE SA %d",
            old.describe(),
            pending.exchange,
            address,
            new_id,
        )


def _owned(sa: TaskContext) -> _Sa:
    # The tasks hand us the TaskContext; the dispatcher's SAs are ikev2.sa.IkeSa.
    return cast(_Sa, sa)


def _gateway_or_none(text: str | None) -> GatewayIdentity | None:
    if not text:
        return None
    try:
        return GatewayIdentity.from_text(text)
    except ValueError as error:
        log.warning("placement named an invalid gateway: %s", error)
        return None


def _allowed(patterns: list[str], gateway: GatewayIdentity) -> bool:
    """``accept_redirect_to``: addresses and networks match addresses; a host name matches
    itself, ``.example.net`` any name under it, ``%any`` everything."""
    for pattern in patterns:
        pattern = pattern.strip().lower()
        if pattern in ("%any", "*"):
            return True
        if gateway.is_fqdn:
            if pattern.startswith(".") and gateway.value.endswith(pattern):
                return True
            if pattern.rstrip(".") == gateway.value:
                return True
            continue
        try:
            if ipaddress.ip_address(gateway.value) in ipaddress.ip_network(pattern, strict=False):
                return True
        except ValueError:
            continue
    return False
