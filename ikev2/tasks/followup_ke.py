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
from typing import TYPE_CHECKING, Any

from ikev2.crypto.keyexchange import KeyExchange
from ikev2.enums import ExchangeType, NotifyType, TransformType
from ikev2.errors import ProtocolError
from ikev2.payloads import KePayload, NotifyPayload, Proposal
from ikev2.proposals import transforms_of
from ikev2.tasks import Task, find, find_notify, first_error, new_ke, notify_name

if TYPE_CHECKING:
    from ikev2.sa import IkeSa

ADDKE_TYPES = tuple(range(int(TransformType.ADDKE1), int(TransformType.ADDKE7) + 1))
FOLLOWUP_TIMEOUT = 60.0  # a responder forgets half-done additional key exchanges after this

Finish = Callable[[list[bytes], float], None]
Fail = Callable[[str, float], None]


def additional_methods(proposal: Proposal) -> list[int]:
    """The negotiated ADDKE methods of a selected proposal, in transform type order."""
    return [
        int(t.id) for ttype in ADDKE_TYPES for t in transforms_of(proposal, ttype) if int(t.id) != 0
    ]


@dataclass
class PendingFollowup:
    methods: list[int]
    finish: Finish
    deadline: float
    secrets: list[bytes] = field(default_factory=list)


def register(sa: IkeSa, methods: list[int], finish: Finish, now: float) -> NotifyPayload:
    """Responder: remember a Child/IKE SA waiting for its additional key exchanges."""
    link = sa.ctx.rng(16)
    sa.followups[link] = PendingFollowup(methods, finish, now + FOLLOWUP_TIMEOUT)
    return NotifyPayload(notify_type=NotifyType.ADDITIONAL_KEY_EXCHANGE, data=link)


def _expire(sa: IkeSa, now: float) -> None:
    for link, pending in list(sa.followups.items()):
        if pending.deadline < now:
            del sa.followups[link]


def respond_followup_ke(sa: IkeSa, payloads: list[Any], now: float) -> list[Any]:

    _expire(sa, now)
    notify = find_notify(payloads, NotifyType.ADDITIONAL_KEY_EXCHANGE)
    pending = sa.followups.pop(bytes(notify.data), None) if notify is not None else None
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
    response: list[Any] = [KePayload(group=ke_payload.group, data=ke.our_payload())]
    if len(pending.secrets) < len(pending.methods):
        link = sa.ctx.rng(16)
        sa.followups[link] = pending
        response.append(NotifyPayload(notify_type=NotifyType.ADDITIONAL_KEY_EXCHANGE, data=link))
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
    ) -> None:
        self.methods = methods
        self.link = link
        self.finish = finish
        self.fail = fail
        self.secrets = list(secrets or [])
        self.ke: KeyExchange | None = None

    def build(self, sa: IkeSa, now: float) -> list[Any] | None:

        if not sa.established:
            return None
        method = self.methods[len(self.secrets)]
        self.ke = new_ke(sa, method)
        return [
            NotifyPayload(notify_type=NotifyType.ADDITIONAL_KEY_EXCHANGE, data=self.link),
            KePayload(group=method, data=self.ke.our_payload()),
        ]

    def process(self, sa: IkeSa, payloads: list[Any], now: float) -> bool:
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
                    self.methods, bytes(notify.data), self.finish, self.fail, self.secrets
                ),
                now,
                start=False,
                first=True,
            )
            return False
        self.finish(self.secrets, now)
        return False

    def abort(self, sa: IkeSa, reason: str, now: float) -> None:
        self.fail(reason, now)


def start_followups(
    sa: IkeSa, methods: list[int], payloads: list[Any], finish: Finish, fail: Fail, now: float
) -> None:
    """Initiator, after the CREATE_CHILD_SA response: run the IKE_FOLLOWUP_KE chain."""
    notify = find_notify(payloads, NotifyType.ADDITIONAL_KEY_EXCHANGE)
    if notify is None:
        fail("responder chose additional key exchanges but sent no ADDITIONAL_KEY_EXCHANGE", now)
        return
    sa.queue_task(
        FollowupKeTask(methods, bytes(notify.data), finish, fail), now, start=False, first=True
    )
