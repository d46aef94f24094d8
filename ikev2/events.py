"""Frozen dataclasses the engine emits (``IkeSa.next_event()`` / ``Dispatcher.next_event()``).

Everything the data plane needs to install a Child SA is in :class:`ChildSaEstablished`;
key material fields carry ``repr=False`` so that printing or logging an event never shows
a key. Addresses are ``(host, port)`` tuples as strings/ints.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ikev2.enums import EncrId, IntegId, NotifyType, PrfId, ProtocolId

# Defined in its own leaf module (ikev2.ts builds it too); importable from here as before.
from ikev2.ts_range import TrafficSelectorRange as TrafficSelectorRange

Address = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Event:
    """Base class: every event names the IKE SA (``ike_sa_id``, unique per dispatcher) and
    the connection it belongs to."""

    ike_sa_id: int
    connection: str


@dataclass(frozen=True, slots=True)
class IkeSaEstablished(Event):
    spi_i: int
    spi_r: int
    initiator: bool  # True if we initiated this IKE SA
    local_addr: Address
    remote_addr: Address
    local_id: str
    remote_id: str
    encr: EncrId
    encr_key_bits: int | None
    integ: IntegId | None
    prf: PrfId
    ke: int  # KeId value
    additional_ke: tuple[int, ...] = ()
    nat_local: bool = False  # we are behind a NAT (or faked one)
    nat_remote: bool = False  # the peer is behind a NAT
    udp_encap: bool = False  # IKE moved to port 4500
    fragmentation: bool = False  # both sides support RFC 7383


@dataclass(frozen=True, slots=True)
class IkeSaRekeyed(Event):
    """The IKE SA was replaced by a new one (RFC 7296 sec. 2.18); the old one is gone.

    ``ike_sa_id`` is the *new* SA's id; ``old_ike_sa_id`` the replaced one (its Child SAs
    moved to the new one unchanged)."""

    old_ike_sa_id: int
    spi_i: int
    spi_r: int
    old_spi_i: int
    old_spi_r: int
    encr: EncrId
    encr_key_bits: int | None
    integ: IntegId | None
    prf: PrfId
    ke: int


@dataclass(frozen=True, slots=True)
class IkeSaDeleted(Event):
    spi_i: int
    spi_r: int
    reason: str  # "deleted by peer", "deleted locally", "DPD timeout", "expired", ...
    notify: NotifyType | None = None


@dataclass(frozen=True, slots=True)
class ChildSaEstablished(Event):
    """A Child SA pair to install (inbound and outbound)."""

    child: str  # the child config name
    child_sa_id: int  # unique per dispatcher; survives nothing (a rekey gets a new id)
    protocol: ProtocolId  # ESP or AH
    mode: str  # "tunnel" | "transport"
    spi_in: int  # our SPI: the peer sends with it
    spi_out: int  # the peer's SPI: we send with it
    encr: EncrId | None  # None for AH
    encr_key_bits: int | None
    integ: IntegId | None  # None/NONE for AEAD
    esn: bool
    encr_key_in: bytes = field(repr=False)
    encr_key_out: bytes = field(repr=False)
    integ_key_in: bytes = field(repr=False)
    integ_key_out: bytes = field(repr=False)
    local_ts: tuple[TrafficSelectorRange, ...]
    remote_ts: tuple[TrafficSelectorRange, ...]
    udp_encap: bool
    local_addr: Address
    remote_addr: Address
    replay_window: int
    rekey_time: float
    life_time: float
    rekey_bytes: int
    life_bytes: int
    rekey_packets: int
    life_packets: int
    initiator: bool  # we initiated this Child SA's exchange
    tfc_padding: bool = True  # False if the peer sent ESP_TFC_PADDING_NOT_SUPPORTED


@dataclass(frozen=True, slots=True)
class ChildSaRekeyed(Event):
    """Make-before-break: ``new`` is installed first; the data plane keeps accepting
    inbound on ``old_spi_in`` until the :class:`ChildSaDeleted` for it arrives.

    Outbound: with ``outbound_after_delete`` False (we initiated the rekey, or settled a
    collision) send on ``new.spi_out`` from now on. With it True (we *answered* the rekey)
    install ``new`` for inbound at once but keep sending on the old SA until its
    ChildSaDeleted: the peer installs the new SA only when our response arrives, and
    deletes the old one right after (RFC 7296 sec. 2.8; strongSwan does the same), so
    switching earlier loses the packets that overtake the response."""

    old_child_sa_id: int
    old_spi_in: int
    old_spi_out: int
    new: ChildSaEstablished
    outbound_after_delete: bool = False


@dataclass(frozen=True, slots=True)
class ChildSaDeleted(Event):
    child: str
    child_sa_id: int
    protocol: ProtocolId
    spi_in: int
    spi_out: int
    reason: str


@dataclass(frozen=True, slots=True)
class AuthenticationFailed(Event):
    """``check`` names what failed: "psk-mismatch", "unknown-ca", "expired",
    "identity-mismatch", "bad-signature", "no-credentials", "revoked",
    "revocation-unknown" (``AuthConfig.revocation``), "peer-rejected"."""

    check: str
    reason: str
    remote_addr: Address


@dataclass(frozen=True, slots=True)
class NegotiationFailed(Event):
    """An exchange failed; ``reason`` is for people (e.g. the NO_PROPOSAL_CHOSEN
    explanation listing each transform type on both sides), ``notify`` what was sent or
    received, ``received`` tells which."""

    reason: str
    notify: NotifyType | None
    received: bool
    exchange: str  # "IKE_SA_INIT", "IKE_AUTH", "CREATE_CHILD_SA", ...
    child: str | None = None


@dataclass(frozen=True, slots=True)
class ChildSaExpiring(Event):
    """Informational: a Child SA hit its rekey limit and a rekey was started."""

    child: str
    child_sa_id: int
    cause: str  # "time", "bytes", "packets"


@dataclass(frozen=True, slots=True)
class PeerUnreachable(Event):
    """Retransmissions exhausted (RFC 7296 sec. 2.4); the DPD action follows."""

    action: str
    remote_addr: Address


@dataclass(frozen=True, slots=True)
class IkeSaAddressChanged(Event):
    """The peer's NAT mapping changed (RFC 7296 sec. 2.23, RFC 3948): an authenticated,
    new IKE message (request or response) came from ``remote_addr`` instead of
    ``old_remote_addr``. The IKE SA now sends there; the data plane should send the Child
    SAs' UDP-encapsulated ESP there too. Only emitted while the peer is behind a NAT and
    we are not (a host behind a NAT must not follow, sec. 2.23)."""

    old_remote_addr: Address
    remote_addr: Address
    local_addr: Address


@dataclass(frozen=True, slots=True)
class IkeSaRedirected(Event):
    """The gateway redirected this IKE SA (RFC 5685) and we follow: ``exchange`` is where
    ("IKE_SA_INIT", "IKE_AUTH", "INFORMATIONAL"), ``gateway`` what the REDIRECT named.
    ``address`` None: ``gateway`` is an FQDN that the engine does not resolve; the daemon
    resolves it and calls ``Dispatcher.redirect_resolved(ike_sa_id, address, now)`` (None
    when it does not resolve). Established SAs move make-before-break: the old IKE SA is
    deleted once the new one (``IkeSaEstablished`` to ``address``) is up."""

    gateway: str
    exchange: str
    address: str | None
    old_remote_addr: Address


@dataclass(frozen=True, slots=True)
class RedirectRefused(Event):
    """A REDIRECT we did not follow (``reason`` says why: outside accept_redirect_to, a
    redirect loop, an FQDN that does not resolve, the new gateway failed...). An
    established IKE SA stays as it was; one still being set up fails with it."""

    gateway: str
    exchange: str
    reason: str


@dataclass(frozen=True, slots=True)
class VirtualIpsAssigned(Event):
    """Remote access (RFC 7296 sec. 2.19). Gateway (``local=False``): the addresses leased to
    the peer ``identity`` from the connection's pools. Client (``local=True``): the CFG_REPLY
    the gateway sent: our virtual IPs, DNS servers and domains (RFC 8598), subnets behind
    the gateway (INTERNAL_IPx_SUBNET). Addresses are strings."""

    local: bool
    identity: str
    addresses: tuple[str, ...]
    dns: tuple[str, ...] = ()
    domains: tuple[str, ...] = ()
    subnets: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class VirtualIpsReleased(Event):
    """The IKE SA that held these virtual IPs is gone (not rekeyed): the gateway's leases
    went offline, the client's addresses are to be removed."""

    local: bool
    identity: str
    addresses: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AddressRequested(Event):
    """Gateway: the pools need an address from elsewhere for ``identity`` (``pool``:
    ``dhcp``) before the IKE_AUTH response can go (``ikev2.cp.AddressPending``). The
    daemon fetches it, hands it to its pools, then calls
    ``Dispatcher.address_ready(ike_sa_id, now)``; the response waits meanwhile."""

    identity: str
    pool: str


@dataclass(frozen=True, slots=True)
class EapRelay(Event):
    """Gateway, ``remote auth = eap-radius``: relay the peer's EAP Response ``message`` to
    the external authenticator (RADIUS, RFC 3579) and hand its answer back with
    ``Dispatcher.external_eap_answer(ike_sa_id, answer, now)``. The IKE_AUTH response
    waits for it; a retransmitted request does not produce a second event. ``first``: the
    conversation starts (the EAP-Identity Response; the server knows nothing of it yet).
    ``identity``: the EAP identity (RADIUS User-Name); ``peer_id``: the IKE identity."""

    identity: str
    peer_id: str
    message: bytes = field(repr=False)  # may carry a method's challenge response
    first: bool
    local_addr: Address
    remote_addr: Address
