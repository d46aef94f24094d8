"""Responder-side routing of a decrypted request: one table, ``{exchange type: (responder,
allowed IKE SA states)}`` (aioquic's handler table), instead of a chain of ifs.

A request in a state its exchange is not allowed in is refused before any handler runs:
CREATE_CHILD_SA, INFORMATIONAL and IKE_FOLLOWUP_KE only once IKE_AUTH has completed
(libreswan CVE-2019-12312, strongSwan CVE-2014-2338; dropped), IKE_AUTH and
IKE_INTERMEDIATE only while the SA is being set up (INVALID_SYNTAX), IKE_SA_INIT never on
an existing SA (dropped; the dispatcher creates a new SA for it).
"""

from __future__ import annotations

from dataclasses import dataclass

from ikev2.enums import ExchangeType, NotifyType, ProtocolId
from ikev2.errors import ProtocolError
from ikev2.payloads import SaPayload
from ikev2.states import IkeState
from ikev2.tasks import Payload, Request, Responder, TaskContext, find, find_notify
from ikev2.tasks.child_create import ChildCreateResponder
from ikev2.tasks.child_rekey import ChildRekeyResponder
from ikev2.tasks.ike_auth import IkeAuthResponder
from ikev2.tasks.ike_delete import InformationalResponder
from ikev2.tasks.ike_intermediate import IkeIntermediateResponder
from ikev2.tasks.ike_rekey import IkeRekeyResponder

SETUP = frozenset({IkeState.INIT_DONE, IkeState.INTERMEDIATE})
ESTABLISHED = frozenset(
    {IkeState.ESTABLISHED, IkeState.REKEYING, IkeState.REKEYED, IkeState.DELETING}
)


class CreateChildSaResponder(Responder):
    """CREATE_CHILD_SA: an IKE SA rekey (IKE proposal), a Child SA rekey (REKEY_SA notify)
    or a new Child SA (sec. 1.3)."""

    def __init__(self) -> None:
        self.ike_rekey = IkeRekeyResponder()
        self.child_rekey = ChildRekeyResponder()
        self.child_create = ChildCreateResponder()

    def respond(self, sa: TaskContext, request: Request) -> list[Payload]:
        payloads = request.payloads
        sa_payload = find(payloads, SaPayload)
        if sa_payload is None or not sa_payload.proposals:
            raise ProtocolError("CREATE_CHILD_SA without an SA payload")
        protocols = {int(p.protocol) for p in sa_payload.proposals}
        if protocols == {ProtocolId.IKE}:
            return self.ike_rekey.respond(sa, request)
        if sa.state is not IkeState.ESTABLISHED and sa.state is not IkeState.REKEYING:
            # Sec. 2.25: the IKE SA is going away; the peer should retry on the new one.
            raise ProtocolError("IKE SA is being rekeyed or deleted", NotifyType.TEMPORARY_FAILURE)
        if find_notify(payloads, NotifyType.REKEY_SA) is not None:
            return self.child_rekey.respond(sa, request)
        return self.child_create.respond(sa, request)


@dataclass(frozen=True)
class Route:
    """How one exchange type is answered: by which responder, in which IKE SA states, and
    with which notify otherwise."""

    responder: Responder | None  # None: never on an existing IKE SA
    states: frozenset[IkeState]
    #: The notify for a request in another state (None: drop it silently).
    refusal: NotifyType | None = None


class FollowupKeRoute(Responder):
    """IKE_FOLLOWUP_KE goes to the IKE SA's own :class:`FollowupKeResponder` (it keeps the
    links of that SA; created on first use, most IKE SAs never need one)."""

    def respond(self, sa: TaskContext, request: Request) -> list[Payload]:
        return sa.followup_responder().respond(sa, request)


#: The routing table. The responders here keep no state of their own (state spanning
#: requests lives in the IKE SA's FollowupKeResponder or in our tasks), so one table
#: serves every IKE SA.
ROUTES: dict[ExchangeType, Route] = {
    ExchangeType.IKE_SA_INIT: Route(None, frozenset()),
    ExchangeType.IKE_INTERMEDIATE: Route(
        IkeIntermediateResponder(), SETUP, NotifyType.INVALID_SYNTAX
    ),
    ExchangeType.IKE_AUTH: Route(IkeAuthResponder(), SETUP, NotifyType.INVALID_SYNTAX),
    ExchangeType.CREATE_CHILD_SA: Route(CreateChildSaResponder(), ESTABLISHED),
    ExchangeType.INFORMATIONAL: Route(InformationalResponder(), ESTABLISHED),
    ExchangeType.IKE_FOLLOWUP_KE: Route(FollowupKeRoute(), ESTABLISHED),
}


def respond(sa: TaskContext, request: Request) -> list[Payload]:
    """The response payloads for one request. Raises ProtocolError (notify None: drop)."""
    try:
        exchange = ExchangeType(request.exchange)
    except ValueError:
        exchange = None
    route = ROUTES.get(exchange) if exchange is not None else None
    if exchange is None or route is None:
        raise ProtocolError(f"exchange type {int(request.exchange)} not supported", None)
    name = exchange.name
    responder = route.responder
    if responder is None:
        raise ProtocolError(f"{name} request on an existing IKE SA", None)
    try:
        if sa.state not in route.states:
            raise ProtocolError(f"{name} in state {sa.state.value}", route.refusal)
        return responder.respond(sa, request)
    except ProtocolError as error:
        responder.refused(sa, error)
        raise
