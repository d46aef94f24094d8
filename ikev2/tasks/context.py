"""The contract between an IKE SA and its tasks (strongSwan's ``task_t`` / ``ike_sa_t``
split): what a task may read and do, and the two shapes of task.

* :class:`TaskContext` is everything an exchange handler may use of its IKE SA: read the
  SA's identity and configuration, the negotiated state, the key material
  (:class:`ikev2.keymat.Keymat`), send (by returning payloads), emit events, queue tasks,
  look up and install Child SAs, end the SA. ``ikev2.sa.IkeSa`` implements it; tasks never
  import ``ikev2.sa`` (which imports them).
* :class:`Task` is one exchange we initiate: ``build`` the request, ``process`` the
  response (window size 1, RFC 7296 sec. 2.3).
* :class:`Responder` answers one request of the peer; the per-receive context (Message
  ID, raw octets, time) comes in a :class:`Request`, never stored on the SA.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ikev2.child import ChildSa
from ikev2.config import IkeConfig
from ikev2.cp import ConfigProvider
from ikev2.enums import ExchangeType, NotifyType, ProtocolId
from ikev2.errors import ProtocolError
from ikev2.events import Address, Event
from ikev2.keymat import Keymat
from ikev2.payloads import CertReqPayload, NotifyPayload
from ikev2.policy import AlgorithmPolicy
from ikev2.redirect import GatewayIdentity
from ikev2.states import IkeState

Payload = Any  # one of the dataclasses of ikev2.payloads
Rng = Callable[[int], bytes]
#: Responder side of RFC 9370 IKE_FOLLOWUP_KE: called with the additional secrets.
Finish = Callable[[list[bytes], float], None]


class Timers(Protocol):
    """The IKE SA's named deadlines (``ikev2.sa.WatchedTimerSet``)."""

    def set(self, name: str, deadline: float | None) -> None: ...
    def cancel(self, name: str) -> None: ...
    def get(self, name: str) -> float | None: ...
    def names(self) -> list[str]: ...


class FollowupLinks(Protocol):
    """The IKE SA's IKE_FOLLOWUP_KE responder (``ikev2.tasks.followup_ke``)."""

    def register(
        self, sa: TaskContext, methods: list[int], finish: Finish, now: float
    ) -> NotifyPayload: ...
    def respond(self, sa: TaskContext, request: Request) -> list[Payload]: ...


class RedirectHooks(Protocol):
    """RFC 5685 as the engine's owner runs it (``ikev2.redirects.Redirects``): whether
    and where a client goes, and where a gateway sends a client at IKE_AUTH."""

    @property
    def follow_redirects(self) -> bool: ...
    def redirected_from(self, sa: TaskContext) -> GatewayIdentity | None: ...
    def placement_at_auth(self, sa: TaskContext) -> GatewayIdentity | None: ...
    def follow(
        self,
        sa: TaskContext,
        gateway: GatewayIdentity,
        exchange: str,
        now: float,
        children: list[str] | None,
    ) -> None: ...


class EngineServices(Protocol):
    """What tasks use of the dispatcher-wide ``ikev2.sa.EngineContext``."""

    @property
    def rng(self) -> Rng: ...
    @property
    def key_exchange_rng(self) -> Rng | None: ...
    @property
    def psk_lookup(self) -> Callable[[str, str], bytes | None]: ...
    @property
    def config_provider(self) -> ConfigProvider | None: ...
    @property
    def eap_lookup(self) -> Callable[[str], str | None]: ...
    @property
    def policy(self) -> AlgorithmPolicy: ...
    @property
    def wall_time_offset(self) -> float: ...
    @property
    def redirects(self) -> RedirectHooks | None: ...  # None: an IKE SA on its own
    def new_spi(self, size: int) -> bytes: ...
    def new_child_sa_id(self) -> int: ...


