"""RFC 9370 sec. 2.2.4: additional key exchanges for CREATE_CHILD_SA (new Child SA, Child
SA rekey, IKE SA rekey) in IKE_FOLLOWUP_KE exchanges.

The CREATE_CHILD_SA response carries ADDITIONAL_KEY_EXCHANGE with opaque "link" data;
the initiator then runs one IKE_FOLLOWUP_KE exchange per negotiated ADDKE transform (in
transform type order), each request carrying the link it was given and its KE payload,
each response the responder's KE and, except for the last, the next link. Keys are
derived only after the last one, from all secrets in order (sec. 2.2.4:
``g^ir (new) | SK(1) | ... | SK(n) | Ni | Nr``). A link the responder does not know gets
STATE_NOT_FOUND.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ikev2.crypto.keyexchange import KeyExchange
from ikev2.enums import ExchangeType, NotifyType
from ikev2.errors import ProtocolError
from ikev2.keymat import ADDKE_TYPES, additional_methods
from ikev2.payloads import KePayload, NotifyPayload
from ikev2.tasks import (
    Payload,
    Request,
    Responder,
    Task,
    TaskContext,
    find,
    find_notify,
    first_error,
    new_ke,
    notify_name,
)
from ikev2.tasks.context import Finish

__all__ = ["ADDKE_TYPES", "FollowupKeResponder", "FollowupKeTask", "additional_methods"]

FOLLOWUP_TIMEOUT = 60.0  # a responder forgets half-done additional key exchanges after this

Fail = Callable[[str, float], None]


@dataclass
class PendingFollowup:
    methods: list[int]
    finish: Finish
    deadline: float
    secrets: list[bytes] = field(default_factory=list)


class FollowupKeResponder(Responder):
    """Responder: the Child/IKE SAs waiting for their additional key exchanges, by the
    opaque link we handed out in ADDITIONAL_KEY_EXCHANGE (one instance per IKE SA)."""

    def __init__(self) -> None:
        self.pending: dict[bytes, PendingFollowup] = {}

    def register(
        self, sa: TaskContext, methods: list[int], finish: Finish, now: float
    ) -> NotifyPayload:
        """Remember a CREATE_CHILD_SA waiting for its IKE_FOLLOWUP_KE exchanges; returns
        the ADDITIONAL_KEY_EXCHANGE notify for the CREATE_CHILD_SA response."""
        link = sa.ctx.rng(16)
        self.pending[link] = PendingFollowup(methods, finish, now + FOLLOWUP_TIMEOUT)
        return NotifyPayload(notify_type=NotifyType.ADDITIONAL_KEY_EXCHANGE, data=link)

    def _expire(self, now: float) -> None:
        for link, pending in list(self.pending.items()):
            if pending.deadline < now:
                del self.pending[link]

    def respond(self, sa: TaskContext, request: Request) -> list[Payload]:
        payloads, now = request.payloads, request.now
        self._expire(now)
        notify = find_notify(payloads, NotifyType.ADDITIONAL_KEY_EXCHANGE)
        pending = self.pending.pop(bytes(notify.data), None) if notify is not None else None
        if pending is None:
            raise ProtocolError(
                "IKE_FOLLOWUP_KE for an exchange we do not know", NotifyType.STATE_NOT_FOUND
            )
        method = pending.methods[len(pending.secrets)]
        ke_payload = find(payloads, KePayload)
        if ke_payload is None or int(ke_payload.group) != method:
            raise ProtocolError(
                f"IKE_FOLLOWUP_KE without a KE payload for method {method}",
                NotifyType.INVALID_SYNTAX,
            )
        ke = new_ke(sa, method)
        pending.secrets.append(ke.compute(bytes(ke_payload.data)))
        response: list[Payload] = [KePayload(group=ke_payload.group, data=ke.our_payload())]
        if len(pending.secrets) < len(pending.methods):
            link = sa.ctx.rng(16)
            self.pending[link] = pending
            response.append(
                NotifyPayload(notify_type=NotifyType.ADDITIONAL_KEY_EXCHANGE, data=link)
            )
        else:
            secrets = list(pending.secrets)
            sa.after_response(lambda when: pending.finish(secrets, when))
        return response


class FollowupKeTask(Task):
    """Initiator: one IKE_FOLLOWUP_KE exchange; the last one calls ``finish``."""

    exchange = ExchangeType.IKE_FOLLOWUP_KE
    name = "IKE_FOLLOWUP_KE"

    def __init__(
        self,
        methods: list[int],
        link: bytes,
        finish: Finish,
        fail: Fail,
        secrets: list[bytes] | None = None,
        owner: Task | None = None,
    ) -> None:
        self.methods = methods
        self.link = link
        self.finish = finish
        self.fail = fail
        self.secrets = list(secrets or [])
        self.ke: KeyExchange | None = None
        #: The CREATE_CHILD_SA task whose additional key exchanges these are.
        self.owner = owner

    def build(self, sa: TaskContext, now: float) -> list[Payload] | None:

        if not sa.established:
            return None
        method = self.methods[len(self.secrets)]
        self.ke = new_ke(sa, method)
        return [
            NotifyPayload(notify_type=NotifyType.ADDITIONAL_KEY_EXCHANGE, data=self.link),
            KePayload(group=method, data=self.ke.our_payload()),
        ]

    def process(self, sa: TaskContext, payloads: list[Payload], now: float) -> bool:
        assert self.ke is not None
        error = first_error(payloads)
        if error is not None:
            self.fail(
                f"peer answered IKE_FOLLOWUP_KE with {notify_name(int(error.notify_type))}", now
            )
            return False
        method = self.methods[len(self.secrets)]
        ke_payload = find(payloads, KePayload)
        if ke_payload is None or int(ke_payload.group) != method:
            self.fail("IKE_FOLLOWUP_KE response without the expected KE payload", now)
            return False
        self.secrets.append(self.ke.compute(bytes(ke_payload.data)))
        if len(self.secrets) < len(self.methods):
            notify = find_notify(payloads, NotifyType.ADDITIONAL_KEY_EXCHANGE)
            if notify is None:
                self.fail("IKE_FOLLOWUP_KE response without the next link", now)
                return False
            sa.queue_task(
                FollowupKeTask(
                    self.methods,
                    bytes(notify.data),
                    self.finish,
                    self.fail,
                    self.secrets,
                    owner=self.owner,
                ),
                now,
                start=False,
                first=True,
            )
            return False
        self.finish(self.secrets, now)
        return False

    def abort(self, sa: TaskContext, reason: str, now: float) -> None:
        self.fail(reason, now)


def start_followups(
    sa: TaskContext,
    methods: list[int],
    payloads: list[Payload],
    finish: Finish,
    fail: Fail,
    now: float,
    owner: Task | None = None,
) -> None:
    """Initiator, after the CREATE_CHILD_SA response: run the IKE_FOLLOWUP_KE chain."""
    notify = find_notify(payloads, NotifyType.ADDITIONAL_KEY_EXCHANGE)
    if notify is None:
        fail("responder chose additional key exchanges but sent no ADDITIONAL_KEY_EXCHANGE", now)
        return
    sa.queue_task(
        FollowupKeTask(methods, bytes(notify.data), finish, fail, owner=owner),
        now,
        start=False,
        first=True,
    )
