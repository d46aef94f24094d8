"""One IKE SA: message IDs, retransmission, the response cache, SK protection, timers.

Sans-I/O in aioquic's shape: ``receive_message()`` (from the dispatcher, which already
parsed the header to route it), ``datagrams_to_send(now)``, ``get_timer()``,
``handle_timer(now)``, ``next_event()``. The exchanges themselves live in
``ikev2.tasks``; this module is the transport between them and the wire:

* window size 1 (RFC 7296 sec. 2.3): one request of ours in flight, requests queued as
  tasks; the peer's requests are answered in Message ID order;
* retransmission by the *initiator of an exchange* only (sec. 2.1), strongSwan's back-off
  (4 s, x1.8, 5 tries by default); a responder never retransmits on its own (libreswan
  CVE-2016-5361 amplification) but answers a retransmitted request from its response
  cache byte for byte without processing it again (sec. 2.1);
* responses with an unexpected Message ID are dropped (sec. 2.3);
* SK decryption failures are dropped silently (sec. 2.21.1, 3.14);
* RFC 7383 fragmentation of outgoing SK messages above ``fragment_size`` when the peer
  announced IKEV2_FRAGMENTATION_SUPPORTED, reassembly of SKF on input.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from ipaddress import ip_address
from typing import Any

from ikev2.child import ChildSa
from ikev2.config import IkeConfig
from ikev2.cp import ConfigProvider
from ikev2.crypto.keys import IkeKeys
from ikev2.crypto.prf import Prf
from ikev2.crypto.sk import SkCipher
from ikev2.enums import EncrId, ExchangeType, IntegId, KeId, NotifyType, PrfId, ProtocolId
from ikev2.errors import IntegrityError, ProtocolError, UsageError
from ikev2.events import (
    Address,
    AuthenticationFailed,
    ChildSaDeleted,
    ChildSaExpiring,
    Event,
    IkeSaAddressChanged,
    IkeSaDeleted,
    NegotiationFailed,
    PeerUnreachable,
    VirtualIpsReleased,
)
from ikev2.fragments import Reassembler, ReassemblyBudget, serialize_fragments
from ikev2.keymat import Keymat
from ikev2.message import (
    IkeHeader,
    IkeMessage,
    decrypt_message,
    encrypted_message_length,
    serialize_message,
)
from ikev2.payloads import NotifyPayload, Proposal
from ikev2.policy import AlgorithmPolicy
from ikev2.states import ChildState, IkeState, StateError, ike_transition
from ikev2.tasks import Payload, Request, Task, TaskContext
from ikev2.tasks.child_create import ChildCreateTask
from ikev2.tasks.child_rekey import ChildRekeyTask
from ikev2.tasks.context import PeerState, RedirectHooks
from ikev2.tasks.dispatch import respond
from ikev2.tasks.followup_ke import FollowupKeResponder
from ikev2.tasks.ike_auth import IkeAuthTask
from ikev2.tasks.ike_delete import ChildDeleteTask, IkeDeleteTask
from ikev2.tasks.ike_dpd import DpdTask
from ikev2.tasks.ike_init import IkeInitResponder, IkeInitTask
from ikev2.tasks.ike_rekey import IkeRekeyTask
from ikev2.tasks.lifetimes import on_timer
from ikev2.timers import TimerSet, retransmit_delay

log = logging.getLogger("ikev2.sa")

Rng = Callable[[int], bytes]
PskLookup = Callable[[str, str], "bytes | None"]


@dataclass(frozen=True)
class Datagram:
    """One UDP payload to send. ``data`` has no non-ESP marker: the glue prepends four
    zero octets when either port is 4500 (RFC 3948 sec. 2.2)."""

    data: bytes
    local_addr: Address
    remote_addr: Address


@dataclass
class EngineContext:
    """What every IKE SA of one dispatcher shares."""

    rng: Rng
    psk_lookup: PskLookup
    policy: AlgorithmPolicy
    configs: list[IkeConfig]
    # Remote access: answers CFG_REQUESTs from the daemon's address pools (sec. 2.19).
    config_provider: ConfigProvider | None = None
    # EAP passwords by EAP identity (MS-CHAPv2, both roles); None: no password.
    eap_lookup: Callable[[str], str | None] = field(default=lambda identity: None)
    # Key exchange private values: the injected rng (seeded in tests and ``explain --seed``,
    # so they are reproducible), or None for OpenSSL's own generator (faster ML-KEM
    # encapsulation than the pure-Python one a given randomness needs).
    key_exchange_rng: Rng | None = None
    register_sa: Callable[[IkeSa], None] = field(default=lambda sa: None)
    # Make-before-break reauthentication (RFC 7296 sec. 2.8.3) needs a new IKE SA, which
    # only the dispatcher can create; None (an IKE SA on its own) deletes instead.
    reauthenticate: Callable[[IkeSa, float], None] | None = None
    # Certificates are checked against wall-clock time: now + wall_time_offset. The
    # daemon's now is POSIX time (aioipsec.runtime.engine.now): its offset stays 0.
    # Nothing in ikev2 reads a clock.
    wall_time_offset: float = 0.0
    # IKE SA ids with queued datagrams or events (the dispatcher drains only those).
    dirty: set[int] = field(default_factory=set)
    # Fragment reassembly memory shared by all IKE SAs (the dispatcher sets it; RFC 7383).
    reassembly_budget: ReassemblyBudget | None = None
    # The dispatcher's counters (``stats``): the SAs add what only they see, such as
    # messages dropped for a bad ICV under valid SPIs (sec. 2.21.1: dropped silently).
    counters: dict[str, int] = field(default_factory=dict)
    # RFC 5685 redirects (the dispatcher's ikev2.redirects.Redirects; None: not handled).
    redirects: RedirectHooks | None = None
    # Our inbound ESP/AH SPIs (4 octets) pass through this when set: the daemon's
    # SA-steered data-plane workers write the owning worker's index into fixed SPI bits,
    # which their kernel socket programs steer by (aioipsec.runtime.steering).
    esp_spi_hook: Callable[[bytes], bytes] | None = None
    _next_ike_id: int = 0
    _next_child_id: int = 0

    def new_ike_sa_id(self) -> int:
        self._next_ike_id += 1
        return self._next_ike_id

    def new_child_sa_id(self) -> int:
        self._next_child_id += 1
        return self._next_child_id

    def new_spi(self, size: int) -> bytes:
        while True:
            spi = self.rng(size)
            if size == 4 and self.esp_spi_hook is not None:
                spi = self.esp_spi_hook(spi)
            # ESP/AH SPIs 1-255 are reserved by IANA (RFC 4303 sec. 2.1); zero is invalid.
            if int.from_bytes(spi, "big") > 255:
                return spi


class WatchedTimerSet(TimerSet):
    """A TimerSet that records its owner's IKE SA id in ``changed`` (the dispatcher's set)
    whenever a deadline is set, cancelled or popped: the dispatcher then recomputes only
    those SAs' earliest deadlines instead of scanning every SA (its timer heap)."""

    __slots__ = ("changed", "ike_sa_id")

    def __init__(self, ike_sa_id: int) -> None:
        super().__init__()
        self.ike_sa_id = ike_sa_id
        self.changed: set[int] | None = None

    def set(self, name: str, deadline: float | None) -> None:
        super().set(name, deadline)
        if self.changed is not None:
            self.changed.add(self.ike_sa_id)

    def cancel(self, name: str) -> None:
        super().cancel(name)
        if self.changed is not None:
            self.changed.add(self.ike_sa_id)

    def pop_due(self, now: float) -> list[str]:
        due = super().pop_due(now)
        if due and self.changed is not None:
            self.changed.add(self.ike_sa_id)
        return due

    def names(self) -> list[str]:
        """The names of the deadlines set (an IKE rekey moves the Child SAs' ones)."""
        return list(self._deadlines)

    def clear(self) -> None:
        super().clear()
        if self.changed is not None:
            self.changed.add(self.ike_sa_id)


