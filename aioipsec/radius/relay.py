"""The daemon's side of ``remote auth = eap-radius``: the engine's relayed EAP to RADIUS.

The engine emits ``EapRelay`` for each EAP Response of a road warrior and waits; this
module sends it in an Access-Request, and hands the answer back with
``Dispatcher.external_eap_answer`` (through ``answer``, which the daemon binds to its
engine driver):

* Access-Challenge: its EAP-Message (a Request) goes to the peer; its State is sent back
  with the next Access-Request of that conversation (RFC 2865 sec. 5.24);
* Access-Accept: EAP-Success, the MSK (MS-MPPE-Recv-Key | MS-MPPE-Send-Key, RFC 2548) and,
  with ``class_group``, the Class attributes as the peer's groups; its Framed-IP-Address /
  Framed-IPv6-Address and DNS servers go to ``on_accept`` (the pools, for ``pools =
  radius``) before the answer re-enters the engine, which asks the pools later in the
  same IKE_AUTH;
* Access-Reject, or no valid answer from any server: EAP-Failure, the reason logged.

One conversation per IKE SA; it is forgotten when the SA goes (``IkeSaDeleted``).
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from aioipsec.pools import ExternalLease
from aioipsec.radius.client import (
    ACCESS_ACCEPT,
    ACCESS_CHALLENGE,
    ACCESS_REJECT,
    AccessRequest,
    RadiusClient,
    RadiusReply,
    RadiusUnavailable,
)
from aioipsec.radius.settings import RadiusServer, RadiusSettings
from ikev2.eap.external import ExternalEapAnswer
from ikev2.events import EapRelay, Event, IkeSaDeleted

log = structlog.get_logger("aioipsec.radius")

AnswerFunction = Callable[[int, ExternalEapAnswer], None]
AcceptFunction = Callable[[str, ExternalLease], None]


@dataclass
class _Conversation:
    server: RadiusServer | None = None  # the one that answered: State is only valid there
    state: bytes | None = None
    task: asyncio.Task[None] | None = None


class EapRadiusRelay:
    def __init__(
        self,
        settings: RadiusSettings,
        answer: AnswerFunction,
        on_accept: AcceptFunction | None = None,
    ) -> None:
        self.settings = settings
        self.on_accept = on_accept
        self.client = RadiusClient(
            settings.parsed_servers(), settings.secret, settings.timeout, settings.tries
        )
        self._answer = answer
        self._conversations: dict[int, _Conversation] = {}

    def on_event(self, event: Event) -> None:
        if isinstance(event, EapRelay):
            if event.first:
                self._forget(event.ike_sa_id)
            conversation = self._conversations.setdefault(event.ike_sa_id, _Conversation())
            conversation.task = asyncio.get_running_loop().create_task(
                self._relay(event, conversation), name=f"radius-{event.ike_sa_id}"
            )
        elif isinstance(event, IkeSaDeleted):
            self._forget(event.ike_sa_id)

    def take_over(self, old: EapRadiusRelay) -> None:
        """Continue OLD's conversations (after a reload changed the settings)."""
        self._conversations.update(old._conversations)
        old._conversations.clear()

    def _forget(self, ike_sa_id: int) -> None:
        conversation = self._conversations.pop(ike_sa_id, None)
        if conversation is not None and conversation.task is not None:
            conversation.task.cancel()

    def close(self) -> None:
        for ike_sa_id in list(self._conversations):
            self._forget(ike_sa_id)

    @property
    def pending(self) -> int:
        return sum(1 for c in self._conversations.values() if c.task and not c.task.done())

    async def _relay(self, event: EapRelay, conversation: _Conversation) -> None:
        request = AccessRequest(
            user_name=event.identity,
            eap_message=event.message,
            state=conversation.state,
            nas_identifier=self.settings.nas_identifier,
            nas_port=event.ike_sa_id,
            local_addr=event.local_addr,
            remote_addr=event.remote_addr,
        )
        try:
            reply = await self.client.exchange(request, conversation.server)
        except RadiusUnavailable as error:
            log.warning("RADIUS unavailable", identity=event.identity, reason=str(error))
            answer = ExternalEapAnswer.failed(f"{error}; check [radius] servers and secret_file")
        except asyncio.CancelledError:
            raise
        except Exception as error:  # the IKE SA must get an answer
            log.exception("RADIUS exchange failed", identity=event.identity)
            answer = ExternalEapAnswer.failed(f"RADIUS exchange failed: {error!r}")
        else:
            answer = self._answer_for(event, conversation, reply)
        if answer.msk is not None or answer.reason is not None or not answer.message:
            self._conversations.pop(event.ike_sa_id, None)  # the conversation ended
        self._answer(event.ike_sa_id, answer)

    def _answer_for(
        self, event: EapRelay, conversation: _Conversation, reply: RadiusReply
    ) -> ExternalEapAnswer:
        conversation.server = reply.server
        if reply.code == ACCESS_CHALLENGE:
            conversation.state = reply.state
            if not reply.eap_message:
                return ExternalEapAnswer.failed(
                    f"RADIUS server {reply.server} sent an Access-Challenge without EAP-Message"
                )
            return ExternalEapAnswer(reply.eap_message)
        if reply.code == ACCESS_ACCEPT:
            groups: tuple[str, ...] = ()
            if self.settings.class_group:
                groups = tuple(c.decode("utf-8", "replace") for c in reply.classes)
            log.info(
                "RADIUS Access-Accept",
                identity=event.identity,
                server=str(reply.server),
                groups=list(groups),
                framed=reply.framed_addresses,
                dns=reply.dns_servers,
            )
            if self.on_accept is not None:
                self.on_accept(event.identity, _lease(reply))
            # No MS-MPPE keys (EAP-MD5): the AUTH payloads use SK_pi/SK_pr instead.
            return ExternalEapAnswer(reply.eap_message, msk=reply.msk, groups=groups)
        said = f" ({reply.reply_message})" if reply.reply_message else ""
        if reply.code == ACCESS_REJECT:
            reason = f"RADIUS server {reply.server} rejected {event.identity!r}{said}"
        else:
            reason = f"RADIUS server {reply.server} answered with code {reply.code}{said}"
        log.info("RADIUS Access-Reject", identity=event.identity, server=str(reply.server))
        return ExternalEapAnswer(reply.eap_message, reason=reason)


