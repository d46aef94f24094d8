"""What the engine needs to know about a connection, in swanctl.conf vocabulary.

Plain dataclasses: the daemon (``aioipsec.config``) fills them from TOML or swanctl.conf,
tests build them directly. Durations are seconds (floats), sizes are bytes/packets.
Proposal strings use strongSwan's syntax (``"aes256gcm16-prfsha256-x25519"``) and are
turned into payloads by ``ikev2.proposals``.

Secrets never live in these objects as plain attributes that get printed: the PSK is
looked up through the dispatcher's ``psk_lookup(local_id, remote_id)`` callable, private
keys are given as ``cryptography`` key objects with ``repr=False``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # the protocol only; the module loads cryptography
    from ikev2.crypto.certs import RevocationCheck

# "eap-*": the peer authenticates with EAP inside IKE_AUTH (RFC 7296 sec. 2.16); "eap" lets
# the peer choose among the methods aioipsec implements; "eap-radius" (gateway only) relays
# the EAP conversation to a RADIUS server (ikev2.eap.external).
AuthMethodName = Literal[
    "psk",
    "pubkey",
    "eap",
    "eap-md5",
    "eap-mschapv2",
    "eap-tls",
    "eap-ttls",
    "eap-dynamic",
    "eap-radius",
]
FragmentationMode = Literal["yes", "no", "accept", "force"]
# strongSwan's `unique`: what a new IKE SA between the same identities does to older
# ones: no (only an INITIAL_CONTACT from the peer replaces them, RFC 7296 sec. 2.4),
# never (not even that), replace (the new one replaces them), keep (the older stays, the
# new one is deleted).
UniqueMode = Literal["no", "never", "replace", "keep"]
# RFC 6023 childless IKE SAs, strongSwan's `childless`: allow (initiate childless only
# when no Child SA is asked for; accept a peer's childless IKE_AUTH), force (always
# initiate childless, the first Child SA follows in CREATE_CHILD_SA; fail when the peer
# does not support it; accept only childless IKE_AUTH), never (refuse it as responder).
ChildlessMode = Literal["allow", "force", "never"]
OcspMode = Literal["never", "reply", "request", "both"]  # RFC 4806, strongSwan's ocsp
StartAction = Literal["none", "start", "trap"]
CloseAction = Literal["none", "start", "trap"]
DpdAction = Literal["clear", "restart", "trap", "none"]

# A callable (local_id, remote_id) -> PSK bytes or None (no key for this pair).
PskLookup = Callable[[str, str], "bytes | None"]


@dataclass
class AuthConfig:
    """One authentication round (swanctl ``local``/``remote`` sections).

    ``id``: an identity string as swanctl writes it: ``"10.0.0.1"``, ``"fe80::1"``,
    ``"vpn.example.org"`` (FQDN), ``"user@example.org"`` (RFC822), ``"CN=a, O=b"``
    (DER_ASN1_DN), ``"keyid:#0102..."`` or ``"@#0102..."`` (KEY_ID with those octets, in
    hex; ``"keyid:text"``: the text's octets), or ``"%any"`` (remote: accept any).
    ``certs``: our certificate chain (leaf first), ``cryptography.x509.Certificate``.
    ``cacerts``: trust anchors for the peer's chain. ``private_key``: our signing key, a
    ``cryptography`` private key or an ``ikev2.crypto.auth.Signer`` (a key kept in a token).
    """

    auth: AuthMethodName = "psk"
    id: str = "%any"
    certs: list[Any] = field(default_factory=list)
    cacerts: list[Any] = field(default_factory=list)
    private_key: Any = field(default=None, repr=False)
    # Raw public keys (strongSwan's ``pubkeys``; remote rounds): the keys the peer may
    # sign with when it sends no certificate, each for the peer whose KEY_ID is its
    # fingerprint or, when ``id`` was configured, for that id. ``trusted_pubkeys``: keys
    # loaded without being named (swanctl's pubkey/), for a peer whose KEY_ID they match.
    pubkeys: list[Any] = field(default_factory=list)
    trusted_pubkeys: list[Any] = field(default_factory=list)
    # Remote rounds (strongSwan's ``cert_policy``): certificate policy OIDs (dotted) the
    # peer's end-entity certificate must list in its certificatePolicies (RFC 5280 4.2.1.4).
    cert_policy: list[str] = field(default_factory=list)
    # Remote rounds (strongSwan's ``ca_id``): a CA of the peer's validated chain (an
    # intermediate or the trust anchor) must have this identity as subject; "": any.
    ca_id: str = ""
    # "rfc7427": AUTH method 14 when the peer sent SIGNATURE_HASH_ALGORITHMS; "classic":
    # never announce/use RFC 7427 (methods 1 and 9-11 only, for old peers).
    signature_auth: Literal["rfc7427", "classic"] = "rfc7427"
    rsa_pss: bool = False  # RSA keys sign with RSASSA-PSS instead of PKCS#1 v1.5
    send_certreq: bool = True
    send_cert: Literal["always", "ifasked", "never"] = "ifasked"
    # Remote rounds: asks whether the peer's chain is revoked (CRL, OCSP), after the AUTH
    # signature verified; an ikev2.crypto.certs.RevocationCheck the daemon supplies
    # (aioipsec.revocation), as this package does no I/O. None: no revocation check.
    revocation: RevocationCheck | None = field(default=None, repr=False)
    # EAP (auth = eap...): the identity used inside EAP (swanctl's eap_id); "%any" on the
    # gateway asks the client with EAP-Identity, on the client it means "our IKE id".
    eap_id: str = "%any"
    # Local rounds (RFC 4806 "reply"): our certificate's OCSP response (DER) for a peer
    # that asked for one, or None; supplied by the daemon (aioipsec.revocation), may block
    # while it asks the responder, as ``revocation`` may.
    ocsp_staple: Callable[[Any], bytes | None] | None = field(default=None, repr=False)
    # Hash and URL certificates (RFC 7296 sec. 3.6, strongSwan's cert_uri_base). Local
    # rounds: where our end-entity certificate is published (the URL is this base and the
    # hex SHA-1 of its DER), sent instead of the certificate to a peer that announced
    # HTTP_CERT_LOOKUP_SUPPORTED. Remote rounds: fetches a URL's DER (the daemon's HTTP
    # client; may block, as ``revocation`` may); None: we cannot look certificates up.
    cert_uri_base: str = ""
    fetch_certificate: Callable[[str], bytes] | None = field(default=None, repr=False)
    # Remote rounds: the peer must be in one of these groups (strongSwan's ``groups``); the
    # EAP server proves membership (RADIUS Class, ``ikev2.tasks.ike_eap_relay``).
    groups: list[str] = field(default_factory=list)
    # EAP client (local): the identity the EAP server proves inside the method (EAP-TLS:
    # its certificate) when it is an AAA server, not the gateway; "" = the gateway's id.
    aaa_id: str = ""


@dataclass
class ChildConfig:
    """One swanctl ``children`` entry."""

    name: str
    local_ts: list[str] = field(default_factory=lambda: ["dynamic"])
    remote_ts: list[str] = field(default_factory=lambda: ["dynamic"])
    esp_proposals: list[str] = field(default_factory=lambda: ["aes256gcm16"])
    ah_proposals: list[str] = field(default_factory=list)
    mode: Literal["tunnel", "transport"] = "tunnel"
    start_action: StartAction = "none"
    close_action: CloseAction = "none"
    dpd_action: DpdAction = "clear"
    rekey_time: float = 3600.0
    life_time: float | None = None  # default: rekey_time * 1.1 (strongSwan)
    rand_time: float | None = None  # default: life_time - rekey_time
    rekey_bytes: int = 0
    life_bytes: int = 0
    rekey_packets: int = 0
    life_packets: int = 0
    replay_window: int = 1024
    tfc_padding: bool = True  # False: send ESP_TFC_PADDING_NOT_SUPPORTED

    def effective_life_time(self) -> float:
        return self.life_time if self.life_time is not None else self.rekey_time * 1.1

    def effective_rand_time(self) -> float:
        if self.rand_time is not None:
            return self.rand_time
        return max(0.0, self.effective_life_time() - self.rekey_time)


@dataclass
class IkeConfig:
    """One swanctl ``connections`` entry (IKEv2 only)."""

    name: str
    version: int = 2
    local_addrs: list[str] = field(default_factory=lambda: ["%any"])
    remote_addrs: list[str] = field(default_factory=lambda: ["%any"])
    local_port: int = 500
    remote_port: int = 500
    proposals: list[str] = field(default_factory=lambda: ["aes256gcm16-prfsha256-x25519"])
    # Fake a NAT so both sides float to 4500 and use UDP-encapsulated ESP (RFC 7296 sec.
    # 2.23, strongSwan's ``encap = yes``).
    encap: bool = False
    dpd_delay: float = 0.0  # 0: no liveness checks
    dpd_timeout: float = 150.0  # IKEv1 only in strongSwan; kept for config symmetry
    rekey_time: float = 14400.0
    reauth_time: float = 0.0
    over_time: float | None = None  # default: 10% of max(rekey_time, reauth_time)
    rand_time: float | None = None  # default: over_time
    fragmentation: FragmentationMode = "yes"
    fragment_size: int = 1280
    local: AuthConfig = field(default_factory=AuthConfig)
    remote: AuthConfig = field(default_factory=AuthConfig)
    children: list[ChildConfig] = field(default_factory=list)
    retransmit_timeout: float = 4.0
    retransmit_base: float = 1.8
    retransmit_tries: int = 5
    # RFC 9370 additional key exchanges, as strongSwan writes them in the proposal
    # string ("...-x25519-ke1_mlkem768"); nothing extra to configure here.
    send_initial_contact: bool = True
    # RFC 8784 postquantum preshared keys (strongSwan's ``ppk_id``, ``ppk_required`` and
    # ``secrets { ppk-X }``): the PPK_ID we ask for as initiator (as responder: a pattern
    # the initiator's PPK_ID must match), whether the IKE SA fails without a PPK, and the
    # PPKs by PPK_ID octets (every connection gets the whole table: a responder looks the
    # initiator's PPK_ID up before it knows the connection). Never in repr.
    ppk_id: str | None = None
    ppk_required: bool = False
    ppks: dict[bytes, bytes] = field(default_factory=dict, repr=False)
    # RFC 4806 OCSP in IKE (strongSwan's ``ocsp``): "request" sends a CERTREQ for OCSP
    # content and checks the OCSP responses the peer sends in CERT payloads; "reply" sends
    # the OCSP status of our certificate when the peer asks (``AuthConfig.ocsp_staple``);
    # "both"; "never".
    ocsp: OcspMode = "reply"
    mobike: bool = False
    childless: ChildlessMode = "allow"
    unique: UniqueMode = "no"
    # Remote access (RFC 7296 sec. 2.19): the gateway's address pools for this connection
    # (names in the daemon's pools), the client's virtual IPs to request ("0.0.0.0" and
    # "::" ask for any address of that family).
    pools: list[str] = field(default_factory=list)
    vips: list[str] = field(default_factory=list)

    def effective_over_time(self) -> float:
        if self.over_time is not None:
            return self.over_time
        return 0.1 * max(self.rekey_time, self.reauth_time)

    def effective_rand_time(self) -> float:
        return self.rand_time if self.rand_time is not None else self.effective_over_time()

    def child(self, name: str) -> ChildConfig:
        for child in self.children:
            if child.name == name:
                return child
        raise KeyError(f"connection {self.name!r} has no child {name!r}")


@dataclass
class DispatcherConfig:
    """Responder-side resource limits (strongSwan's charon defaults)."""

    cookie_threshold: int = 30  # half-open SAs (all peers) above which COOKIE is demanded
    cookie_threshold_ip: int = 3  # half-open SAs from one address above which COOKIE
    block_threshold: int = 5  # half-open SAs from one address above which we drop
    half_open_timeout: float = 30.0
    # Size of the half-open table. Not a lock-out: when it is full, a new request evicts
    # the oldest half-open SA of the most-represented prefix (ikev2.dispatcher).
    init_limit_half_open: int = 1000
    # Half-open SAs from one /24 (IPv4) or /64 (IPv6); above it the prefix's oldest goes.
    half_open_per_prefix: int = 100
    prefix_v4: int = 24
    prefix_v6: int = 64
    # Decrypted IKE fragments held by all IKE SAs together (RFC 7383 sec. 2.6; one SA
    # holds at most ikev2.fragments.DEFAULT_MAX_BYTES per direction).
    reassembly_total_bytes: int = 4 << 20
    cookie_secret_lifetime: float = 120.0
    # RFC 5685, as a client: follow a gateway's REDIRECT (strongSwan's
    # charon.follow_redirects); only to these gateways when the list is not empty
    # (addresses, networks, host names, ".suffix" for a domain: libreswan's
    # accept-redirect-to); at most redirect_limit redirects of one connection within
    # redirect_period seconds (strongSwan and libreswan: 5 in 300 s).
    follow_redirects: bool = True
    accept_redirect_to: list[str] = field(default_factory=list)
    redirect_limit: int = 5
    redirect_period: float = 300.0