@dataclass
class _Outstanding:
    task: Task
    message_id: int
    exchange: ExchangeType
    datagrams: list[bytes]
    attempt: int = 0
    local_addr: Address = ("", 0)
    remote_addr: Address = ("", 0)


@dataclass(slots=True)
class _CachedResponse:
    """The last response, kept to answer a retransmitted request with the same octets
    (sec. 2.1): the datagrams as sent, and the digests of the request datagrams it answers
    (a tuple: one digest, or one per fragment; an empty set alone takes 216 octets)."""

    message_id: int
    request_digests: tuple[bytes, ...]
    datagrams: list[bytes]


@dataclass
class _DeferredResponse:
    """A request whose response waits for an answer from outside the engine (EAP relayed to
    RADIUS, ``defer_response``): what the response needs once the answer is in."""

    exchange: ExchangeType | int
    message_id: int
    request_digests: tuple[bytes, ...]


@dataclass
class IkeSaInfo:
    """A snapshot of one IKE SA for listings (``swanctl --list-sas`` style)."""

    ike_sa_id: int
    connection: str
    state: str
    initiator: bool
    spi_i: int
    spi_r: int
    local_addr: Address
    remote_addr: Address
    local_id: str
    remote_id: str
    algorithms: str
    established_at: float | None
    children: list[dict[str, Any]]


def _digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