class TaskContext(Protocol):
    """What a task may use of its IKE SA (``ikev2.sa.IkeSa`` implements it)."""

    # -- identity and configuration (read)
    @property
    def ike_sa_id(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def initiator(self) -> bool: ...
    @property
    def ctx(self) -> EngineServices: ...
    @property
    def candidate_configs(self) -> list[IkeConfig]: ...
    @property
    def keymat(self) -> Keymat: ...
    @property
    def peer(self) -> PeerState: ...
    @property
    def state(self) -> IkeState: ...
    @property
    def established(self) -> bool: ...
    @property
    def alive(self) -> bool: ...
    @property
    def next_request_id(self) -> int: ...
    @property
    def active_task(self) -> Task | None: ...
    @property
    def children(self) -> dict[int, ChildSa]: ...
    @property
    def timers(self) -> Timers: ...
    @property
    def spi_i(self) -> bytes: ...
    @property
    def suppress_initial_contact(self) -> bool: ...  # set by the dispatcher (sec. 2.4)
    @property
    def last_peer_activity(self) -> float: ...
    def describe(self) -> str: ...

    # -- negotiated state (tasks set these while the exchanges run)
    config: IkeConfig  # the responder picks among candidate_configs
    spi_r: bytes  # zero until the IKE_SA_INIT response
    local_addr: Address  # NAT-T float to port 4500 (sec. 2.23)
    remote_addr: Address
    local_id: str  # the identities as authenticated in IKE_AUTH
    remote_id: str
    eap_state: Any  # a responder's EAP conversation between IKE_AUTH requests (ike_eap)
    pending_address: Callable[[float], list[Payload]] | None  # AddressRequested, deferred
    established_at: float | None

    # -- actions
    def to(self, trigger: str) -> None: ...
    def emit(self, event: Event) -> None: ...
    def queue_task(
        self, task: Task, now: float, *, start: bool = True, first: bool = False
    ) -> None: ...
    def after_response(self, action: Callable[[float], object]) -> None: ...
    def defer_response(self) -> None: ...  # answered later (EAP relayed to RADIUS)
    def followup_responder(self) -> FollowupLinks: ...
    def fail(self, now: float, reason: str, notify: NotifyType | None = None) -> None: ...
    def destroy(self, now: float, reason: str, notify: NotifyType | None = None) -> None: ...
    def find_child_by_spi(
        self, spi: int, *, outbound: bool, protocol: ProtocolId = ProtocolId.ESP
    ) -> ChildSa | None: ...
    def child_gone(self, child: ChildSa, reason: str) -> None: ...
    def rekey_child(self, child_sa_id: int, now: float) -> None: ...
    def delete_child(self, child_sa_id: int, now: float) -> None: ...
    def rekey_ike(self, now: float) -> None: ...
    def delete_ike(self, now: float, reason: str = "deleted locally") -> None: ...
    def send_liveness(self, now: float) -> None: ...
    def reauthenticate(self, now: float) -> bool: ...

    # -- IKE SA rekeying (sec. 2.18)
    def new_rekeyed_sa(self, *, initiator: bool, spi_i: bytes, spi_r: bytes) -> TaskContext: ...
    def register(self) -> None: ...
    def replaced_by(self, new: TaskContext) -> None: ...


@dataclass(slots=True)
class PeerState:
    """What the exchanges learned about the peer and the path to it (one per IKE SA)."""

    nat_local: bool = False  # we are behind a NAT (or fake one: ``encap``), sec. 2.23
    nat_remote: bool = False  # the peer is behind a NAT
    udp_encap: bool = False  # ESP in UDP for the Child SAs (RFC 3948)
    fragmentation: bool = False  # both sent IKEV2_FRAGMENTATION_SUPPORTED (RFC 7383)
    signature_hashes: list[int] = field(default_factory=list)  # RFC 7427 sec. 4
    intermediate: bool = False  # INTERMEDIATE_EXCHANGE_SUPPORTED (RFC 9242)
    certreq: list[CertReqPayload] = field(default_factory=list)  # sec. 3.7
    auth_method: int = 0  # of the peer's AUTH payload
    initial_contact: bool = False  # the peer sent INITIAL_CONTACT (sec. 2.4)
    redirect: bool = False  # the client announced RFC 5685 redirects (REDIRECT_SUPPORTED)
    childless: bool = False  # the peer sent CHILDLESS_IKEV2_SUPPORTED (RFC 6023 sec. 3)
    use_ppk: bool = False  # both sent USE_PPK (RFC 8784 sec. 3)
    hash_and_url: bool = False  # the peer sent HTTP_CERT_LOOKUP_SUPPORTED (sec. 3.10.1)
    ppk_id: str = ""  # the PPK_ID whose PPK is in this IKE SA's keys (ikev2.tasks.ike_ppk)
    # Virtual IPs (sec. 2.19, ikev2.tasks.ike_config): ours from the gateway's CFG_REPLY,
    # or the peer's leases from our pools; strings, kept across IKE SA rekeys.
    local_vips: list[str] = field(default_factory=list)
    remote_vips: list[str] = field(default_factory=list)
    # Whom the peer's leases are bound to: the EAP identity after EAP (as strongSwan), else
    # the IKE identity; they go back to the pools under the same name.
    remote_vips_identity: str = ""

    def carried_over(self) -> PeerState:
        """What a rekeyed IKE SA inherits (sec. 2.18: same peer, same path)."""
        return PeerState(
            nat_local=self.nat_local,
            nat_remote=self.nat_remote,
            udp_encap=self.udp_encap,
            fragmentation=self.fragmentation,
            signature_hashes=self.signature_hashes,
            redirect=self.redirect,
            local_vips=list(self.local_vips),
            remote_vips=list(self.remote_vips),
            remote_vips_identity=self.remote_vips_identity,
        )


class Task(ABC):
    """One request/response exchange we initiate (window size 1: one at a time)."""

    exchange: ExchangeType = ExchangeType.INFORMATIONAL
    name: str = "task"
    #: Retransmissions before giving up; None: the connection's ``retransmit_tries``, and
    #: running out of them means the peer is unreachable (a task with its own, smaller
    #: limit expects no answer to matter).
    retransmit_tries: int | None = None

    @abstractmethod
    def build(self, sa: TaskContext, now: float) -> list[Payload] | None:
        """The request's payloads (inside SK for everything but IKE_SA_INIT); None when
        there is nothing to do any more (the task is dropped)."""

    @abstractmethod
    def process(self, sa: TaskContext, payloads: list[Payload], now: float) -> bool:
        """Handle the response. Return True to send this same task again with the same
        Message ID (IKE_SA_INIT after COOKIE / INVALID_KE_PAYLOAD), False when done."""

    def abort(self, sa: TaskContext, reason: str, now: float) -> None:  # noqa: B027 - optional
        """The exchange will never complete (retransmissions exhausted, SA deleted)."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"


@dataclass(frozen=True)
class Request:
    """One decrypted request of the peer, as handed to a :class:`Responder`."""

    exchange: ExchangeType | int  # an int for exchange types we do not know
    message_id: int
    payloads: list[Payload]
    raw: bytes  # the (first) datagram as received
    now: float


class Responder(ABC):
    """Answers the peer's requests of one exchange type on one IKE SA; keeps whatever
    state spans several of those requests (e.g. IKE_FOLLOWUP_KE links)."""

    @abstractmethod
    def respond(self, sa: TaskContext, request: Request) -> list[Payload]:
        """The response payloads. Raises ProtocolError (notify None: drop silently)."""

    def refused(self, sa: TaskContext, error: ProtocolError) -> None:  # noqa: B027 - optional
        """The request was refused with ``error`` (by :meth:`respond` or by the router
        because of the SA's state), before the error notify is sent."""
