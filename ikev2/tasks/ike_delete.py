"""INFORMATIONAL Delete (RFC 7296 sec. 1.4.1, 3.11), both directions, for the IKE SA and
Child SAs, including the simultaneous cases: a Delete for a Child SA we are deleting
ourselves is answered without it (sec. 1.4.1), a Delete crossing our rekey of the same
Child SA wins (the rekey's result is then deleted as well, ``child_rekey``).
"""

from __future__ import annotations

import logging
from functools import partial

from ikev2.child import ChildSa
from ikev2.enums import ExchangeType, NotifyType, ProtocolId
from ikev2.errors import ProtocolError
from ikev2.events import AuthenticationFailed
from ikev2.payloads import DeletePayload, NotifyPayload
from ikev2.states import ChildState, IkeState
from ikev2.tasks import Payload, Request, Responder, Task, TaskContext, find_all, notify_name
from ikev2.tasks.ike_redirect import process_informational_redirect

log = logging.getLogger("ikev2.tasks.ike_delete")


class IkeDeleteTask(Task):
    exchange = ExchangeType.INFORMATIONAL
    name = "INFORMATIONAL(Delete IKE)"

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def build(self, sa: TaskContext, now: float) -> list[Payload] | None:
        if not sa.alive:
            return None
        if sa.state is not IkeState.DELETING:
            sa.to("delete_start")
        return [DeletePayload(protocol=ProtocolId.IKE, spis=[])]

    def process(self, sa: TaskContext, payloads: list[Payload], now: float) -> bool:
        sa.destroy(now, self.reason)
        return False

    def abort(self, sa: TaskContext, reason: str, now: float) -> None:
        # Sec. 1.4.1: without an answer the SA is gone anyway.
        sa.destroy(now, self.reason)


class ChildDeleteTask(Task):
    exchange = ExchangeType.INFORMATIONAL
    name = "INFORMATIONAL(Delete Child)"

    def __init__(self, child: ChildSa, reason: str = "deleted locally") -> None:
        self.child = child
        self.reason = reason

    def build(self, sa: TaskContext, now: float) -> list[Payload] | None:
        child = self.child
        if not child.alive or child.child_sa_id not in sa.children:
            return None
        if child.state is not ChildState.DELETING:
            child.to("delete_start")
        return [DeletePayload(protocol=child.protocol, spis=[child.spi_in.to_bytes(4, "big")])]

    def process(self, sa: TaskContext, payloads: list[Payload], now: float) -> bool:
        sa.child_gone(self.child, self.reason)
        return False

    def abort(self, sa: TaskContext, reason: str, now: float) -> None:
        sa.child_gone(self.child, self.reason)


class _DeleteSpisTask(Task):
    """Delete SAs the peer installed but we refused (e.g. a responder that did not narrow
    as sec. 2.9 requires): we never installed them, so no event."""

    exchange = ExchangeType.INFORMATIONAL
    name = "INFORMATIONAL(Delete refused Child)"

    def __init__(self, spis: list[bytes]) -> None:
        self.spis = spis

    def build(self, sa: TaskContext, now: float) -> list[Payload]:
        return [DeletePayload(protocol=ProtocolId.ESP, spis=list(self.spis))]

    def process(self, sa: TaskContext, payloads: list[Payload], now: float) -> bool:
        return False


def delete_spis_task(spis: list[bytes]) -> Task:
    return _DeleteSpisTask(spis)


class InformationalResponder(Responder):
    """INFORMATIONAL requests: Delete payloads, error notifies, empty liveness checks."""

    def respond(self, sa: TaskContext, request: Request) -> list[Payload]:
        return respond_informational(sa, request.payloads, request.now)


def respond_informational(sa: TaskContext, payloads: list[Payload], now: float) -> list[Payload]:
    deletes = find_all(payloads, DeletePayload)
    for notify in find_all(payloads, NotifyPayload):
        if notify.is_error:
            log.warning("%s: peer reports %s", sa.describe(), notify_name(int(notify.notify_type)))
        if notify.notify_type == NotifyType.REDIRECT:  # RFC 5685 sec. 5
            process_informational_redirect(sa, notify)
        if notify.notify_type == NotifyType.AUTHENTICATION_FAILED:
            # The initiator could not verify our AUTH (sec. 2.21.2): the SA is dead.
            reason = "peer could not verify our AUTH (AUTHENTICATION_FAILED after IKE_AUTH)"
            sa.emit(
                AuthenticationFailed(sa.ike_sa_id, sa.name, "peer-rejected", reason, sa.remote_addr)
            )
            sa.after_response(
                partial(sa.destroy, reason=reason, notify=NotifyType.AUTHENTICATION_FAILED)
            )
            return []
    if any(int(d.protocol) == ProtocolId.IKE for d in deletes):
        reason = "deleted by peer"
        if sa.state is IkeState.REKEYED:
            reason = "rekeyed"
        sa.after_response(lambda when: sa.destroy(when, reason))
        return []
    response_spis: dict[int, list[bytes]] = {}
    for delete in deletes:
        protocol = int(delete.protocol)
        if protocol not in (ProtocolId.ESP, ProtocolId.AH):
            raise ProtocolError(
                f"Delete payload for protocol {protocol}", NotifyType.INVALID_SYNTAX
            )
        for raw_spi in delete.spis:
            if len(raw_spi) != 4:
                raise ProtocolError("Child SA Delete with an SPI that is not 4 octets")
            spi = int.from_bytes(raw_spi, "big")
            child = sa.find_child_by_spi(spi, outbound=True, protocol=ProtocolId(protocol))
            if child is None:
                continue  # sec. 3.11: unknown SPIs are ignored
            if child.state is not ChildState.DELETING:
                # Simultaneous deletes (sec. 1.4.1): a Child SA we are deleting ourselves
                # is not listed in our answer; our own request completes the job.
                response_spis.setdefault(protocol, []).append(child.spi_in.to_bytes(4, "big"))
            sa.after_response(partial(_child_gone, sa, child, "deleted by peer"))
    return [
        DeletePayload(protocol=ProtocolId(protocol), spis=spis)
        for protocol, spis in response_spis.items()
    ]


def _child_gone(sa: TaskContext, child: ChildSa, reason: str, now: float) -> None:
    sa.child_gone(child, reason)
