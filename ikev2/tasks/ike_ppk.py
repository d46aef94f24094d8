"""Postquantum preshared keys (RFC 8784) in IKE_SA_INIT and IKE_AUTH, as strongSwan does
them (``ppk_id``, ``ppk_required``, ``secrets { ppk-X }``).

Both sides announce USE_PPK in IKE_SA_INIT (sec. 3: the initiator when it has a PPK_ID
configured, the responder when it holds any PPK). The initiator then signs or MACs its
AUTH with SK_pi folded with the PPK, names the PPK in PPK_IDENTITY (type PPK_ID_FIXED,
sec. 5.1) and, unless the PPK is required, adds NO_PPK_AUTH: the same AUTH computed with
the original SK_pi, for a responder without that PPK. A responder that has the PPK uses
it (``Keymat.apply_ppk``: SK_d, SK_pi, SK_pr re-derived), confirms with an empty
PPK_IDENTITY and authenticates itself with the new SK_pr; without it, it checks the
NO_PPK_AUTH data and keeps the original keys. ``ppk_required`` on either side fails the
IKE SA (AUTHENTICATION_FAILED, check "ppk") when no PPK ends up in the keys.

PPK_IDs are compared as strongSwan compares them: by the identity's octets (the text of
an FQDN or email address); a responder's ``ppk_id`` is a pattern the initiator's must
match (``*@example.org``).
"""

from __future__ import annotations

from collections.abc import Callable

from ikev2.crypto.auth import AuthenticationError
from ikev2.enums import NotifyType
from ikev2.identity import Identity
from ikev2.payloads import AuthPayload, NotifyPayload
from ikev2.tasks import Payload, TaskContext, find_notify

# RFC 8784 sec. 5.1: PPK_ID_OPAQUE (1) and PPK_ID_FIXED (2); strongSwan sends and accepts
# only the latter.
PPK_ID_FIXED = 2


def use_ppk_notifies(sa: TaskContext, peer_payloads: list[Payload] | None) -> list[NotifyPayload]:
    """USE_PPK for our IKE_SA_INIT message (``peer_payloads`` None: we initiate)."""
    if peer_payloads is None:
        wanted = sa.config.ppk_id is not None
    else:
        wanted = bool(sa.config.ppks) and find_notify(peer_payloads, NotifyType.USE_PPK) is not None
    return [NotifyPayload(notify_type=NotifyType.USE_PPK)] if wanted else []


def note_use_ppk(sa: TaskContext, ours: list[NotifyPayload], peer_payloads: list[Payload]) -> None:
    """Both sides sent USE_PPK: the PPK is used in IKE_AUTH if one is found."""
    sa.peer.use_ppk = bool(ours) and find_notify(peer_payloads, NotifyType.USE_PPK) is not None


def _required(sa: TaskContext, reason: str) -> None:
    if sa.config.ppk_required:
        raise AuthenticationError(f"ppk_required, but {reason} (RFC 8784)", check="ppk")


def _ppk_id_octets(text: str) -> bytes:
    return Identity.parse(text).data


def initiator_auth(
    sa: TaskContext, build: Callable[[], list[Payload]]
) -> tuple[list[Payload], bytes | None]:
    """Our AUTH payloads (``build()``: the signed octets and, for EAP without an MSK, the
    AUTH key come from the SA's current SK_pi) and the PPK they used: with a PPK, AUTH
    built with SK_pi folded with the PPK, PPK_IDENTITY and (unless required) NO_PPK_AUTH
    built with the original keys (sec. 3; with EAP in the message that carries AUTH)."""
    config = sa.config
    if not sa.peer.use_ppk or config.ppk_id is None:
        _required(sa, "the responder did not send USE_PPK" if config.ppk_id else "no ppk_id")
        return build(), None
    ppk_id = _ppk_id_octets(config.ppk_id)
    ppk = config.ppks.get(ppk_id)
    if ppk is None:
        _required(sa, f"no PPK (secrets ppk-...) has the id {config.ppk_id!r}")
        return build(), None
    original = sa.keymat.keys
    sa.keymat.apply_ppk(ppk)
    try:
        payloads = build()
    finally:
        # The responder may not have the PPK: the keys change only once it says so.
        sa.keymat.keys = original
    payloads.append(
        NotifyPayload(notify_type=NotifyType.PPK_IDENTITY, data=bytes([PPK_ID_FIXED]) + ppk_id)
    )
    if not config.ppk_required:
        (plain,) = [p for p in build() if isinstance(p, AuthPayload)]
        payloads.append(NotifyPayload(notify_type=NotifyType.NO_PPK_AUTH, data=bytes(plain.data)))
    return payloads, ppk


def initiator_confirm(sa: TaskContext, ppk: bytes | None, payloads: list[Payload]) -> None:
    """The IKE_AUTH response: an (empty) PPK_IDENTITY says the responder used our PPK."""
    if ppk is not None and find_notify(payloads, NotifyType.PPK_IDENTITY) is not None:
        sa.keymat.apply_ppk(ppk)
        sa.peer.ppk_id = sa.config.ppk_id or ""
        return
    _required(sa, "the responder did not use the PPK (no PPK_IDENTITY in its IKE_AUTH response)")


def responder_payloads(sa: TaskContext, payloads: list[Payload]) -> list[Payload]:
    """The request as its AUTH is to be checked: with the initiator's PPK applied to our
    keys when we hold it, else with NO_PPK_AUTH's data standing in for the AUTH payload."""
    config = sa.config
    if not sa.peer.use_ppk:
        _required(sa, "the initiator did not send USE_PPK")
        return payloads
    notify = find_notify(payloads, NotifyType.PPK_IDENTITY)
    data = bytes(notify.data) if notify is not None else b""
    if len(data) < 2 or data[0] != PPK_ID_FIXED:
        _required(sa, "the initiator sent no PPK_IDENTITY we understand (PPK_ID_FIXED)")
        return payloads
    ppk_id = data[1:]
    if config.ppk_id is not None:
        pattern = Identity.parse(config.ppk_id)
        if not pattern.is_any and not pattern.matches(Identity(pattern.id_type, ppk_id)):
            raise AuthenticationError(
                f"the initiator's PPK_ID {ppk_id.decode(errors='replace')!r} does not "
                f"match ppk_id = {config.ppk_id} (RFC 8784)",
                check="ppk",
            )
    ppk = config.ppks.get(ppk_id)
    if ppk is not None:
        sa.keymat.apply_ppk(ppk)
        sa.peer.ppk_id = ppk_id.decode(errors="replace")
        return payloads
    _required(sa, f"no PPK has the initiator's PPK_ID {ppk_id.decode(errors='replace')!r}")
    no_ppk = find_notify(payloads, NotifyType.NO_PPK_AUTH)
    if no_ppk is None:
        return payloads  # its AUTH used the PPK: it fails, as it must
    return [
        AuthPayload(method=p.method, data=bytes(no_ppk.data)) if isinstance(p, AuthPayload) else p
        for p in payloads
    ]


def responder_notifies(sa: TaskContext) -> list[NotifyPayload]:
    """An empty PPK_IDENTITY in our IKE_AUTH response when the PPK is in the keys."""
    return [NotifyPayload(notify_type=NotifyType.PPK_IDENTITY)] if sa.peer.ppk_id else []
