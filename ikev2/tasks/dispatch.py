"""Responder-side routing of a decrypted request to the exchange handlers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ikev2.enums import ExchangeType, NotifyType, ProtocolId
from ikev2.errors import ProtocolError
from ikev2.payloads import SaPayload
from ikev2.states import IkeState
from ikev2.tasks import find, find_notify

if TYPE_CHECKING:
    from ikev2.sa import IkeSa


def respond(sa: IkeSa, exchange: int, payloads: list[Any], now: float) -> list[Any]:
    """The response payloads for one request. Raises ProtocolError (notify None: drop)."""
    if exchange == ExchangeType.IKE_AUTH:
        from ikev2.tasks.ike_auth import respond_ike_auth

        try:
            return respond_ike_auth(sa, payloads, now)
        except ProtocolError as error:
            notify = error.notify
            if notify is not None and not sa.established:
                # Sec. 2.21.2: a refused IKE_AUTH leaves no IKE SA behind.
                reason = f"IKE_AUTH refused: {error.reason}"
                sa.after_response(lambda when: sa.fail(when, reason, notify))
            raise
    if exchange == ExchangeType.IKE_INTERMEDIATE:
        from ikev2.tasks.ike_init import respond_intermediate

        return respond_intermediate(sa, payloads, now)
    if exchange == ExchangeType.IKE_SA_INIT:
        raise ProtocolError("IKE_SA_INIT request on an existing IKE SA", None)
    # CREATE_CHILD_SA and INFORMATIONAL are only valid once IKE_AUTH has completed
    # (libreswan CVE-2019-12312, strongSwan CVE-2014-2338): before that, drop them.
    if sa.state not in (
        IkeState.ESTABLISHED,
        IkeState.REKEYING,
        IkeState.REKEYED,
        IkeState.DELETING,
    ):
        raise ProtocolError(f"{ExchangeType(exchange).name} before the IKE SA is established", None)
    if exchange == ExchangeType.INFORMATIONAL:
        from ikev2.tasks.ike_delete import respond_informational

        return respond_informational(sa, payloads, now)
    if exchange == ExchangeType.CREATE_CHILD_SA:
        return _respond_create_child_sa(sa, payloads, now)
    if exchange == ExchangeType.IKE_FOLLOWUP_KE:
        from ikev2.tasks.followup_ke import respond_followup_ke

        return respond_followup_ke(sa, payloads, now)
    raise ProtocolError(f"exchange type {exchange} not supported", None)


def _respond_create_child_sa(sa: IkeSa, payloads: list[Any], now: float) -> list[Any]:
    sa_payload = find(payloads, SaPayload)
    if sa_payload is None or not sa_payload.proposals:
        raise ProtocolError("CREATE_CHILD_SA without an SA payload")
    protocols = {int(p.protocol) for p in sa_payload.proposals}
    if protocols == {ProtocolId.IKE}:
        from ikev2.tasks.ike_rekey import respond_ike_rekey

        return respond_ike_rekey(sa, payloads, now)
    if sa.state is not IkeState.ESTABLISHED and sa.state is not IkeState.REKEYING:
        # Sec. 2.25: the IKE SA is going away; the peer should retry on the new one.
        raise ProtocolError("IKE SA is being rekeyed or deleted", NotifyType.TEMPORARY_FAILURE)
    rekey = find_notify(payloads, NotifyType.REKEY_SA)
    if rekey is not None:
        from ikev2.tasks.child_rekey import respond_child_rekey

        return respond_child_rekey(sa, payloads, rekey, now)
    from ikev2.tasks.child_create import respond_create_child

    return respond_create_child(sa, payloads, now)