class IkeSa:
    """One IKE SA (RFC 7296), from IKE_SA_INIT to deletion.

    Public calls: the five I/O calls (``receive_message`` via the dispatcher,
    ``datagrams_to_send``, ``get_timer``, ``handle_timer``, ``next_event``) and
    ``initiate``, ``create_child``, ``rekey_child``, ``rekey_ike``, ``delete_child``,
    ``delete_ike``, ``send_liveness``, ``child_limit_reached``.
    """

    # One per IKE SA (10,000s in a gateway): no instance dictionary. With more than 30
    # attributes CPython 3.11 gives up sharing the dictionary's keys, and the dictionary
    # alone took 1.5 KiB per IKE SA.
    __slots__ = (
        "_after_response",
        "_defer",
        "_deferred",
        "_events",
        "_followup_ke",
        "_out",
        "_outstanding",
        "_pending_request_digests",
        "_reassembly",
        "_response_cache",
        "_tasks",
        "candidate_configs",
        "children",
        "closed_children",
        "config",
        "ctx",
        "deleted_reason",
        "eap_state",
        "established_at",
        "expected_request_id",
        "ike_sa_id",
        "initiator",
        "keymat",
        "last_peer_activity",
        "local_addr",
        "local_id",
        "next_request_id",
        "peer",
        "pending_address",
        "remote_addr",
        "remote_id",
        "spi_i",
        "spi_r",
        "state",
        "successor",
        "suppress_initial_contact",
        "timers",
    )

    def __init__(
        self,
        ctx: EngineContext,
        config: IkeConfig,
        *,
        initiator: bool,
        spi_i: bytes,
        spi_r: bytes,
        local_addr: Address,
        remote_addr: Address,
        candidate_configs: Sequence[IkeConfig] | None = None,
        ike_sa_id: int | None = None,
    ) -> None:
        self.ctx = ctx
        self.config = config
        self.candidate_configs = list(candidate_configs or [config])
        self.ike_sa_id = ike_sa_id if ike_sa_id is not None else ctx.new_ike_sa_id()
        self.initiator = initiator  # the original initiator of this IKE SA (I flag)
        self.spi_i = spi_i
        self.spi_r = spi_r
        self.local_addr = local_addr
        self.remote_addr = remote_addr
        self.state = IkeState.CREATED

        # Negotiated algorithms, keys and what AUTH signs (ikev2.keymat).
        self.keymat = Keymat(initiator, ctx.rng)

        # Peer capabilities and NAT state.
        self.peer = PeerState()

        self.local_id = config.local.id
        self.remote_id = config.remote.id
        self.eap_state: Any = None
        # pools = dhcp: the rest of the IKE_AUTH response, once the address is in.
        self.pending_address: Callable[[float], list[Payload]] | None = None
        self.established_at: float | None = None
        self.last_peer_activity = 0.0

        # Message IDs (sec. 2.3).
        self.next_request_id = 0
        self.expected_request_id = 0
        self._outstanding: _Outstanding | None = None
        # Plain lists, not deques: they hold a few items at most, and an empty deque costs
        # 760 octets against a list's 56, twice per IKE SA (10,000 SAs: 14 MiB).
        self._tasks: list[Task] = []
        self._response_cache: _CachedResponse | None = None
        self._reassembly: Reassembler | None = None  # for the current fragmented message

        self.children: dict[int, ChildSa] = {}
        self.timers = WatchedTimerSet(self.ike_sa_id)
        self._events: list[Event] = []
        self._out: list[Datagram] = []
        self.deleted_reason: str | None = None
        # IKE rekey: the new IKE SA that replaces this one.
        self.successor: IkeSa | None = None
        self._followup_ke: FollowupKeResponder | None = None  # see followup_responder()
        # INITIAL_CONTACT only when no other IKE SA to this peer exists (sec. 2.4): not on
        # reauthentication or a second connection to the same peer.
        self.suppress_initial_contact = False
        self.closed_children: list[str] = []
        # Digests of the fragments of a request still being reassembled (RFC 7383).
        self._pending_request_digests: tuple[bytes, ...] = ()
        self._after_response: Callable[[float], object] | None = None
        # A request answered later (defer_response / answer_deferred), and the flag a task
        # raises while responding to say so.
        self._deferred: _DeferredResponse | None = None
        self._defer = False

    # ------------------------------------------------------------------ public: info

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def established(self) -> bool:
        return self.state in (IkeState.ESTABLISHED, IkeState.REKEYING)

    @property
    def alive(self) -> bool:
        return self.state is not IkeState.DELETED

    @property
    def our_spi(self) -> bytes:
        return self.spi_i if self.initiator else self.spi_r

    # Read-only views of the key material for the engine's users (the daemon's key export,
    # tests, fuzz targets); tasks use ``keymat`` itself.
    @property
    def encr(self) -> EncrId | None:
        return self.keymat.encr

    @property
    def encr_key_bits(self) -> int | None:
        return self.keymat.encr_key_bits

    @property
    def integ(self) -> IntegId | None:
        return self.keymat.integ

    @property
    def prf_id(self) -> PrfId | None:
        return self.keymat.prf_id

    @property
    def ke_method(self) -> KeId | None:
        return self.keymat.ke_method

    @property
    def additional_ke(self) -> list[int]:
        return self.keymat.additional_ke

    @property
    def prf(self) -> Prf | None:
        return self.keymat.prf

    @property
    def keys(self) -> IkeKeys | None:
        return self.keymat.keys

    @property
    def cipher_in(self) -> SkCipher | None:
        return self.keymat.cipher_in

    @property
    def cipher_out(self) -> SkCipher | None:
        return self.keymat.cipher_out

    @property
    def nonce_i(self) -> bytes:
        return self.keymat.nonce_i

    @property
    def nonce_r(self) -> bytes:
        return self.keymat.nonce_r

    @property
    def chosen_proposal(self) -> Proposal | None:
        return self.keymat.chosen_proposal

    def describe(self) -> str:
        return (
            f"{self.name}[{self.ike_sa_id}] {self.spi_i.hex()}_i {self.spi_r.hex()}_r "
            f"{self.state.value}"
        )

    def info(self) -> IkeSaInfo:
        return IkeSaInfo(
            ike_sa_id=self.ike_sa_id,
            connection=self.name,
            state=self.state.value,
            initiator=self.initiator,
            spi_i=int.from_bytes(self.spi_i, "big"),
            spi_r=int.from_bytes(self.spi_r, "big"),
            local_addr=self.local_addr,
            remote_addr=self.remote_addr,
            local_id=self.local_id,
            remote_id=self.remote_id,
            algorithms=self.keymat.algorithm_summary(),
            established_at=self.established_at,
            children=[
                {
                    "name": child.config.name,
                    "child_sa_id": child.child_sa_id,
                    "state": child.state.value,
                    "spi_in": child.spi_in,
                    "spi_out": child.spi_out,
                    "mode": child.mode,
                    "local_ts": [str(ts) for ts in child.local_ts],
                    "remote_ts": [str(ts) for ts in child.remote_ts],
                }
                for child in self.children.values()
                if child.alive
            ],
        )

    # ------------------------------------------------------------------ public: I/O

    def datagrams_to_send(self, now: float) -> list[Datagram]:
        out, self._out = self._out, []
        return out

    def next_event(self) -> Event | None:
        return self._events.pop(0) if self._events else None

    def get_timer(self) -> float | None:
        return self.timers.earliest()

    def handle_timer(self, now: float) -> None:
        for name in self.timers.pop_due(now):
            if not self.alive:
                return
            self._on_timer(name, now)

    # ------------------------------------------------------------------ public: actions

    def initiate(self, child: str | None, now: float) -> None:
        """Start IKE_SA_INIT (+ IKE_AUTH with ``child`` as the first Child SA)."""
        self.queue_task(IkeInitTask(), now, start=False)
        self.queue_task(IkeAuthTask(child), now)

    def create_child(self, child: str, now: float) -> None:
        self._require_established("create a Child SA")
        self.queue_task(ChildCreateTask(self.config.child(child)), now)

    def rekey_child(self, child_sa_id: int, now: float) -> None:
        self._require_established("rekey a Child SA")
        child = self.children.get(child_sa_id)
        if child is None or child.state is not ChildState.INSTALLED:
            return
        self.queue_task(ChildRekeyTask(child), now)

    def delete_child(self, child_sa_id: int, now: float) -> None:
        child = self.children.get(child_sa_id)
        if child is None or child.state in (ChildState.DELETING, ChildState.DELETED):
            return
        if not self.established and self.state is not IkeState.REKEYED:
            return
        self.queue_task(ChildDeleteTask(child), now)

    def rekey_ike(self, now: float) -> None:
        self._require_established("rekey the IKE SA")
        if any(isinstance(t, IkeRekeyTask) for t in self._all_tasks()):
            return
        self.queue_task(IkeRekeyTask(), now)

    def delete_ike(self, now: float, reason: str = "deleted locally") -> None:
        """INFORMATIONAL Delete for the IKE SA (and with it all its Child SAs)."""
        if not self.alive:
            return
        if self.state in (IkeState.CREATED, IkeState.INIT_SENT, IkeState.INIT_DONE):
            self.destroy(now, reason)
            return
        if self.state is IkeState.DELETING:
            return
        # A delete goes before anything else still queued (window 1: after the current).
        self._tasks.clear()
        self.queue_task(IkeDeleteTask(reason), now)

    def send_liveness(self, now: float) -> None:
        if not self.established:
            return
        if self._outstanding is not None or self._tasks:
            return  # something is in flight already: it doubles as a liveness check
        self.queue_task(DpdTask(), now)

    def wanted_children(self) -> list[str]:
        """The children this SA has or is about to create (RFC 5685: what a redirected
        client asks the new gateway for)."""
        names = [c.config.name for c in self.children.values() if c.alive]
        for task in self._all_tasks():
            if isinstance(task, IkeAuthTask) and task.child_name and task.child_name not in names:
                names.insert(0, task.child_name)
        return names

    def child_limit_reached(self, spi_in: int, cause: str, hard: bool, now: float) -> None:
        """The data plane says a Child SA hit its byte/packet limit (soft: rekey, hard:
        delete)."""
        for child in self.children.values():
            if child.spi_in == spi_in and child.alive:
                if hard:
                    self.delete_child(child.child_sa_id, now)
                elif child.state is ChildState.INSTALLED and self.established:
                    self.emit(
                        ChildSaExpiring(
                            self.ike_sa_id, self.name, child.config.name, child.child_sa_id, cause
                        )
                    )
                    self.rekey_child(child.child_sa_id, now)
                return

    # ------------------------------------------------------------------ tasks

    def _all_tasks(self) -> list[Task]:
        tasks = list(self._tasks)
        if self._outstanding is not None:
            tasks.append(self._outstanding.task)
        return tasks

    @property
    def active_task(self) -> Task | None:
        return self._outstanding.task if self._outstanding is not None else None

    def queue_task(
        self, task: Task, now: float, *, start: bool = True, first: bool = False
    ) -> None:
        if first:
            self._tasks.insert(0, task)
        else:
            self._tasks.append(task)
        if start:
            self._start_next(now)

    def _start_next(self, now: float) -> None:
        while self._outstanding is None and self._tasks and self.alive:
            task = self._tasks.pop(0)
            try:
                payloads = task.build(self, now)
            except ProtocolError as error:
                log.info("%s: %s not started: %s", self.describe(), task, error.reason)
                task.abort(self, error.reason, now)
                continue
            if payloads is None:  # the task decided there is nothing to do any more
                continue
            self._send_request(task, payloads, now)

    def _send_request(self, task: Task, payloads: list[Any], now: float) -> None:
        message_id = self.next_request_id
        datagrams = self._encode(task.exchange, False, message_id, payloads)
        self._outstanding = _Outstanding(
            task=task,
            message_id=message_id,
            exchange=task.exchange,
            datagrams=datagrams,
            local_addr=self.local_addr,
            remote_addr=self.remote_addr,
        )
        if task.exchange == ExchangeType.IKE_SA_INIT:
            self.keymat.init_request = datagrams[0]
        self._transmit(datagrams)
        self.timers.set(
            "retransmit",
            now + retransmit_delay(0, self.config.retransmit_timeout, self.config.retransmit_base),
        )

    def _transmit(self, datagrams: list[bytes]) -> None:
        for data in datagrams:
            self._out.append(Datagram(data, self.local_addr, self.remote_addr))
        self.ctx.dirty.add(self.ike_sa_id)

    # ------------------------------------------------------------------ encoding

    def _header(self, exchange: ExchangeType, response: bool, message_id: int) -> IkeHeader:
        return IkeHeader(
            spi_i=self.spi_i,
            spi_r=self.spi_r,
            exchange=exchange,
            initiator=self.initiator,
            response=response,
            message_id=message_id,
        )

    def _encode(
        self, exchange: ExchangeType, response: bool, message_id: int, payloads: list[Any]
    ) -> list[bytes]:
        header = self._header(exchange, response, message_id)
        cipher = self.keymat.cipher_out
        if exchange == ExchangeType.IKE_SA_INIT or cipher is None:
            return [serialize_message(header, payloads)]
        if exchange == ExchangeType.IKE_INTERMEDIATE:
            self.keymat.record_intermediate(
                payloads, outgoing=True, message_id=message_id, spi_i=self.spi_i, spi_r=self.spi_r
            )
        if self._should_fragment(exchange, payloads, cipher):
            return list(serialize_fragments(header, payloads, cipher, self.config.fragment_size))
        return [serialize_message(header, payloads, cipher)]

    def _should_fragment(
        self, exchange: ExchangeType, payloads: list[Payload], cipher: SkCipher
    ) -> bool:
        # RFC 7383 sec. 2.5: only messages that are encrypted and only after both sides
        # said they support it; IKE_INTERMEDIATE is fragmentable too (RFC 9242 sec. 3.4).
        if not self.peer.fragmentation or self.config.fragmentation in ("no", "accept"):
            return False
        if self.config.fragmentation == "force" and exchange == ExchangeType.IKE_AUTH:
            return True
        return encrypted_message_length(payloads, cipher) > self.config.fragment_size

    def _decrypt(self, msg: IkeMessage, now: float) -> IkeMessage | None:
        """The inner payloads of an SK/SKF message, or None (fragment stored / dropped)."""
        cipher = self.keymat.cipher_in
        if cipher is None:
            raise IntegrityError("no keys yet for an encrypted message")
        if msg.is_fragment:
            return self._reassemble(msg, cipher, now)
        if msg.encrypted_payload is None:
            raise ProtocolError("message after IKE_SA_INIT without an SK payload", None)
        return decrypt_message(msg, cipher)

    def _count_drop(self, error: ProtocolError) -> None:
        if isinstance(error, IntegrityError):
            counters = self.ctx.counters
            counters["icv_failures"] = counters.get("icv_failures", 0) + 1

    def _reassemble(self, msg: IkeMessage, cipher: SkCipher, now: float) -> IkeMessage | None:
        if self.config.fragmentation == "no":
            raise ProtocolError("IKE fragment received but fragmentation is disabled", None)
        if self._reassembly is None:
            self._reassembly = Reassembler(budget=self.ctx.reassembly_budget, owner=self.ike_sa_id)
        self._reassembly.expire(now)
        return self._reassembly.add(msg, cipher, now)

    # ------------------------------------------------------------------ input

    def receive_message(
        self, msg: IkeMessage, remote_addr: Address, local_addr: Address, now: float
    ) -> None:
        """An IKE message routed to this SA by the dispatcher (header already parsed)."""
        if not self.alive:
            return
        header = msg.header
        # The I flag says who sent it: a message from the original initiator has it set.
        if header.initiator == self.initiator:
            log.debug("%s: dropping message with our own I flag", self.describe())
            return
        try:
            if header.response:
                self._receive_response(msg, remote_addr, local_addr, now)
            else:
                self._receive_request(msg, remote_addr, local_addr, now)
        except StateError as error:
            log.warning("%s: %s", self.describe(), error)
        self._start_next(now)

    def _receive_response(
        self, msg: IkeMessage, remote_addr: Address, local_addr: Address, now: float
    ) -> None:
        out = self._outstanding
        header = msg.header
        if out is None or header.message_id != out.message_id or header.exchange != out.exchange:
            log.debug(
                "%s: dropping response with Message ID %d (expecting %s)",
                self.describe(),
                header.message_id,
                None if out is None else out.message_id,
            )
            return
        if header.exchange == ExchangeType.IKE_SA_INIT:
            inner = msg
            self.keymat.init_response = msg.raw  # RealMessage2 (sec. 2.15)
            self.spi_r = header.spi_r
        else:
            try:
                decrypted = self._decrypt(msg, now)
            except ProtocolError as error:
                self._count_drop(error)
                log.info("%s: response dropped: %s", self.describe(), error.reason)
                return
            if decrypted is None:
                return
            inner = decrypted
            if header.exchange == ExchangeType.IKE_INTERMEDIATE:
                self._record_intermediate(inner.payloads, header.message_id, msg)
        self.last_peer_activity = now
        self._update_addresses(
            remote_addr, local_addr, authenticated=header.exchange != ExchangeType.IKE_SA_INIT
        )
        self._outstanding = None
        self.timers.cancel("retransmit")
        task = out.task
        try:
            again = task.process(self, inner.payloads, now)
        except ProtocolError as error:
            log.info("%s: %s failed: %s", self.describe(), task, error.reason)
            self.next_request_id += 1
            task.abort(self, error.reason, now)
            return
        if again:
            # Same Message ID again (IKE_SA_INIT with COOKIE or another KE group).
            retry = task.build(self, now)
            if retry is not None:
                self._send_request(task, retry, now)
            return
        self.next_request_id += 1
        if header.exchange == ExchangeType.IKE_AUTH and self.established:
            self._auth_done()  # we initiated: the last IKE_AUTH response is in

    def _receive_request(
        self, msg: IkeMessage, remote_addr: Address, local_addr: Address, now: float
    ) -> None:
        header = msg.header
        cache = self._response_cache
        if cache is not None and header.message_id == cache.message_id:
            # A retransmitted request: answer from the cache byte for byte, never process
            # it again (sec. 2.1). Only an exact copy of a request datagram we processed
            # triggers the resend (for a fragmented request: any of its fragments).
            if _digest(msg.raw) in cache.request_digests:
                for data in cache.datagrams:
                    self._out.append(Datagram(data, local_addr, remote_addr))
                self.ctx.dirty.add(self.ike_sa_id)
            return
        deferred = self._deferred
        if deferred is not None and header.message_id == deferred.message_id:
            # Its response waits for an external answer (a RADIUS round trip): the
            # retransmission is not processed again (no second round trip); the response,
            # once sent, answers it and is resent from the cache for later copies.
            log.debug("%s: request %d retransmitted, its response is pending",
                      self.describe(), header.message_id)  # fmt: skip
            return
        if header.message_id != self.expected_request_id:
            log.debug(
                "%s: dropping request with Message ID %d (expecting %d)",
                self.describe(),
                header.message_id,
                self.expected_request_id,
            )
            return
        try:
            decrypted = self._decrypt(msg, now)
        except ProtocolError as error:
            # ICV failures and garbage inside SK: drop silently (sec. 2.21.1, 3.14); a
            # syntax error in an authenticated message gets its notify.
            if error.notify is None or isinstance(error, IntegrityError):
                self._count_drop(error)
                log.info("%s: request dropped: %s", self.describe(), error.reason)
                return
            self._answer_error(header.exchange, header.message_id, error, msg, now)
            return
        if decrypted is None:
            digest = _digest(msg.raw)
            if digest not in self._pending_request_digests:
                self._pending_request_digests += (digest,)
            return
        digests = (*self._pending_request_digests, _digest(msg.raw))
        self._pending_request_digests = ()
        if header.exchange == ExchangeType.IKE_INTERMEDIATE:
            self._record_intermediate(decrypted.payloads, header.message_id, msg)
        self.last_peer_activity = now
        self._update_addresses(remote_addr, local_addr, authenticated=True)
        request = Request(header.exchange, header.message_id, decrypted.payloads, msg.raw, now)
        try:
            payloads = respond(self, request)
        except ProtocolError as error:
            self._defer = False
            log.info("%s: request refused: %s", self.describe(), error.reason)
            if error.notify is None:
                return
            payloads = [NotifyPayload(notify_type=error.notify, data=error.notify_data)]
        if self._defer:
            self._defer = False
            self._deferred = _DeferredResponse(header.exchange, header.message_id, digests)
            return
        self._send_response(header.exchange, header.message_id, payloads, digests, now)

    def defer_response(self) -> None:
        """The task answering the current request cannot answer yet (it waits for an
        external authenticator): no response now; :meth:`answer_deferred` sends it."""
        self._defer = True

    def answer_deferred(self, build: Callable[[], list[Payload]], now: float) -> bool:
        """Send the response of the deferred request, with the payloads ``build`` returns
        (a ProtocolError it raises becomes its notify). False when none is pending."""
        deferred = self._deferred
        if deferred is None or not self.alive:
            return False
        self._deferred = None
        try:
            payloads = build()
        except ProtocolError as error:
            log.info("%s: request refused: %s", self.describe(), error.reason)
            if error.notify is None:
                return True
            payloads = [NotifyPayload(notify_type=error.notify, data=error.notify_data)]
        self._send_response(
            deferred.exchange, deferred.message_id, payloads, deferred.request_digests, now
        )
        self.ctx.dirty.add(self.ike_sa_id)
        return True

    def _record_intermediate(
        self, payloads: list[Payload], message_id: int, message: IkeMessage
    ) -> None:
        self.keymat.record_intermediate(
            payloads,
            outgoing=False,
            message_id=message_id,
            spi_i=self.spi_i,
            spi_r=self.spi_r,
            message=message,
        )

    def _answer_error(
        self,
        exchange: ExchangeType | int,
        message_id: int,
        error: ProtocolError,
        msg: IkeMessage,
        now: float,
    ) -> None:
        assert error.notify is not None
        payloads = [NotifyPayload(notify_type=error.notify, data=error.notify_data)]
        self._send_response(exchange, message_id, payloads, (_digest(msg.raw),), now)

    def _send_response(
        self,
        exchange: ExchangeType | int,
        message_id: int,
        payloads: list[Any],
        digests: tuple[bytes, ...],
        now: float,
    ) -> None:
        datagrams = self._encode(ExchangeType(exchange), True, message_id, payloads)
        if exchange == ExchangeType.IKE_SA_INIT:
            self.keymat.init_response = datagrams[0]
        self._response_cache = _CachedResponse(message_id, digests, datagrams)
        self.expected_request_id = message_id + 1
        self._transmit(datagrams)
        # A responder's IKE_AUTH response may switch keys or end the SA: tasks record a
        # follow-up action to run once the response bytes exist.
        after = self._after_response
        if after is not None:
            self._after_response = None
            after(now)
        if exchange == ExchangeType.IKE_AUTH and self.established:
            self._auth_done()  # the last IKE_AUTH response, and its Child SA, are out

    def _auth_done(self) -> None:
        """IKE_AUTH is over (see ``Keymat.auth_done``). The Child SA created with it took
        the IKE_SA_INIT nonces for its KEYMAT (sec. 2.17) and needs them no more: only a
        Child SA of CREATE_CHILD_SA uses its nonces later (RFC 9370 keys derived after
        IKE_FOLLOWUP_KE, the lowest nonce of a rekey collision, sec. 2.8.1)."""
        self.keymat.auth_done()
        for child in self.children.values():
            if child.pending_shared is None and not child.addke_methods:
                child.nonce_i = child.nonce_r = b""

    def after_response(self, action: Callable[[float], object]) -> None:
        """Run ``action(now)`` right after the current response has been encoded (actions
        accumulate in order)."""
        previous = self._after_response
        if previous is None:
            self._after_response = action
            return

        def both(now: float) -> None:
            previous(now)
            action(now)

        self._after_response = both

    def followup_responder(self) -> FollowupKeResponder:
        """The responder keeping this SA's RFC 9370 IKE_FOLLOWUP_KE links (created on first
        use: most IKE SAs never negotiate additional key exchanges)."""
        if self._followup_ke is None:
            self._followup_ke = FollowupKeResponder()
        return self._followup_ke

    # ------------------------------------------------------------------ IKE SA replacement

    def reauthenticate(self, now: float) -> bool:
        """Start make-before-break reauthentication (sec. 2.8.3) if the engine can create
        the new IKE SA; False when this SA stands alone."""
        reauthenticate = self.ctx.reauthenticate
        if reauthenticate is None:
            return False
        reauthenticate(self, now)
        return True

    def new_rekeyed_sa(self, *, initiator: bool, spi_i: bytes, spi_r: bytes) -> IkeSa:
        """The IKE SA that a rekey of this one creates (sec. 2.18): same peer, config,
        identities and NAT state; keys are derived by the caller (``Keymat.derive_rekeyed``)."""
        new = IkeSa(
            self.ctx,
            self.config,
            initiator=initiator,
            spi_i=spi_i,
            spi_r=spi_r,
            local_addr=self.local_addr,
            remote_addr=self.remote_addr,
        )
        new.peer = self.peer.carried_over()
        new.local_id = self.local_id
        new.remote_id = self.remote_id
        new.last_peer_activity = self.last_peer_activity
        return new

    def register(self) -> None:
        """Make this (rekeyed) IKE SA known to the dispatcher."""
        self.ctx.register_sa(self)

    def replaced_by(self, new: TaskContext) -> None:
        """A rekey moved everything to ``new`` (one of ours, from :meth:`new_rekeyed_sa`)."""
        assert isinstance(new, IkeSa)
        self.successor = new

    def respond_init(self, msg: IkeMessage, now: float) -> None:
        """Responder: answer the IKE_SA_INIT request ``msg`` (dispatcher entry point).

        Raises ProtocolError for stateless refusals (NO_PROPOSAL_CHOSEN,
        INVALID_KE_PAYLOAD): the dispatcher answers those without keeping this SA.
        """
        self.keymat.init_request = msg.raw  # RealMessage1 (sec. 2.15)
        request = Request(ExchangeType.IKE_SA_INIT, 0, msg.payloads, msg.raw, now)
        payloads = IkeInitResponder().respond(self, request)
        self.last_peer_activity = now
        self._send_response(ExchangeType.IKE_SA_INIT, 0, payloads, (_digest(msg.raw),), now)

    def _update_addresses(
        self, remote_addr: Address, local_addr: Address, *, authenticated: bool
    ) -> None:
        """RFC 7296 sec. 2.23, for an authenticated message that is new (a request with the
        expected Message ID, the response to our outstanding request; retransmissions are
        answered from the cache before this and never move the SA).

        While the SA is being set up, a NAT moves both ends to port 4500 (the float).
        Once established, the peer's NAT mapping may change (a new source port or address):
        follow it only while the peer is behind a NAT and we are not (:meth:`follow_peer`).
        """
        if not authenticated or (remote_addr, local_addr) == (self.remote_addr, self.local_addr):
            return
        if not self.established:
            if self.peer.nat_local or self.peer.nat_remote:
                self.remote_addr = remote_addr
                self.local_addr = local_addr
            return
        self.follow_peer(remote_addr, local_addr)

    def follow_peer(self, remote_addr: Address, local_addr: Address | None = None) -> bool:
        """The peer was seen at ``remote_addr`` in an authenticated, new packet (IKE here,
        ESP through ``Dispatcher.peer_address_seen``). Sec. 2.23: a host not behind a NAT
        SHOULD send to the address of the latest such packet from a peer behind a NAT; a
        host behind a NAT SHOULD NOT (a single spoofed packet could steer it). Emits
        IkeSaAddressChanged and returns True when the SA moved."""
        if not self.peer.nat_remote or self.peer.nat_local or remote_addr == self.remote_addr:
            return False
        old = self.remote_addr
        self.remote_addr = remote_addr
        if local_addr is not None:
            self.local_addr = local_addr
        log.info("%s: peer moved from %s to %s (NAT mapping)", self.describe(), old, remote_addr)
        self.emit(IkeSaAddressChanged(self.ike_sa_id, self.name, old, remote_addr, self.local_addr))
        return True

    # ------------------------------------------------------------------ timers

    def _on_timer(self, name: str, now: float) -> None:
        if name == "retransmit":
            self._retransmit(now)
        elif name == "half_open":
            if not self.established:
                self.fail(now, "IKE SA not established in time (half-open timeout)")
        else:
            on_timer(self, name, now)

    def _retransmit(self, now: float) -> None:
        out = self._outstanding
        if out is None:
            return
        out.attempt += 1
        config = self.config
        own_limit = out.task.retransmit_tries
        tries = config.retransmit_tries if own_limit is None else own_limit
        if out.attempt > tries:
            reason = (
                f"no response after {tries} retransmissions "
                f"({out.exchange.name} request, Message ID {out.message_id})"
            )
            self._outstanding = None
            if own_limit is None:
                self.emit_unreachable()
            out.task.abort(self, reason, now)
            self.destroy(now, f"peer unreachable: {reason}")
            return
        log.info("%s: retransmit %d of %s", self.describe(), out.attempt, out.exchange.name)
        # Retransmit to where the request went (the peer may not have moved: sec. 2.1).
        for data in out.datagrams:
            self._out.append(Datagram(data, self.local_addr, self.remote_addr))
        self.ctx.dirty.add(self.ike_sa_id)
        self.timers.set(
            "retransmit",
            now + retransmit_delay(out.attempt, config.retransmit_timeout, config.retransmit_base),
        )

    def emit_unreachable(self) -> None:
        """Retransmissions exhausted (sec. 2.4): report it with the Child SAs' dpd_action."""
        action = "clear"
        for child in self.children.values():
            if child.alive and child.config.dpd_action != "clear":
                action = child.config.dpd_action
                break
        self.emit(PeerUnreachable(self.ike_sa_id, self.name, action, self.remote_addr))

    # ------------------------------------------------------------------ lifecycle

    def to(self, trigger: str) -> None:
        self.state = ike_transition(self.state, trigger)

    def emit(self, event: Event) -> None:
        if isinstance(event, AuthenticationFailed):
            log.warning(
                "%s: authentication failed (%s): %s", self.describe(), event.check, event.reason
            )
        elif isinstance(event, NegotiationFailed):
            log.warning("%s: %s failed: %s", self.describe(), event.exchange, event.reason)
        self._events.append(event)
        self.ctx.dirty.add(self.ike_sa_id)

    def _require_established(self, what: str) -> None:
        if not self.established:
            raise UsageError(f"cannot {what}: IKE SA {self.describe()} is not established")

    def fail(self, now: float, reason: str, notify: NotifyType | None = None) -> None:
        """End the SA without any exchange (it failed or the peer is gone)."""
        self.destroy(now, reason, notify)

    def destroy(self, now: float, reason: str, notify: NotifyType | None = None) -> None:
        """Drop all state; report every Child SA and then the IKE SA as deleted."""
        if not self.alive:
            return
        # Remembered for close_action / dpd_action restarts by the dispatcher.
        self.closed_children = [c.config.name for c in self.children.values() if c.alive]
        for child in list(self.children.values()):
            self.child_gone(child, reason)
        # Pending exchanges die with the SA; IkeSaDeleted below says why.
        self._outstanding = None
        self._tasks.clear()
        self.timers.clear()
        self.to("deleted")
        self.deleted_reason = reason
        self._release_virtual_ips(now)
        self.emit(
            IkeSaDeleted(
                self.ike_sa_id,
                self.name,
                int.from_bytes(self.spi_i, "big"),
                int.from_bytes(self.spi_r, "big"),
                reason,
                notify,
            )
        )

    def _release_virtual_ips(self, now: float) -> None:
        """Leases go back to the pools when the IKE SA ends, unless a rekey moved them to
        its successor (sec. 2.18); a client drops its virtual IPs likewise."""
        if getattr(self, "successor", None) is not None:
            return
        for local, addresses, identity in (
            (False, self.peer.remote_vips, self.peer.remote_vips_identity or self.remote_id),
            (True, self.peer.local_vips, self.local_id),
        ):
            if not addresses:
                continue
            if not local and self.ctx.config_provider is not None:
                self.ctx.config_provider.release(identity, [ip_address(a) for a in addresses], now)
            self.emit(VirtualIpsReleased(self.ike_sa_id, self.name, local, identity,
                                         tuple(addresses)))  # fmt: skip

    def child_gone(self, child: ChildSa, reason: str) -> None:
        """Forget a Child SA; report it if the data plane was told about it."""
        if not child.alive:
            return
        reported = child.state is not ChildState.CREATING
        child.to("deleted")
        self.children.pop(child.child_sa_id, None)
        self.timers.cancel(f"child_rekey:{child.child_sa_id}")
        self.timers.cancel(f"child_expire:{child.child_sa_id}")
        if reported and not child.delete_reported:
            child.delete_reported = True
            self.emit(
                ChildSaDeleted(
                    self.ike_sa_id,
                    self.name,
                    child.config.name,
                    child.child_sa_id,
                    child.protocol,
                    child.spi_in,
                    child.spi_out,
                    reason,
                )
            )

    def find_child_by_spi(
        self, spi: int, *, outbound: bool, protocol: ProtocolId = ProtocolId.ESP
    ) -> ChildSa | None:
        for child in self.children.values():
            if child.protocol != protocol or not child.alive:
                continue
            if (child.spi_out if outbound else child.spi_in) == spi:
                return child
        return None
