"""The configuration model: what the TOML file and swanctl.conf are validated into.

Plain dataclasses named after swanctl.conf's sections (``connections.NAME``,
``local``/``remote``, ``children.CHILD``, ``secrets``), the ``[daemon]`` table, the one
error type every loader raises (:class:`ConfigError`) and strongSwan's identity matching
rules used to pick a PSK. Nothing here reads a file.
"""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

# The defaults the command line needs live in a module of their own (fast CLI start).
from aioipsec.cluster.settings import ClusterSettings
from aioipsec.defaults import DEFAULT_CONTROL_SOCKET
from aioipsec.defaults import LOG_FORMATS as LOG_FORMATS
from aioipsec.defaults import LOG_LEVELS as LOG_LEVELS
from aioipsec.dhcp import DhcpSettings
from aioipsec.pools import PoolSettings
from aioipsec.radius.settings import RadiusSettings
from aioipsec.tokens.spec import TokenSettings
from ikev2.config import (
    AuthMethodName,
    ChildlessMode,
    CloseAction,
    DpdAction,
    FragmentationMode,
    OcspMode,
    StartAction,
    UniqueMode,
)
from ikev2.identity import Identity

# The model's choices are the engine's (``ikev2.config``), so the conversion copies them
# without a cast; the value parsers only ever produce these strings.
# pass / drop: strongSwan's shunt policies (aioipsec/runtime/shunts.py), never negotiated.
ChildMode = Literal["tunnel", "transport", "pass", "drop"]
SendCert = Literal["always", "ifasked", "never"]


# keyingtries: the wait before retry n is FIRST * 2**(n-1) seconds, at most MAX.
KEYING_RETRY_FIRST = 5.0
KEYING_RETRY_MAX = 300.0
# strongSwan's VICI protocol (swanctl --uri unix:///run/aioipsec.vici); "none" turns it off.
DEFAULT_VICI_SOCKET = "/run/aioipsec.vici"


# --------------------------------------------------------------------------- errors


class ConfigError(ValueError):
    """A configuration problem a person can fix.

    ``str(error)`` reads ``FILE:LINE: KEY.PATH: reason (what to do)``; every part is
    also available as an attribute for programs.
    """

    def __init__(
        self,
        reason: str,
        *,
        file: str | os.PathLike[str] | None = None,
        key: str | None = None,
        line: int | None = None,
        hint: str | None = None,
    ) -> None:
        self.reason = reason
        self.file = str(file) if file is not None else None
        self.key = key
        self.line = line
        self.hint = hint
        if not hasattr(self, "errors"):
            # Every problem this error stands for (ConfigErrors: more than one).
            self.errors: list[ConfigError] = [self]
        super().__init__(self._format())

    def _format(self) -> str:
        where = ""
        if self.file:
            where = self.file + (f":{self.line}" if self.line else "") + ": "
        text = where + (f"{self.key}: " if self.key else "") + self.reason
        if self.hint:
            text += f" ({self.hint})"
        return text


class ConfigErrors(ConfigError):
    """Several configuration problems found in one run (``check`` reports them all).

    Its attributes are those of the first problem; ``errors`` lists every one, and
    ``str()`` gives one ``FILE:LINE: KEY.PATH: reason`` line per problem.
    """

    def __init__(self, errors: list[ConfigError]) -> None:
        flat = [single for error in errors for single in error.errors]
        self.errors = flat
        first = flat[0]
        super().__init__(
            first.reason, file=first.file, key=first.key, line=first.line, hint=first.hint
        )

    def _format(self) -> str:
        return "\n".join(ConfigError._format(error) for error in self.errors)


def raise_collected(errors: list[ConfigError]) -> None:
    """Raise what was collected: nothing, the one error, or :class:`ConfigErrors`."""
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise ConfigErrors(errors)


# --------------------------------------------------------------------------- model


