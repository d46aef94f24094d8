"""IKE_INTERMEDIATE (RFC 9242) carrying the additional key exchanges of RFC 9370 between
IKE_SA_INIT and IKE_AUTH.

One exchange per negotiated ADDKE transform, in transform type order: the initiator sends
its KE payload, the responder answers with its own; both then fold the new secret into
all SK_* (RFC 9370 sec. 2.2.2, ``Keymat.update_after_intermediate``). The response is
still protected with the keys in force before it; the next message uses the new ones.
Every IKE_INTERMEDIATE message also enters the IntAuth chain that IKE_AUTH signs
(RFC 9242 sec. 3.3.2), which the IKE SA records on the wire side
(``Keymat.record_intermediate``).
"""

from __future__ import annotations

from ikev2.crypto.keyexchange import KeyExchange
from ikev2.enums import ExchangeType, KeId, NotifyType
from ikev2.errors import ProtocolError
from ikev2.events import NegotiationFailed
from ikev2.payloads import KePayload
from ikev2.states import IkeState
from ikev2.tasks import (
    Payload,
    Request,
    Responder,
    Task,
    TaskContext,
    find,
    first_error,
    new_ke,
    notify_name,
)


def _as_ke(method: int) -> KeId | int:
    try:
        return KeId(method)
    except ValueError:
        return method


class IkeIntermediateTask(Task):
    """One RFC 9370 additional key exchange in IKE_INTERMEDIATE (initiator side)."""

    exchange = ExchangeType.IKE_INTERMEDIATE
    name = "IKE_INTERMEDIATE"

    def __init__(self, index: int) -> None:
        self.index = index
        self.ke: KeyExchange | None = None

    def build(self, sa: TaskContext, now: float) -> list[Payload]:
        method = sa.keymat.additional_ke[self.index]
        self.ke = new_ke(sa, method)
        return [KePayload(group=_as_ke(method), data=self.ke.our_payload())]

    def process(self, sa: TaskContext, payloads: list[Payload], now: float) -> bool:
        assert self.ke is not None
        keymat = sa.keymat
        error = first_error(payloads)
        if error is not None:
            raise ProtocolError(
                f"responder answered IKE_INTERMEDIATE with {notify_name(int(error.notify_type))}",
                NotifyType(int(error.notify_type)),
            )
        ke_payload = find(payloads, KePayload)
        if ke_payload is None or int(ke_payload.group) != keymat.additional_ke[self.index]:
            raise ProtocolError("IKE_INTERMEDIATE response without the expected KE payload")
        shared = self.ke.compute(bytes(ke_payload.data))
        keymat.update_after_intermediate(shared, sa.spi_i, sa.spi_r)
        if self.index == len(keymat.additional_ke) - 1:
            sa.to("intermediate_done")
        return False

    def abort(self, sa: TaskContext, reason: str, now: float) -> None:
        sa.emit(
            NegotiationFailed(
                sa.ike_sa_id, sa.name, reason, None, received=True, exchange="IKE_INTERMEDIATE"
            )
        )
        sa.fail(now, reason)


class IkeIntermediateResponder(Responder):
    """Responder side: one additional key exchange per request (the router admits
    IKE_INTERMEDIATE only in INIT_DONE / INTERMEDIATE)."""

    def respond(self, sa: TaskContext, request: Request) -> list[Payload]:
        if sa.state is IkeState.INIT_DONE:
            sa.to("recv_intermediate")
        keymat = sa.keymat
        done = keymat.additional_ke_done
        if done >= len(keymat.additional_ke):
            raise ProtocolError("IKE_INTERMEDIATE without a pending key exchange")
        method = keymat.additional_ke[done]
        ke_payload = find(request.payloads, KePayload)
        if ke_payload is None or int(ke_payload.group) != method:
            raise ProtocolError(
                "IKE_INTERMEDIATE KE payload does not match the negotiated additional key exchange",
                NotifyType.INVALID_KE_PAYLOAD,
                notify_data=method.to_bytes(2, "big"),
            )
        ke = new_ke(sa, method)
        shared = ke.compute(bytes(ke_payload.data))
        keymat.additional_ke_done = done + 1
        # The response is still protected with the current keys; the next message uses the
        # updated ones (RFC 9370 sec. 2.2.2).
        sa.after_response(lambda _now: keymat.update_after_intermediate(shared, sa.spi_i, sa.spi_r))
        return [KePayload(group=ke_payload.group, data=ke.our_payload())]
