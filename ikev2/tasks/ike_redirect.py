"""IKEv2 redirection (RFC 5685), both roles, at its three points.

* IKE_SA_INIT (sec. 4.2): the client announces REDIRECT_SUPPORTED (or, after a redirect,
  REDIRECTED_FROM naming the gateway that sent it, sec. 6); a gateway may answer with a
  REDIRECT carrying the client's Ni, the only unprotected REDIRECT a client accepts, and
  only when that nonce is its own (:func:`process_init_redirect`).
* IKE_AUTH (sec. 4.3): after authenticating the client, the gateway answers with its
  AUTH and a REDIRECT instead of a Child SA (:func:`auth_redirect`); the client checks
  the gateway's AUTH first and then moves (:func:`process_auth_redirect`).
* INFORMATIONAL (sec. 5): on an established IKE SA the gateway sends a REDIRECT request
  (:class:`RedirectTask`); the client answers at once and moves make-before-break: its
  old IKE SA is deleted only once the new one is up (``ikev2.redirects``).

Whether and where to go is decided outside the tasks, by the engine's
:class:`ikev2.tasks.context.RedirectHooks` (the allow-list, the loop limit, FQDN
resolution by the daemon). Every refusal is logged with what was wrong and leaves an
established IKE SA as it was.
"""

from __future__ import annotations

import hmac
import logging

from ikev2.enums import ExchangeType, NotifyType
from ikev2.errors import ProtocolError
from ikev2.payloads import NotifyPayload
from ikev2.redirect import GatewayIdentity, RedirectData, RedirectedFromData
from ikev2.tasks import Payload, Task, TaskContext, find_notify

log = logging.getLogger("ikev2.tasks.ike_redirect")


def init_notifies(sa: TaskContext) -> list[NotifyPayload]:
    """The client's IKE_SA_INIT announcement: REDIRECTED_FROM after a redirect (it
    implies support, sec. 6), REDIRECT_SUPPORTED otherwise; nothing with
    ``follow_redirects`` off (a gateway must then not redirect us, sec. 3)."""
    hooks = sa.ctx.redirects
    if hooks is None or not hooks.follow_redirects:
        return []
    origin = hooks.redirected_from(sa)
    if origin is not None:
        data = RedirectedFromData(origin).serialize()
        return [NotifyPayload(notify_type=NotifyType.REDIRECTED_FROM, data=data)]
    return [NotifyPayload(notify_type=NotifyType.REDIRECT_SUPPORTED)]


def peer_announced(payloads: list[Payload]) -> bool:
    """The client's IKE_SA_INIT says it can be redirected (sec. 3, sec. 6)."""
    return (
        find_notify(payloads, NotifyType.REDIRECT_SUPPORTED) is not None
        or find_notify(payloads, NotifyType.REDIRECTED_FROM) is not None
    )


def redirected_from(payloads: list[Payload]) -> GatewayIdentity | None:
    """The gateway named by the client's REDIRECTED_FROM (None: absent or malformed, which
    changes nothing for the gateway: it is logged)."""
    notify = find_notify(payloads, NotifyType.REDIRECTED_FROM)
    if notify is None:
        return None
    try:
        return RedirectedFromData.parse(bytes(notify.data)).gateway
    except ProtocolError as error:
        log.info("ignoring a malformed REDIRECTED_FROM: %s", error.reason)
        return None


def init_redirect_notify(gateway: GatewayIdentity, nonce_i: bytes) -> NotifyPayload:
    """The gateway's REDIRECT for an IKE_SA_INIT response: with the client's Ni (sec. 4.2)."""
    return NotifyPayload(
        notify_type=NotifyType.REDIRECT, data=RedirectData(gateway, nonce_i).serialize()
    )


def redirect_notify(gateway: GatewayIdentity) -> NotifyPayload:
    """REDIRECT inside a protected message (IKE_AUTH response, INFORMATIONAL): no nonce."""
    return NotifyPayload(notify_type=NotifyType.REDIRECT, data=RedirectData(gateway).serialize())