@dataclass
class DaemonSettings:
    """The ``[daemon]`` table (TOML only; swanctl.conf has no such section)."""

    control_socket: str = DEFAULT_CONTROL_SOCKET
    # Group (name or gid) allowed to use the control socket besides root; None: root only.
    control_group: str | None = None
    # VICI socket (swanctl, the vici libraries): same group and peer check; "none": off.
    # None: DEFAULT_VICI_SOCKET, or beside a non-default control_socket (vici_socket_path).
    vici_socket: str | None = None
    ike_port: int = 500
    nat_t_port: int = 4500
    tun_name: str = "ipsec0"
    # NAT-T keepalive interval while a NAT is in front of us (strongSwan: charon.keep_alive).
    keep_alive: float = 20.0
    # IKE request retransmission (strongSwan's charon.retransmit_*): the n-th retransmit
    # waits timeout * base**n seconds; after ``tries`` retransmits the peer is declared dead
    # (RFC 7296 sec. 2.4), so with the defaults a dead peer is noticed after 165 s.
    retransmit_timeout: float = 4.0
    retransmit_base: float = 1.8
    retransmit_tries: int = 5
    log_level: str = "info"
    log_format: str = "console"
    # Keyword names (as in proposals: "3des", "md5", "modp1024", "sha1", ...) that the
    # algorithm policy lets through although RFC 8247/8221 refuse them by default.
    allow_weak_algorithms: list[str] = field(default_factory=list)
    # A file holding a PSK or passphrase that group/others may read: refused unless true.
    allow_readable_secret_files: bool = False
    # RFC 5685 as a client (docs/cluster.md): follow a gateway's REDIRECT (strongSwan's
    # charon.follow_redirects); only to these gateways when not empty (libreswan's
    # accept-redirect-to); at most redirect_limit redirects within redirect_period.
    follow_redirects: bool = True
    accept_redirect_to: list[str] = field(default_factory=list)
    redirect_limit: int = 5
    redirect_period: float = 300.0
    # Fail closed (aioipsec.runtime.failclosed): nftables rules drop traffic to the loaded
    # connections' remote selectors unless it enters the tunnel, whatever the process does.
    fail_closed: bool = True
    # A clean stop (SIGTERM) keeps those rules, so nothing leaves in clear until the
    # daemon is back or `aioipsec cleanup` runs; false removes them on a clean stop.
    fail_closed_after_stop: bool = True
    # Where a client puts the DNS servers a gateway sends (aioipsec.runtime.remote_access):
    # auto (resolvectl, else resolvconf, else log), resolvectl, resolvconf or log.
    dns_hook: str = "auto"
    # Proxy ARP/NDP for the Child SAs' remote selectors on this LAN interface
    # (aioipsec.runtime.farp, strongSwan's farp plugin); None: off.
    proxy_arp_interface: str | None = None
    # Data-plane processes (aioipsec.runtime.workers): 1 is one process for everything; 2
    # moves the outbound direction (TUN -> ESP) into an encrypt worker process.
    # AIOIPSEC_WORKERS in the daemon's environment overrides it.
    workers: int = 1
    # direction: workers = 2 is the encrypt worker; sa: workers = N (2-64) starts N
    # workers each owning some Child SAs (aioipsec.runtime.steering).
    # AIOIPSEC_WORKER_STEERING overrides it.
    worker_steering: str = "direction"


def vici_socket_path(daemon: DaemonSettings) -> str | None:
    """Where the VICI socket goes: ``vici_socket`` if set ("none": no VICI socket), else
    the default, unless the control socket was moved: then beside it, with the suffix
    ``.vici``, so two daemons on one host given two control sockets never collide."""
    if daemon.vici_socket is not None:
        return None if daemon.vici_socket.lower() == "none" else daemon.vici_socket
    if daemon.control_socket != DEFAULT_CONTROL_SOCKET:
        return str(Path(daemon.control_socket).with_suffix(".vici"))
    return DEFAULT_VICI_SOCKET


