"""One module per exchange concern, in the shape of strongSwan's task split.

An initiator-side :class:`Task` builds one request and processes its response; the
matching responder code is a plain function ``respond_*(sa, payloads, now)`` returning the
response payloads. Both raise :class:`ikev2.errors.ProtocolError` for anything the peer
got wrong; the IKE SA (``ikev2.sa``) turns that into the notify RFC 7296 prescribes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ikev2.crypto.keyexchange import KeyExchange, new_key_exchange
from ikev2.enums import ExchangeType, NotifyType, PayloadType, is_error_notify
from ikev2.errors import ProtocolError
from ikev2.payloads import NoncePayload, NotifyPayload

if TYPE_CHECKING:
    from ikev2.sa import IkeSa

Payload = Any  # one of the dataclasses of ikev2.payloads


class Task(ABC):
    """One request/response exchange we initiate (window size 1: one at a time)."""

    exchange: ExchangeType = ExchangeType.INFORMATIONAL
    name: str = "task"
    #: Retransmissions before giving up; None: the connection's ``retransmit_tries``, and
    #: running out of them means the peer is unreachable (a task with its own, smaller
    #: limit expects no answer to matter).
    retransmit_tries: int | None = None

    @abstractmethod
    def build(self, sa: IkeSa, now: float) -> list[Payload]:
        """The request's payloads (inside SK for everything but IKE_SA_INIT)."""

    @abstractmethod
    def process(self, sa: IkeSa, payloads: list[Payload], now: float) -> bool:
        """Handle the response. Return True to send this same task again with the same
        Message ID (IKE_SA_INIT after COOKIE / INVALID_KE_PAYLOAD), False when done."""

    def abort(self, sa: IkeSa, reason: str, now: float) -> None:  # noqa: B027 - optional hook
        """The exchange will never complete (retransmissions exhausted, SA deleted)."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"


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


def new_ke(sa: IkeSa, method: int) -> KeyExchange:
    """A key exchange for any exchange of ``sa``; its private values come from the injected
    rng, if any (tests, ``explain --seed``). An unsupported method is INVALID_KE_PAYLOAD."""
    try:
        return new_key_exchange(method, rng=sa.ctx.key_exchange_rng)
    except ValueError as error:
        raise ProtocolError(str(error), NotifyType.INVALID_KE_PAYLOAD) from None
