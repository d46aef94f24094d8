"""One module per exchange concern, in the shape of strongSwan's task split.

An initiator-side :class:`Task` builds one request and processes its response; the
matching responder is a :class:`Responder` object answering a :class:`Request` (the
routing table is ``ikev2.tasks.dispatch``). Both see their IKE SA only through
:class:`TaskContext` (``ikev2.tasks.context``) and raise
:class:`ikev2.errors.ProtocolError` for anything the peer got wrong; the IKE SA
(``ikev2.sa``) turns that into the notify RFC 7296 prescribes.

Modules: ``ike_init`` (IKE_SA_INIT), ``ike_intermediate`` (IKE_INTERMEDIATE, RFC 9242 /
9370), ``ike_auth`` and ``ike_certs`` (IKE_AUTH), ``ike_natd`` (NAT detection),
``child_create`` / ``child_rekey`` (CREATE_CHILD_SA for Child SAs), ``ike_rekey``
(CREATE_CHILD_SA for the IKE SA), ``followup_ke`` (IKE_FOLLOWUP_KE, RFC 9370),
``ike_delete`` (INFORMATIONAL), ``ike_dpd`` (liveness), ``lifetimes`` (timers),
``dispatch`` (the responder routing table).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from ikev2.crypto.keyexchange import KeyExchange, new_key_exchange
from ikev2.enums import NotifyType, PayloadType, is_error_notify
from ikev2.errors import ProtocolError
from ikev2.payloads import NoncePayload, NotifyPayload
from ikev2.tasks.context import Payload, Request, Responder, Task, TaskContext

__all__ = [
    "Payload",
    "Request",
    "Responder",
    "Task",
    "TaskContext",
    "check_nonce",
    "find",
    "find_all",
    "find_notify",
    "find_typed",
    "first_error",
    "new_ke",
    "notifies",
    "notify_name",
]


def find(payloads: Iterable[Payload], kind: type) -> Any:
    for payload in payloads:
        if isinstance(payload, kind):
            return payload
    return None


def find_all(payloads: Iterable[Payload], kind: type) -> list[Any]:
    return [payload for payload in payloads if isinstance(payload, kind)]


def find_typed(payloads: Iterable[Payload], payload_type: PayloadType) -> Any:
    """IdPayload / TsPayload carry their type in ``payload_type``."""
    for payload in payloads:
        if getattr(payload, "payload_type", None) == payload_type:
            return payload
    return None


def notifies(payloads: Iterable[Payload]) -> list[NotifyPayload]:
    return [p for p in payloads if isinstance(p, NotifyPayload)]


def find_notify(payloads: Iterable[Payload], notify_type: NotifyType) -> NotifyPayload | None:
    for payload in payloads:
        if isinstance(payload, NotifyPayload) and payload.notify_type == notify_type:
            return payload
    return None


def first_error(payloads: Sequence[Payload]) -> NotifyPayload | None:
    for payload in payloads:
        if isinstance(payload, NotifyPayload) and is_error_notify(int(payload.notify_type)):
            return payload
    return None


def notify_name(value: int) -> str:
    try:
        return NotifyType(value).name
    except ValueError:
        return f"notify {value}"


def check_nonce(nonce: NoncePayload | None) -> bytes:
    """The nonce data of a Nonce payload, which must be there (RFC 7296 sec. 2.10, 3.9)."""
    if nonce is None:
        raise ProtocolError("Nonce payload missing")
    if not 16 <= len(nonce.nonce) <= 256:
        raise ProtocolError(f"nonce of {len(nonce.nonce)} octets (sec. 3.9: 16..256)")
    return bytes(nonce.nonce)


def new_ke(sa: TaskContext, method: int) -> KeyExchange:
    """A key exchange for any exchange of ``sa``; its private values come from the injected
    rng, if any (tests, ``explain --seed``). An unsupported method is INVALID_KE_PAYLOAD."""
    try:
        return new_key_exchange(method, rng=sa.ctx.key_exchange_rng)
    except ValueError as error:
        raise ProtocolError(str(error), NotifyType.INVALID_KE_PAYLOAD) from None
