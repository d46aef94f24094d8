"""EAP relayed to an external authenticator inside IKE_AUTH (``remote auth = eap-radius``).

The gateway's EAP rounds (RFC 7296 sec. 2.16) as in ``ike_eap``, except that after the
EAP-Identity each Response of the peer goes to a backend (RADIUS, RFC 3579) and the
IKE_AUTH response waits for the backend's answer::

    peer  --IKE_AUTH {EAP Response}-->  engine --EapRelay event--> daemon --Access-Request-->
    peer  <--IKE_AUTH {EAP Request}---  engine <--external_eap_answer-- daemon <--Challenge--

The engine stays sans-I/O: :func:`relay_response` emits ``EapRelay`` and defers the
response (``TaskContext.defer_response``; a retransmitted request is dropped meanwhile, so
no second round trip starts); :func:`answer_relayed` builds the response from the answer.
After EAP-Success the last round (the MSK-keyed AUTH payloads) is ``ike_auth``'s as for a
local method.

Groups (``remote.groups``, strongSwan's eap-radius ``class_group``): the server names the
peer's groups (RADIUS Class). A connection with ``groups`` admits a peer in one of them;
another connection with the same identities whose groups match is taken instead (strongSwan
moves on to the next candidate configuration the same way); none: EAP-Failure, and the log
says which groups the peer has and which were wanted.
"""

from __future__ import annotations

from ikev2.config import IkeConfig
from ikev2.eap.external import ExternalEapAnswer, ExternalEapAuthenticator
from ikev2.enums import NotifyType
from ikev2.events import AuthenticationFailed, EapRelay
from ikev2.identity import Identity
from ikev2.payloads import EapPayload
from ikev2.tasks.context import Payload, TaskContext
from ikev2.tasks.ike_eap import GatewayEap, eap_payload


def relay_response(sa: TaskContext, state: GatewayEap, payloads: list[Payload]) -> None:
    """The peer's EAP Response goes to the backend; our IKE_AUTH response waits for it
    (EapError for a packet out of order: the caller fails the IKE SA)."""
    authenticator = state.authenticator
    assert isinstance(authenticator, ExternalEapAuthenticator)
    first = authenticator.eap_identity is None
    message = authenticator.relay(eap_payload(payloads))
    sa.emit(
        EapRelay(
            sa.ike_sa_id, sa.name,
            identity=authenticator.eap_identity or "",
            peer_id=str(state.peer),
            message=message,
            first=first,
            local_addr=sa.local_addr,
            remote_addr=sa.remote_addr,
        )
    )  # fmt: skip
    sa.defer_response()


def answer_relayed(sa: TaskContext, answer: ExternalEapAnswer) -> list[Payload] | None:
    """The backend's answer: the EAP payload for the peer (None: nothing waits for it, the
    conversation ended or the IKE SA went on without it)."""
    state = sa.eap_state
    if not isinstance(state, GatewayEap):
        return None
    authenticator = state.authenticator
    if not isinstance(authenticator, ExternalEapAuthenticator) or not authenticator.waiting:
        return None
    packet = authenticator.answer(answer)
    if authenticator.succeeded:
        config, refusal = _config_for_groups(sa, state, authenticator.groups)
        if config is None:
            packet = authenticator.refuse(refusal)
        elif config is not state.config:
            state.config = config
            sa.config = config
    if authenticator.finished:
        state.done = True
        if not authenticator.succeeded:
            reason = (
                f"EAP (relayed to the EAP server) for {state.identity!r} failed: "
                f"{authenticator.failure_reason}"
            )
            state.reported = True
            sa.emit(AuthenticationFailed(sa.ike_sa_id, sa.name, "eap", reason, sa.remote_addr))
            sa.after_response(lambda when: sa.fail(when, reason, NotifyType.AUTHENTICATION_FAILED))
    return [EapPayload(packet.serialize())]


def _config_for_groups(
    sa: TaskContext, state: GatewayEap, groups: tuple[str, ...]
) -> tuple[IkeConfig | None, str]:
    """The connection that admits a peer in ``groups``: the chosen one, else another
    relayed-EAP connection with the same local round and a remote id matching the peer."""
    current = state.config
    if _admits(current, groups):
        return current, ""
    for config in sa.candidate_configs:
        if (
            config is not current
            and config.remote.auth == current.remote.auth
            and config.local.id == current.local.id
            and config.local.auth == current.local.auth
            and Identity.parse(config.remote.id).matches(state.peer)
            and config.remote.groups
            and _admits(config, groups)
        ):
            return config, ""
    have = ", ".join(groups) if groups else "none (the server sent no Class attribute)"
    return None, (
        f"the peer is in groups [{have}], connection {current.name!r} admits only "
        f"[{', '.join(current.remote.groups)}]"
    )


def _admits(config: IkeConfig, groups: tuple[str, ...]) -> bool:
    wanted = config.remote.groups
    return not wanted or any(group in wanted for group in groups)