def process_init_redirect(sa: TaskContext, notify: NotifyPayload, now: float) -> bool:
    """Client: a REDIRECT in the IKE_SA_INIT response. Returns True when it is ignored
    (the request is sent again and the real response is waited for), False when the
    redirect is being followed or refused (this IKE SA ends either way)."""
    hooks = sa.ctx.redirects
    if hooks is None or not hooks.follow_redirects:
        log.warning(
            "%s: ignoring a REDIRECT in the IKE_SA_INIT response: we did not announce "
            "REDIRECT_SUPPORTED (follow_redirects = no)",
            sa.describe(),
        )
        return True
    try:
        data = RedirectData.parse(bytes(notify.data))
    except ProtocolError as error:
        log.warning(
            "%s: ignoring a malformed REDIRECT in the IKE_SA_INIT response: %s",
            sa.describe(),
            error.reason,
        )
        return True
    # Sec. 4.2: the response is not authenticated; only the echo of our Ni shows it
    # answers our request (an off-path attacker does not know Ni).
    if not hmac.compare_digest(data.nonce, sa.keymat.nonce_i):
        log.warning(
            "%s: ignoring a REDIRECT to %s in the IKE_SA_INIT response: its nonce is not "
            "our Ni (RFC 5685 sec. 4.2: forged or stale); waiting for the real response",
            sa.describe(),
            data.gateway,
        )
        return True
    hooks.follow(sa, data.gateway, "IKE_SA_INIT", now, None)
    return False


def find_redirect(payloads: list[Payload]) -> NotifyPayload | None:
    return find_notify(payloads, NotifyType.REDIRECT)


def parse_protected(sa: TaskContext, notify: NotifyPayload, where: str) -> GatewayIdentity | None:
    """The gateway of a REDIRECT in a protected message; None (logged) when malformed."""
    try:
        data = RedirectData.parse(bytes(notify.data))
    except ProtocolError as error:
        log.warning(
            "%s: ignoring a malformed REDIRECT in %s: %s", sa.describe(), where, error.reason
        )
        return None
    return data.gateway


def process_auth_redirect(
    sa: TaskContext, payloads: list[Payload], child: str | None, now: float
) -> bool:
    """Client, after the gateway's AUTH verified: True when the IKE_AUTH response carries a
    REDIRECT (sec. 4.3: no Child SA was created; this IKE SA ends and the connection is
    initiated at the new gateway, or the redirect is refused and the SA fails)."""
    notify = find_redirect(payloads)
    if notify is None:
        return False
    hooks = sa.ctx.redirects
    gateway = parse_protected(sa, notify, "the IKE_AUTH response")
    if hooks is None or not hooks.follow_redirects:
        sa.fail(now, "the gateway redirects us in IKE_AUTH (no Child SA); follow_redirects = no")
        return True
    if gateway is None:
        sa.fail(now, "the IKE_AUTH response carries a malformed REDIRECT and no Child SA")
        return True
    hooks.follow(sa, gateway, "IKE_AUTH", now, [child] if child else [])
    return True


def auth_redirect(sa: TaskContext) -> NotifyPayload | None:
    """Gateway, IKE_AUTH with the client authenticated: the REDIRECT to answer with when
    placement by identity says another member (sec. 4.3), else None."""
    hooks = sa.ctx.redirects
    if hooks is None or not sa.peer.redirect:
        return None
    gateway = hooks.placement_at_auth(sa)
    if gateway is None:
        return None
    log.info("%s: redirecting %s to %s (IKE_AUTH)", sa.describe(), sa.remote_id, gateway)
    return redirect_notify(gateway)


def process_informational_redirect(sa: TaskContext, notify: NotifyPayload) -> None:
    """Client: a REDIRECT request on an established IKE SA (sec. 5). The answer is empty
    either way; following starts after the response is sent."""
    hooks = sa.ctx.redirects
    if hooks is None or not hooks.follow_redirects:
        log.warning("%s: ignoring a REDIRECT (INFORMATIONAL): follow_redirects = no", sa.describe())
        return
    gateway = parse_protected(sa, notify, "an INFORMATIONAL request")
    if gateway is None:
        return
    sa.after_response(lambda when: hooks.follow(sa, gateway, "INFORMATIONAL", when, None))


class RedirectTask(Task):
    """Gateway: INFORMATIONAL with REDIRECT on an established IKE SA (sec. 5). The client
    answers with an empty INFORMATIONAL and deletes this IKE SA itself once its new one
    is up, so nothing follows here."""

    exchange = ExchangeType.INFORMATIONAL
    name = "INFORMATIONAL(REDIRECT)"

    def __init__(self, gateway: GatewayIdentity) -> None:
        self.gateway = gateway

    def build(self, sa: TaskContext, now: float) -> list[Payload] | None:
        if not sa.established:
            return None
        log.info("%s: redirecting the client to %s (INFORMATIONAL)", sa.describe(), self.gateway)
        return [redirect_notify(self.gateway)]

    def process(self, sa: TaskContext, payloads: list[Payload], now: float) -> bool:
        return False