def _lease(reply: RadiusReply) -> ExternalLease:
    """The Access-Accept's addresses (pyrad decoded them: valid by construction)."""
    return ExternalLease(
        tuple(ipaddress.ip_address(a) for a in reply.framed_addresses),
        tuple(ipaddress.ip_address(a) for a in reply.dns_servers),
        f"the Access-Accept of RADIUS server {reply.server}",
    )


class RadiusService:
    """What the daemon holds: the relay for the current ``[radius]`` settings (made anew
    when a reload changes them), or an immediate failure when there are none."""

    def __init__(self, answer: AnswerFunction, on_accept: AcceptFunction | None = None) -> None:
        self._answer = answer
        self.on_accept = on_accept  # pools = radius (the daemon's PoolManager.offer_radius)
        self.relay: EapRadiusRelay | None = None

    def on_event(self, event: Event, settings: RadiusSettings | None) -> bool:
        """Handle ``event`` if it is ours; True for an ``EapRelay`` (nothing else to do)."""
        if not isinstance(event, EapRelay | IkeSaDeleted):
            return False
        if settings is None:
            if isinstance(event, EapRelay):
                self._refuse(event, "no RADIUS server is configured: add a [radius] table "
                             "(servers, secret_file) to the daemon configuration")  # fmt: skip
            return isinstance(event, EapRelay)
        if self.relay is None or self.relay.settings is not settings:
            old = self.relay
            try:
                self.relay = EapRadiusRelay(settings, self._answer, self.on_accept)
            except ImportError:
                if isinstance(event, EapRelay):
                    self._refuse(event, "the RADIUS library is missing: pip install "
                                 "'aioipsec[radius]' (pyrad)")  # fmt: skip
                return isinstance(event, EapRelay)
            if old is not None:
                # A reload: conversations under way go on (their State belongs to the
                # server that answered them); new ones use the new settings.
                self.relay.take_over(old)
        self.relay.on_event(event)
        return isinstance(event, EapRelay)

    def _refuse(self, event: EapRelay, reason: str) -> None:
        log.warning("eap-radius: cannot authenticate", identity=event.identity, reason=reason)
        # Not from inside the engine's event delivery: the answer re-enters the engine.
        asyncio.get_running_loop().call_soon(
            self._answer, event.ike_sa_id, ExternalEapAnswer.failed(reason)
        )

    def close(self) -> None:
        if self.relay is not None:
            self.relay.close()