@dataclass
class AuthSettings:
    """``local`` / ``remote`` of a connection: one authentication round."""

    auth: AuthMethodName = "pubkey"
    # auth = rsa/pss...: our RSA key signs with RSASSA-PSS instead of PKCS#1 v1.5.
    rsa_pss: bool = False
    id: str | None = None
    certs: list[Path] = field(default_factory=list)
    cacerts: list[Path] = field(default_factory=list)
    # Raw public keys (PEM/DER SubjectPublicKeyInfo or PKCS#1): local, the first is ours
    # (no certificate is sent); remote, the keys the peer may sign with.
    pubkeys: list[Path] = field(default_factory=list)
    # remote: certificate policy OIDs the peer's certificate must list (cert_policy).
    cert_policy: list[str] = field(default_factory=list)
    ca_id: str | None = None  # remote: a CA of the peer's chain, by subject
    # strongSwan's revocation policy for the peer's chain (aioipsec/revocation.py).
    revocation: str = "relaxed"
    eap_id: str | None = None
    aaa_id: str | None = None  # EAP client: the AAA server's identity inside the method
    groups: list[str] = field(default_factory=list)  # remote: the peer's group, one of


@dataclass
class ChildSettings:
    """``connections.NAME.children.CHILD``."""

    name: str
    local_ts: list[str] = field(default_factory=lambda: ["dynamic"])
    remote_ts: list[str] = field(default_factory=lambda: ["dynamic"])
    esp_proposals: list[str] = field(default_factory=lambda: ["aes256gcm16"])
    ah_proposals: list[str] = field(default_factory=list)
    mode: ChildMode = "tunnel"
    start_action: StartAction = "none"
    close_action: CloseAction = "none"
    dpd_action: DpdAction = "clear"
    rekey_time: float | None = None  # None: 1 h, or life_time / 1.1 (strongSwan)
    life_time: float | None = None  # None: rekey_time * 1.1
    rand_time: float | None = None  # None: life_time - rekey_time
    rekey_bytes: int | None = None
    life_bytes: int | None = None
    rekey_packets: int | None = None
    life_packets: int | None = None
    replay_window: int = 1024
    # strongSwan's updown script (command line) and hostaccess (refused until run).
    updown: str | None = None
    hostaccess: bool = False
    # strongSwan's inactivity: seconds without a packet either way before the Child SA is
    # closed (0: never); the daemon reads the SA's packet counters once a second.
    inactivity: float = 0.0
    # strongSwan's reqid (0: allocated), priority of the SA's policies (0: ours) and icmp
    # (ICMP errors from outside the selectors pass by the packet they quote), applied by
    # the data path (aioipsec/runtime/children.py, esp/spd.py).
    reqid: int = 0
    priority: int = 0
    icmp: bool = False
    # strongSwan's copy_df: outer DF copied from the inner IPv4 packet (yes), never set (no).
    copy_df: bool = True


@dataclass
class ConnectionSettings:
    """``connections.NAME``."""

    name: str
    source: str = ""
    version: int = 2
    local_addrs: list[str] = field(default_factory=lambda: ["%any"])
    remote_addrs: list[str] = field(default_factory=lambda: ["%any"])
    local_port: int = 500
    remote_port: int = 500
    proposals: list[str] = field(default_factory=lambda: ["aes256gcm16-prfsha256-x25519"])
    encap: bool = False
    dpd_delay: float = 0.0
    dpd_timeout: float = 150.0
    rekey_time: float | None = None  # None: 4 h unless only reauth_time is set
    reauth_time: float | None = None
    over_time: float | None = None
    rand_time: float | None = None
    fragmentation: FragmentationMode = "yes"
    send_certreq: bool = True
    send_cert: SendCert = "ifasked"
    # Attempts to establish the IKE SA before giving up; 0: forever (with a back-off).
    keyingtries: int = 1
    childless: ChildlessMode = "allow"  # RFC 6023
    # RFC 8784 postquantum preshared keys: the PPK_ID (secrets ppk-X) and whether the IKE
    # SA fails without a PPK.
    ppk_id: str | None = None
    ppk_required: bool = False
    # RFC 4806: send OCSP requests in CERTREQ / our OCSP status in CERT (never, reply,
    # request, both).
    ocsp: OcspMode = "reply"
    unique: UniqueMode = "no"  # strongSwan's uniqueness policy
    local: AuthSettings = field(default_factory=AuthSettings)
    remote: AuthSettings = field(default_factory=AuthSettings)
    children: dict[str, ChildSettings] = field(default_factory=dict)
    pools: list[str] = field(default_factory=list)  # gateway: names of top-level pools
    vips: list[str] = field(default_factory=list)  # client: 0.0.0.0 / :: / an address

    def keying_retry_delay(self, attempts: int) -> float | None:
        """After ``attempts`` failed tries to establish the IKE SA (the peer did not
        answer): seconds to wait before the next, or None to give up (``keyingtries``;
        0: never give up). The wait starts at 5 s and doubles up to 5 min, so a peer that
        stays down costs one retransmission cycle per few minutes, not a busy loop."""
        if self.keyingtries and attempts >= self.keyingtries:
            return None
        return float(min(KEYING_RETRY_FIRST * 2 ** max(0, attempts - 1), KEYING_RETRY_MAX))


@dataclass
class SharedSecret:
    """``secrets.ike<suffix>``: a PSK and the identities it belongs to (none: any)."""

    name: str
    ids: list[str]
    secret: bytes = field(repr=False)
    source: str = ""

    def match_score(self, local_id: str, remote_id: str) -> int:
        """0: not for this pair; higher is a better match (both ids > one id > no ids)."""
        if not self.ids:
            return 1
        local_hit = any(identity_matches(pattern, local_id) for pattern in self.ids)
        remote_hit = any(identity_matches(pattern, remote_id) for pattern in self.ids)
        if not (local_hit or remote_hit):
            return 0
        return 1 + int(local_hit) + int(remote_hit)


@dataclass
class EapSecret:
    """``secrets.eap<suffix>``: an EAP password (MS-CHAPv2) and the EAP identities it is for."""

    name: str
    ids: list[str]
    secret: bytes = field(repr=False)
    source: str = ""


@dataclass
class PrivateKey:
    """``secrets.private<suffix>`` (or rsa/ecdsa/pkcs8), or a key found next to swanctl.conf."""

    name: str
    file: Path
    key: Any = field(repr=False)  # a cryptography private key object
    source: str = ""


@dataclass
class AuthoritySettings:
    """``authorities.NAME`` (swanctl.conf): a CA certificate and its revocation sources."""

    name: str
    cacert: Path | None = None
    crl_uris: list[str] = field(default_factory=list)
    ocsp_uris: list[str] = field(default_factory=list)
    cert_uri_base: str | None = None
    source: str = ""


@dataclass
class Configuration:
    """Everything loaded from the TOML file and/or swanctl.conf, validated."""

    daemon: DaemonSettings = field(default_factory=DaemonSettings)
    # [cluster] (docs/cluster.md); None: a gateway on its own.
    cluster: ClusterSettings | None = None
    # [radius] (aioipsec/radius/settings.py): servers for remote auth = eap-radius.
    radius: RadiusSettings | None = None
    # [dhcp] (aioipsec/dhcp.py, strongSwan's charon.plugins.dhcp): for pools = dhcp.
    dhcp: DhcpSettings | None = None
    connections: dict[str, ConnectionSettings] = field(default_factory=dict)
    shared_secrets: list[SharedSecret] = field(default_factory=list)
    private_keys: list[PrivateKey] = field(default_factory=list)
    # Keys in PKCS#11 tokens and the TPM, the modules and the TCTI (config/tokens.py).
    tokens: TokenSettings = field(default_factory=TokenSettings)
    eap_secrets: list[EapSecret] = field(default_factory=list)
    # ``secrets.ppk<suffix>``: RFC 8784 postquantum preshared keys, by their PPK_IDs.
    ppk_secrets: list[SharedSecret] = field(default_factory=list)
    # Top-level ``pools`` (virtual IP address pools, aioipsec.pools.PoolSettings by name).
    pools: dict[str, PoolSettings] = field(default_factory=dict)
    # Trust anchors loaded without being named by a connection (swanctl's x509ca/ folder).
    authorities: list[Path] = field(default_factory=list)
    # swanctl.conf's `authorities` sections (their cacert is also in ``authorities``).
    authority_sections: dict[str, AuthoritySettings] = field(default_factory=dict)
    # End-entity certificates loaded without being named (swanctl's x509/ folder): a
    # local `auth = pubkey` without `certs` uses the one whose subject or SAN is its id.
    certificates: list[Path] = field(default_factory=list)
    # Raw public keys loaded without being named (swanctl's pubkey/ folder): trusted for a
    # peer whose id is the key's KEY_ID, as strongSwan trusts them.
    public_keys: list[Path] = field(default_factory=list)
    # CRL files (swanctl's x509crl/) and trusted OCSP signer certificates (x509ocsp/),
    # used by the revocation checks (aioipsec/revocation.py).
    crls: list[Path] = field(default_factory=list)
    ocsp_signers: list[Path] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    # Things worth a log line at start (e.g. a PSK in a world-readable file).
    warnings: list[str] = field(default_factory=list)

    def psk_lookup(self, local_id: str, remote_id: str) -> bytes | None:
        """The PSK for this pair of identities, strongSwan's rules: the secret whose
        ids match both identities wins over one matching one, over one with no ids."""
        best: tuple[int, SharedSecret] | None = None
        for secret in self.shared_secrets:
            score = secret.match_score(str(local_id), str(remote_id))
            if score and (best is None or score > best[0]):
                best = (score, secret)
        return best[1].secret if best else None

    def eap_lookup(self, identity: str) -> str | None:
        """The EAP password of ``identity``: a secret naming it wins over one with no ids
        (strongSwan's matching); MS-CHAPv2 needs it as text (UTF-8)."""
        fallback: EapSecret | None = None
        for secret in self.eap_secrets:
            if any(identity_matches(pattern, identity) for pattern in secret.ids):
                return secret.secret.decode("utf-8", "replace")
            if not secret.ids and fallback is None:
                fallback = secret
        return fallback.secret.decode("utf-8", "replace") if fallback else None


# --------------------------------------------------------------------------- identities

_ID_TYPE_PREFIXES = ("fqdn:", "email:", "rfc822:", "ipv4:", "ipv6:", "asn1dn:", "userfqdn:")


def normalise_identity(text: str) -> str:
    """Identity text in a form two spellings of one identity share.

    ``@moon.example.org`` (strongSwan: an FQDN that is never resolved), ``fqdn:moon...``
    and ``moon.example.org`` compare equal; DNs lose the spaces after separators.
    Case is ignored, as strongSwan does for FQDN and RFC822 identities.
    """
    text = text.strip()
    lowered = text.lower()
    for prefix in _ID_TYPE_PREFIXES:
        if lowered.startswith(prefix):
            text = text[len(prefix) :]
            break
    if text.startswith("@#"):
        text = "keyid:" + text[2:]
    elif text.startswith("@"):
        text = text[1:]
    if "=" in text:
        text = re.sub(r"\s*([,/])\s*", r"\1", text)
    return text.lower()


def identity_matches(pattern: str, identity: str) -> bool:
    """``pattern`` as written in a config (may be ``%any`` or contain ``*``).

    Identities are compared as ``ikev2.identity`` parses them (type and value: a DN in
    any spacing, an IPv6 address in any notation); text that does not parse as an
    identity is compared as normalised text."""
    if pattern.strip() in ("%any", "%any6", "*"):
        return True
    try:
        return Identity.parse(pattern).matches(Identity.parse(identity))
    except ValueError:
        pass
    pattern_n, identity_n = normalise_identity(pattern), normalise_identity(identity)
    if "*" in pattern_n:
        return fnmatch.fnmatchcase(identity_n, pattern_n)
    return pattern_n == identity_n
