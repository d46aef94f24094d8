"""Configuration: TOML (``-c aioipsec.toml``) and strongSwan's swanctl.conf, one model.

Both inputs use **swanctl.conf's vocabulary** (``connections``, ``children``, ``local``,
``remote``, ``secrets``), so a strongSwan user recognises every key. A TOML file adds a
``[daemon]`` table (control socket, ports, TUN name, logging). The loaders validate
everything up front and raise :class:`ConfigError` naming the file, the key path
(``connections.site.children.net.esp_proposals``), the line and what to do about it.
A key we do not know, or a strongSwan key we do not implement, is an error: nothing is
silently ignored.

Public API::

    configuration = load_configuration(toml_path=None, swanctl_path=None)
    engine_configs = to_engine_configs(configuration)        # list[ikev2.config.IkeConfig]
    configuration.psk_lookup(local_id, remote_id) -> bytes | None
    DaemonOptions(...)                                      # what `aioipsec daemon` passes on

Secrets (PSKs, private keys and their passphrases) live only in :class:`SharedSecret`
and :class:`PrivateKey` objects whose ``repr`` hides them; they are never logged and
never appear in :func:`connection_listing` (what the control socket's ``conns`` returns).
"""

from __future__ import annotations

import base64
import fnmatch
import ipaddress
import os
import re
import socket
import stat
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "AuthSettings",
    "ChildSettings",
    "ConfigError",
    "Configuration",
    "ConnectionSettings",
    "DaemonOptions",
    "DaemonSettings",
    "PrivateKey",
    "SharedSecret",
    "connection_listing",
    "load_configuration",
    "load_toml",
    "to_engine_configs",
]

DEFAULT_CONTROL_SOCKET = "/run/aioipsec.sock"
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("console", "json")


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
        super().__init__(self._format())

    def _format(self) -> str:
        where = ""
        if self.file:
            where = self.file + (f":{self.line}" if self.line else "") + ": "
        text = where + (f"{self.key}: " if self.key else "") + self.reason
        if self.hint:
            text += f" ({self.hint})"
        return text


# --------------------------------------------------------------------------- model


@dataclass
class DaemonSettings:
    """The ``[daemon]`` table (TOML only; swanctl.conf has no such section)."""

    control_socket: str = DEFAULT_CONTROL_SOCKET
    # Group (name or gid) allowed to use the control socket besides root; None: root only.
    control_group: str | None = None
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


@dataclass
class AuthSettings:
    """``local`` / ``remote`` of a connection: one authentication round."""

    auth: str = "pubkey"
    # auth = rsa/pss...: our RSA key signs with RSASSA-PSS instead of PKCS#1 v1.5.
    rsa_pss: bool = False
    id: str | None = None
    certs: list[Path] = field(default_factory=list)
    cacerts: list[Path] = field(default_factory=list)


@dataclass
class ChildSettings:
    """``connections.NAME.children.CHILD``."""

    name: str
    local_ts: list[str] = field(default_factory=lambda: ["dynamic"])
    remote_ts: list[str] = field(default_factory=lambda: ["dynamic"])
    esp_proposals: list[str] = field(default_factory=lambda: ["aes256gcm16"])
    ah_proposals: list[str] = field(default_factory=list)
    mode: str = "tunnel"
    start_action: str = "none"
    close_action: str = "none"
    dpd_action: str = "clear"
    rekey_time: float | None = None  # None: 1 h, or life_time / 1.1 (strongSwan)
    life_time: float | None = None  # None: rekey_time * 1.1
    rand_time: float | None = None  # None: life_time - rekey_time
    rekey_bytes: int | None = None
    life_bytes: int | None = None
    rekey_packets: int | None = None
    life_packets: int | None = None
    replay_window: int = 1024


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
    fragmentation: str = "yes"
    send_certreq: bool = True
    send_cert: str = "ifasked"
    local: AuthSettings = field(default_factory=AuthSettings)
    remote: AuthSettings = field(default_factory=AuthSettings)
    children: dict[str, ChildSettings] = field(default_factory=dict)


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
class PrivateKey:
    """``secrets.private<suffix>`` (or rsa/ecdsa/pkcs8), or a key found next to swanctl.conf."""

    name: str
    file: Path
    key: Any = field(repr=False)  # a cryptography private key object
    source: str = ""


@dataclass
class Configuration:
    """Everything loaded from the TOML file and/or swanctl.conf, validated."""

    daemon: DaemonSettings = field(default_factory=DaemonSettings)
    connections: dict[str, ConnectionSettings] = field(default_factory=dict)
    shared_secrets: list[SharedSecret] = field(default_factory=list)
    private_keys: list[PrivateKey] = field(default_factory=list)
    # Trust anchors loaded without being named by a connection (swanctl's x509ca/ folder).
    authorities: list[Path] = field(default_factory=list)
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
        from ikev2.identity import Identity

        return Identity.parse(pattern).matches(Identity.parse(identity))
    except (ImportError, ValueError):
        pass
    pattern_n, identity_n = normalise_identity(pattern), normalise_identity(identity)
    if "*" in pattern_n:
        return fnmatch.fnmatchcase(identity_n, pattern_n)
    return pattern_n == identity_n


# --------------------------------------------------------------------------- value parsers

# A source of raw configuration data: a nested mapping whose leaves are TOML values or
# (swanctl.conf) strings, plus a way to find the line of a key path.
Locator = Callable[[tuple[str, ...]], tuple[str, int | None]]


class _ValueProblem(Exception):
    """Raised by a value parser; the walker turns it into a ConfigError with location."""

    def __init__(self, reason: str, hint: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.hint = hint


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        return str(value)
    raise _ValueProblem(f"expected a single value, got {type(value).__name__}")


def parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = _as_text(value).lower()
    if text in ("yes", "true", "enabled", "1"):
        return True
    if text in ("no", "false", "disabled", "0"):
        return False
    raise _ValueProblem(f"{value!r} is not a yes/no value", "write yes or no")


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: Any) -> float:
    """Seconds; strings as strongSwan writes them: ``90``, ``90s``, ``30m``, ``4h``, ``1d``."""
    if isinstance(value, bool):
        raise _ValueProblem(f"{value!r} is not a duration", "write e.g. 3600, 30m, 4h or 1d")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdSMHD]?)\s*", str(value))
        if not match:
            raise _ValueProblem(f"{value!r} is not a duration", "write e.g. 3600, 30m, 4h or 1d")
        seconds = float(match.group(1)) * _DURATION_UNITS.get(match.group(2).lower(), 1)
    if seconds < 0:
        raise _ValueProblem("a duration cannot be negative")
    return seconds


_BYTE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def parse_count(value: Any) -> int:
    """A byte or packet count; strongSwan's binary suffixes ``k``, ``M``, ``G`` allowed."""
    if isinstance(value, bool):
        raise _ValueProblem(f"{value!r} is not a number", "write e.g. 500000000 or 500M")
    if isinstance(value, int):
        number = value
    else:
        match = re.fullmatch(r"\s*(\d+)\s*([kKmMgG]?)\s*", str(value))
        if not match:
            raise _ValueProblem(f"{value!r} is not a number", "write e.g. 500000000 or 500M")
        number = int(match.group(1)) * _BYTE_UNITS[match.group(2).lower()]
    if number < 0:
        raise _ValueProblem("a count cannot be negative")
    return number


def _int_range(low: int, high: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, bool):
            raise _ValueProblem(f"{value!r} is not a number")
        try:
            number = int(value) if isinstance(value, int) else int(_as_text(value), 0)
        except ValueError:
            raise _ValueProblem(f"{value!r} is not a number") from None
        if not low <= number <= high:
            raise _ValueProblem(f"{number} is out of range", f"use {low}..{high}")
        return number

    return parse


parse_port = _int_range(0, 65535)


def _positive_duration(value: Any) -> float:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise _ValueProblem("must be more than 0 s", "write e.g. 4s or 0.5s")
    return seconds


def _retransmit_base(value: Any) -> float:
    """The back-off factor: a number, at least 1 (strongSwan's charon.retransmit_base)."""
    if isinstance(value, bool):
        raise _ValueProblem(f"{value!r} is not a number", "write e.g. 1.8")
    try:
        base = float(value) if isinstance(value, int | float) else float(_as_text(value))
    except ValueError:
        raise _ValueProblem(f"{value!r} is not a number", "write e.g. 1.8") from None
    if not 1.0 <= base <= 10.0:
        raise _ValueProblem(f"{base} is out of range", "use 1.0..10.0 (strongSwan: 1.8)")
    return base


def parse_string(value: Any) -> str:
    text = _as_text(value)
    if not text:
        raise _ValueProblem("empty value")
    return text


def parse_list(value: Any) -> list[str]:
    """A TOML array of strings, or a comma-separated string as swanctl.conf writes it."""
    if isinstance(value, list):
        items: list[str] = []
        for item in value:
            items.extend(parse_list(item))
        return items
    text = _as_text(value)
    return [part.strip() for part in text.split(",") if part.strip()]


def _choice(mapping: Mapping[str, str]) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = _as_text(value).lower()
        if text not in mapping:
            raise _ValueProblem(
                f"{value!r} is not one of {', '.join(sorted(mapping))}",
                f"write one of: {', '.join(sorted(mapping))}",
            )
        return mapping[text]

    return parse


def _ip_ok(text: str) -> bool:
    """An address, a subnet or an address range (``a-b``)."""
    if "-" in text and "/" not in text:
        first, _, last = text.partition("-")
        try:
            ipaddress.ip_address(first.strip())
            ipaddress.ip_address(last.strip())
            return True
        except ValueError:
            return False
    try:
        ipaddress.ip_network(text, strict=False)
        return True
    except ValueError:
        return False


def _address_ok(text: str) -> bool:
    if text in ("%any", "%any4", "%any6") or _ip_ok(text):
        return True
    # A DNS name: resolved when the engine configuration is built (load and reload).
    return bool(re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?", text))


def parse_addrs(value: Any) -> list[str]:
    addrs = parse_list(value)
    for addr in addrs:
        if not _address_ok(addr):
            raise _ValueProblem(
                f"{addr!r} is not an address, subnet, range, DNS name or %any",
                "write e.g. 192.0.2.1, 2001:db8::1, 10.0.0.0/24, vpn.example.org or %any",
            )
    return addrs or ["%any"]


_TS_RE = re.compile(r"^(?P<net>[^\[\]]+?)?\s*(?:\[(?P<proto>[^/\]]*)(?:/(?P<port>[^\]]*))?\])?$")


def parse_traffic_selectors(value: Any) -> list[str]:
    """``10.1.0.0/16``, ``10.1.0.1-10.1.0.9``, ``dynamic``, ``0.0.0.0/0[tcp/443]``."""
    selectors = parse_list(value)
    for selector in selectors:
        match = _TS_RE.match(selector)
        net = (match.group("net") or "").strip() if match else ""
        if not match or not net:
            raise _ValueProblem(
                f"{selector!r} is not a traffic selector",
                "write a subnet (10.1.0.0/16), a range (10.1.0.1-10.1.0.9) or dynamic, "
                "optionally followed by [protocol/port]",
            )
        if net != "dynamic" and not _ip_ok(net):
            raise _ValueProblem(
                f"{selector!r} is not a traffic selector: {net!r} is not a subnet, an "
                "address range or 'dynamic'",
                "write e.g. 10.1.0.0/16",
            )
        if "/" in net:
            try:
                ipaddress.ip_network(net, strict=True)
            except ValueError:
                raise _ValueProblem(
                    f"{net!r} has host bits set",
                    f"write {ipaddress.ip_network(net, strict=False)}",
                ) from None
    return selectors or ["dynamic"]


def parse_proposal_list(value: Any) -> list[str]:
    """Proposal strings; their keywords are checked later, with the algorithm policy."""
    proposals = parse_list(value)
    if not proposals:
        raise _ValueProblem("no proposal given", "write e.g. aes256gcm16-prfsha256-x25519")
    return proposals


def check_proposal_syntax(
    proposals: list[str], protocol: str, allow_weak: Iterable[str] = ()
) -> list[str]:
    """Validate strongSwan proposal strings through ``ikev2.proposals`` and the algorithm
    policy of ``ikev2.policy``; return the policy's warnings (e.g. SHA-1 accepted).

    ``protocol``: "ike", "esp" or "ah". Raises ``_ValueProblem`` naming the keyword.
    """
    from ikev2.enums import ProtocolId
    from ikev2.policy import AlgorithmPolicy, WeakAlgorithmError
    from ikev2.proposals import ProposalSyntaxError, parse_proposals

    protocol_id = {"ike": ProtocolId.IKE, "esp": ProtocolId.ESP, "ah": ProtocolId.AH}[protocol]
    parsed: list[Any] = []
    for proposal in proposals:
        try:
            parsed.extend(parse_proposals(proposal, protocol_id))
        except ProposalSyntaxError as error:
            raise _ValueProblem(
                f"{proposal!r}: {error}",
                "write strongSwan proposal keywords joined by '-', "
                + (
                    "e.g. aes256gcm16-prfsha256-x25519" if protocol == "ike" else "e.g. aes256gcm16"
                ),
            ) from None
    try:
        policy = AlgorithmPolicy(allow_weak=frozenset(allow_weak))
    except ValueError as error:
        raise _ValueProblem(f"[daemon] allow_weak_algorithms: {error}") from None
    try:
        return list(policy.check_proposals(parsed) or [])
    except WeakAlgorithmError as error:
        raise _ValueProblem(str(error)) from None


# --------------------------------------------------------------------------- key tables

# Keys swanctl.conf knows that aioipsec accepts only with the value it implements anyway
# (e.g. `mobike = no`, present in most strongSwan test scenarios): any other value is an
# error naming the key.
_FIXED_CONNECTION_KEYS = {"mobike": "no", "aggressive": "no"}
_FIXED_CHILD_KEYS = {"hostaccess": "no", "ipcomp": "no", "policies": "yes", "sha256_96": "no"}

# Keys swanctl.conf knows and aioipsec does not implement (error: "not supported").
_UNSUPPORTED_CONNECTION_KEYS = {
    "vips", "pull", "dscp", "childless", "ocsp", "ppk_id", "ppk_required", "keyingtries",
    "unique", "pools", "if_id_in", "if_id_out", "mediation", "mediated_by", "mediation_peer",
}  # fmt: skip
_UNSUPPORTED_AUTH_KEYS = {
    "round", "pubkeys", "eap_id", "aaa_id", "xauth_id", "groups", "cert_policy", "ca_id",
    "revocation",
}  # fmt: skip
_UNSUPPORTED_CHILD_KEYS = {
    "rand_bytes", "rand_packets", "updown", "policies_fwd_out", "inactivity", "reqid",
    "priority", "interface", "mark_in", "mark_in_sa", "mark_out", "set_mark_in",
    "set_mark_out", "if_id_in", "if_id_out", "label", "label_mode", "tfc_padding",
    "per_cpu_sas", "hw_offload", "copy_df", "copy_ecn", "copy_dscp", "icmp",
}  # fmt: skip

_ACTIONS = {"none": "none", "clear": "none", "start": "start", "restart": "start",
            "trap": "trap", "route": "trap"}  # fmt: skip
_DPD_ACTIONS = {"clear": "clear", "none": "clear", "restart": "restart", "start": "restart",
                "trap": "trap", "route": "trap"}  # fmt: skip

_CONNECTION_KEYS: dict[str, Callable[[Any], Any]] = {
    "version": _int_range(0, 2),
    "local_addrs": parse_addrs,
    "remote_addrs": parse_addrs,
    "local_port": parse_port,
    "remote_port": parse_port,
    "proposals": parse_proposal_list,
    "encap": parse_bool,
    "dpd_delay": parse_duration,
    "dpd_timeout": parse_duration,
    "rekey_time": parse_duration,
    "reauth_time": parse_duration,
    "over_time": parse_duration,
    "rand_time": parse_duration,
    "fragmentation": _choice({"yes": "yes", "no": "no", "accept": "accept", "force": "force"}),
    "send_certreq": parse_bool,
    "send_cert": _choice({"always": "always", "ifasked": "ifasked", "never": "never"}),
}

# strongSwan's auth = values for signatures (swanctl.conf, "auth"): a key type, optionally
# "ike:"-prefixed (a constraint for the IKE signature only) and followed by key strengths and
# hash names, e.g. "rsa/pss-sha256", "ike:ecdsa-384-sha384", "pubkey-sha256-sha512".
_SIGNATURE_KEY_TYPES = ("pubkey", "rsa", "rsa/pss", "ecdsa", "ed25519", "ed448")
_SIGNATURE_HASHES = ("sha1", "sha256", "sha384", "sha512", "identity")


def parse_auth(value: Any) -> tuple[str, bool]:
    """An ``auth`` value as strongSwan accepts it: ``("psk" | "pubkey", rsa_pss)``.

    ``rsa/pss`` (in any position, e.g. ``rsa/pss-sha256`` or ``ike:rsa/pss``) makes our RSA
    key sign with RSASSA-PSS (RFC 8017 sec. 8.1, RFC 7427). Key strengths and hash names
    are checked for syntax; as constraints on the peer's chain they are not enforced.
    """
    text = _as_text(value).lower()
    if text == "psk":
        return "psk", False
    hint = "write psk, pubkey, rsa, rsa/pss, ecdsa, ed25519 or ed448 (e.g. rsa/pss-sha256)"
    tokens = text.split("-")
    if not text or tokens[0].removeprefix("ike:") not in _SIGNATURE_KEY_TYPES:
        raise _ValueProblem(f"{value!r} is not a supported auth method", hint)
    rsa_pss = False
    for token in tokens:
        bare = token.removeprefix("ike:")
        if bare == "rsa/pss":
            rsa_pss = True
        elif (
            bare not in _SIGNATURE_KEY_TYPES
            and bare not in _SIGNATURE_HASHES
            and not (bare.isdigit() and token == bare)
        ):
            raise _ValueProblem(f"{token!r} in auth = {text!r} is not understood", hint)
    return "pubkey", rsa_pss


_AUTH_KEYS: dict[str, Callable[[Any], Any]] = {
    "auth": lambda value: parse_auth(value)[0],
    "id": parse_string,
    "certs": parse_list,
    "cacerts": parse_list,
}

_CHILD_KEYS: dict[str, Callable[[Any], Any]] = {
    "local_ts": parse_traffic_selectors,
    "remote_ts": parse_traffic_selectors,
    "esp_proposals": parse_proposal_list,
    "ah_proposals": parse_proposal_list,
    "mode": _choice({"tunnel": "tunnel", "transport": "transport"}),
    "start_action": _choice(_ACTIONS),
    "close_action": _choice(_ACTIONS),
    "dpd_action": _choice(_DPD_ACTIONS),
    "rekey_time": parse_duration,
    "life_time": parse_duration,
    "rand_time": parse_duration,
    "rekey_bytes": parse_count,
    "life_bytes": parse_count,
    "rekey_packets": parse_count,
    "life_packets": parse_count,
    "replay_window": _int_range(0, 1 << 20),
}

_DAEMON_KEYS: dict[str, Callable[[Any], Any]] = {
    "control_socket": parse_string,
    "control_group": parse_string,
    "ike_port": parse_port,
    "nat_t_port": parse_port,
    "tun_name": parse_string,
    "keep_alive": parse_duration,
    "retransmit_timeout": _positive_duration,
    "retransmit_base": _retransmit_base,
    "retransmit_tries": _int_range(1, 100),
    "log_level": _choice({level: level for level in LOG_LEVELS}),
    "log_format": _choice({fmt: fmt for fmt in LOG_FORMATS}),
    "allow_weak_algorithms": parse_list,
}

_UNSUPPORTED_SECRET_TYPES = ("eap", "xauth", "ntlm", "ppk", "pkcs12", "token")
_PRIVATE_KEY_TYPES = ("private", "rsa", "ecdsa", "pkcs8")

# Where swanctl looks for files named relatively (relative to swanctl.conf's folder).
SWANCTL_FOLDERS = {
    "certs": "x509",
    "cacerts": "x509ca",
    "private": "private",
    "rsa": "rsa",
    "ecdsa": "ecdsa",
    "pkcs8": "pkcs8",
}


# --------------------------------------------------------------------------- the walker


@dataclass
class RawSource:
    """One input file, already parsed into nested dicts, with its line locator."""

    path: str
    data: dict[str, Any]
    # key path -> (file, line): the file differs from ``path`` for swanctl.conf includes.
    locate: Callable[[tuple[str, ...]], tuple[str, int | None]]
    kind: str  # "toml" or "swanctl"
    allow_weak: tuple[str, ...] = ()
    warnings: list[str] = field(default_factory=list)

    def error(self, key_path: tuple[str, ...], reason: str, hint: str | None = None) -> ConfigError:
        file, line = self.locate(key_path) if key_path else (self.path, None)
        return ConfigError(
            reason,
            file=file,
            key=".".join(key_path) if key_path else None,
            line=line,
            hint=hint,
        )

    def check_proposals(
        self, key_path: tuple[str, ...], proposals: list[str], protocol: str
    ) -> None:
        try:
            for warning in check_proposal_syntax(proposals, protocol, self.allow_weak):
                self.warnings.append(f"{'.'.join(key_path)}: {warning}")
        except _ValueProblem as problem:
            raise self.error(key_path, problem.reason, problem.hint) from None

    def resolve(self, text: str, folder: str | None) -> Path:
        """A file named in the config: absolute, or relative to this file's folder
        (swanctl.conf: to the swanctl sub-folder for its kind, like swanctl does)."""
        path = Path(text).expanduser()
        if path.is_absolute():
            return path
        base = Path(self.path).resolve().parent
        if self.kind == "swanctl" and folder:
            candidate = base / folder / path
            if candidate.exists() or not (base / path).exists():
                return candidate
        return base / path


def _expect_table(
    source: RawSource, value: Any, key_path: tuple[str, ...], what: str
) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise source.error(key_path, f"must be a section ({what}), not a value")
    return value


def _apply_keys(
    source: RawSource,
    table: Mapping[str, Any],
    key_path: tuple[str, ...],
    parsers: Mapping[str, Callable[[Any], Any]],
    target: Any,
    *,
    fixed: Mapping[str, str] | None = None,
    unsupported: Iterable[str] = (),
    skip: Iterable[str] = (),
    section_name: str,
) -> None:
    unsupported = set(unsupported)
    skip = set(skip)
    for key, value in table.items():
        path = (*key_path, key)
        if key in skip:
            continue
        if fixed and key in fixed:
            try:
                ok = parse_bool(value) == parse_bool(fixed[key])
            except _ValueProblem:
                ok = False
            if not ok:
                raise source.error(
                    path,
                    f"aioipsec supports only {key} = {fixed[key]}",
                    f"remove the key or set it to {fixed[key]}",
                )
            continue
        if key in unsupported:
            raise source.error(
                path,
                f"strongSwan's {key!r} is not supported by aioipsec",
                "remove it; see docs/configuration.md for the keys aioipsec implements",
            )
        parser = parsers.get(key)
        if parser is None:
            known = ", ".join(sorted(parsers))
            raise source.error(
                path, f"unknown key {key!r} in {section_name}", f"known keys: {known}"
            )
        if isinstance(value, dict):
            raise source.error(path, "expected a value, found a section")
        if value is None:
            # swanctl.conf's `key =` with nothing after it: the key stays at its default.
            continue
        try:
            parsed = parser(value)
        except _ValueProblem as problem:
            raise source.error(path, problem.reason, problem.hint) from None
        setattr(target, key, parsed)


def _split_suffix(name: str, prefixes: Iterable[str]) -> str | None:
    for prefix in prefixes:
        if name.startswith(prefix):
            return prefix
    return None


def _build_connection(source: RawSource, name: str, table: Any) -> ConnectionSettings:
    key_path = ("connections", name)
    table = _expect_table(source, table, key_path, "a connection")
    connection = ConnectionSettings(name=name, source=source.path)
    _apply_keys(
        source,
        table,
        key_path,
        _CONNECTION_KEYS,
        connection,
        fixed=_FIXED_CONNECTION_KEYS,
        unsupported=_UNSUPPORTED_CONNECTION_KEYS,
        skip={k for k, v in table.items() if isinstance(v, dict)},
        section_name="a connection",
    )
    if "proposals" in table:
        source.check_proposals((*key_path, "proposals"), connection.proposals, "ike")
    if connection.version == 1:
        raise source.error(
            (*key_path, "version"), "IKEv1 is not supported", "use version = 2 (or 0: any)"
        )
    connection.version = 2
    for key, value in table.items():
        if not isinstance(value, dict):
            continue
        path = (*key_path, key)
        if key in ("local", "remote"):
            auth = AuthSettings()
            _apply_keys(
                source,
                value,
                path,
                _AUTH_KEYS,
                auth,
                unsupported=_UNSUPPORTED_AUTH_KEYS,
                section_name=f"the {key} section",
            )
            if "auth" in value:
                auth.rsa_pss = parse_auth(value["auth"])[1]
            if key == "local" and auth.cacerts:
                raise source.error(
                    (*path, "cacerts"),
                    "cacerts belongs in the remote section",
                    "move it to remote: the CA certificates that vouch for the peer",
                )
            auth.certs = [source.resolve(c, SWANCTL_FOLDERS["certs"]) for c in auth.certs]
            auth.cacerts = [source.resolve(c, SWANCTL_FOLDERS["cacerts"]) for c in auth.cacerts]
            setattr(connection, key, auth)
        elif key.startswith(("local", "remote")):
            raise source.error(
                path,
                "more than one authentication round is not supported",
                "use a single 'local' and 'remote' section",
            )
        elif key == "children":
            for child_name, child_table in value.items():
                connection.children[child_name] = _build_child(
                    source, (*path, child_name), child_name, child_table
                )
        else:
            raise source.error(
                path,
                f"unknown section {key!r} in a connection",
                "a connection has the sections local, remote and children",
            )
    _check_connection(source, connection, key_path, table)
    return connection


def _build_child(
    source: RawSource, key_path: tuple[str, ...], name: str, table: Any
) -> ChildSettings:
    table = _expect_table(source, table, key_path, "a child SA")
    child = ChildSettings(name=name)
    _apply_keys(
        source,
        table,
        key_path,
        _CHILD_KEYS,
        child,
        fixed=_FIXED_CHILD_KEYS,
        unsupported=_UNSUPPORTED_CHILD_KEYS,
        section_name="a child SA",
    )
    for key in ("esp_proposals", "ah_proposals"):
        if key in table and table[key] is not None:
            source.check_proposals((*key_path, key), getattr(child, key), key.split("_")[0])
    if child.esp_proposals and "esp_proposals" in table and child.ah_proposals:
        raise source.error(
            (*key_path, "ah_proposals"),
            "a child SA uses ESP or AH, not both",
            "remove esp_proposals or ah_proposals",
        )
    if (
        child.rekey_time is not None
        and child.life_time is not None
        and child.life_time < child.rekey_time
    ):
        raise source.error(
            (*key_path, "life_time"),
            f"life_time ({child.life_time:g}s) is shorter than rekey_time ({child.rekey_time:g}s)",
            "life_time must be at least rekey_time: the SA must outlive its rekeying",
        )
    return child


def _check_connection(
    source: RawSource,
    connection: ConnectionSettings,
    key_path: tuple[str, ...],
    table: Mapping[str, Any],
) -> None:
    if not connection.children:
        raise source.error(
            key_path,
            "the connection has no children",
            "add a children section with at least one child SA (local_ts/remote_ts)",
        )
    for side in ("local", "remote"):
        if side not in table:
            raise source.error(
                key_path,
                f"the connection has no {side} section",
                f"add {side} with auth = psk or pubkey and an id",
            )
    if connection.local.auth == "pubkey" and not connection.local.certs:
        raise source.error(
            (*key_path, "local"),
            "auth = pubkey needs our certificate",
            "add certs = <file> (PEM or DER), or use auth = psk",
        )


def _build_secrets(source: RawSource, table: Any, configuration: Configuration) -> None:
    table = _expect_table(source, table, ("secrets",), "secrets")
    for name, value in table.items():
        path = ("secrets", name)
        value = _expect_table(source, value, path, "one secret")
        kind = _split_suffix(name, ("ike", *_PRIVATE_KEY_TYPES, *_UNSUPPORTED_SECRET_TYPES))
        if kind is None:
            raise source.error(
                path,
                f"unknown secret type {name!r}",
                "name it ike<suffix> (a PSK) or private<suffix> (a private key file)",
            )
        if kind in _UNSUPPORTED_SECRET_TYPES:
            raise source.error(path, f"{kind} secrets are not supported by aioipsec")
        if kind == "ike":
            configuration.shared_secrets.append(_build_shared_secret(source, name, value))
        else:
            configuration.private_keys.append(_build_private_key(source, name, kind, value))


def _build_shared_secret(source: RawSource, name: str, table: dict[str, Any]) -> SharedSecret:
    ids: list[str] = []
    secret: bytes | None = None
    for key, value in table.items():
        path = ("secrets", name, key)
        if key.startswith("id"):
            try:
                # One identity per value: a DN holds commas, so strings are never split.
                values = value if isinstance(value, list) else [value]
                ids.extend(_as_text(item) for item in values)
            except _ValueProblem as problem:
                raise source.error(path, problem.reason) from None
        elif key == "secret":
            try:
                secret = decode_secret(_as_text(value))
            except _ValueProblem as problem:
                raise source.error(path, problem.reason, problem.hint) from None
        else:
            raise source.error(
                path, f"unknown key {key!r} in an ike secret", "known keys: secret, id<suffix>"
            )
    if not secret:
        raise source.error(
            ("secrets", name), "the secret has no (or an empty) secret value", "add secret = ..."
        )
    return SharedSecret(name=name, ids=ids, secret=secret, source=source.path)


def decode_secret(text: str) -> bytes:
    """strongSwan's notation: ``0x...`` hex, ``0s...`` base64, anything else as UTF-8."""
    if text[:2].lower() == "0x":
        try:
            return bytes.fromhex(text[2:])
        except ValueError:
            raise _ValueProblem("the 0x secret is not valid hex") from None
    if text[:2].lower() == "0s":
        try:
            return base64.b64decode(text[2:], validate=True)
        except ValueError:  # binascii.Error, or a non-ASCII character (a plain ValueError)
            raise _ValueProblem("the 0s secret is not valid base64") from None
    return text.encode()


def _build_private_key(
    source: RawSource, name: str, kind: str, table: dict[str, Any]
) -> PrivateKey:
    file_text: str | None = None
    passphrase: bytes | None = None
    for key, value in table.items():
        path = ("secrets", name, key)
        if key == "file":
            file_text = _as_text(value)
        elif key == "secret":
            passphrase = _as_text(value).encode()
        else:
            raise source.error(path, f"unknown key {key!r} in a private key secret",
                               "known keys: file, secret")  # fmt: skip
    if not file_text:
        raise source.error(("secrets", name), "no file given", "add file = <key file>")
    path = source.resolve(file_text, SWANCTL_FOLDERS.get(kind))
    try:
        key_object = load_private_key(path, passphrase)
    except ConfigError as error:
        raise source.error(("secrets", name, "file"), error.reason, error.hint) from None
    return PrivateKey(name=name, file=path, key=key_object, source=source.path)


def _build_daemon(source: RawSource, table: Any) -> DaemonSettings:
    table = _expect_table(source, table, ("daemon",), "daemon settings")
    settings = DaemonSettings()
    _apply_keys(source, table, ("daemon",), _DAEMON_KEYS, settings, section_name="[daemon]")
    return settings


def build_configuration(
    source: RawSource, configuration: Configuration | None = None
) -> Configuration:
    """Validate one raw source into ``configuration`` (a new one when None)."""
    configuration = configuration or Configuration()
    configuration.sources.append(source.path)
    allowed = ("daemon", "connections", "secrets") if source.kind == "toml" else (
        "connections", "secrets")  # fmt: skip
    for key, value in source.data.items():
        if key not in allowed:
            if source.kind == "swanctl" and key in ("pools", "authorities") and not value:
                continue
            hint = f"top-level sections are {', '.join(allowed)}"
            if key == "daemon":
                hint = "put the [daemon] table in the TOML file given with -c"
            raise source.error((key,), f"unknown or unsupported section {key!r}", hint)
    if "daemon" in source.data:
        configuration.daemon = _build_daemon(source, source.data["daemon"])
    if "secrets" in source.data:
        _build_secrets(source, source.data["secrets"], configuration)
    connections = source.data.get("connections", {})
    connections = _expect_table(source, connections, ("connections",), "connections")
    for name, table in connections.items():
        if name in configuration.connections:
            other = configuration.connections[name].source
            raise source.error(
                ("connections", name),
                f"connection {name!r} is also defined in {other}",
                "give one of them another name",
            )
        configuration.connections[name] = _build_connection(source, name, table)
    configuration.warnings.extend(source.warnings)
    return configuration


# --------------------------------------------------------------------------- TOML


def _toml_key_lines(text: str) -> dict[tuple[str, ...], int]:
    """Line numbers of tables and keys: a simple scan (tomllib does not report lines)."""

    def split_dotted(key_text: str) -> list[str]:
        parts = re.findall(r'"([^"]*)"|\'([^\']*)\'|([^.\s]+)', key_text)
        return [a or b or c for a, b, c in parts]

    lines: dict[tuple[str, ...], int] = {}
    table: tuple[str, ...] = ()
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        header = re.match(r"^\[\[?\s*(.+?)\s*\]\]?\s*(#.*)?$", stripped)
        if header:
            table = tuple(split_dotted(header.group(1)))
            for prefix_length in range(1, len(table) + 1):
                lines.setdefault(table[:prefix_length], number)
            continue
        assignment = re.match(r"^((?:\"[^\"]*\"|'[^']*'|[A-Za-z0-9_.\-\s])+?)\s*=", stripped)
        if assignment:
            key = (*table, *split_dotted(assignment.group(1)))
            lines.setdefault(key, number)
            for prefix_length in range(len(table) + 1, len(key)):
                lines.setdefault(key[:prefix_length], number)
    return lines


def load_toml(
    path: str | os.PathLike[str], configuration: Configuration | None = None
) -> Configuration:
    """Read and validate an aioipsec TOML file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"cannot read the file: {error.strerror}", file=path) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        line_match = re.search(r"line (\d+)", str(error))
        raise ConfigError(
            f"not valid TOML: {error}",
            file=path,
            line=int(line_match.group(1)) if line_match else None,
        ) from None
    key_lines = _toml_key_lines(text)

    def locate(key_path: tuple[str, ...]) -> tuple[str, int | None]:
        for length in range(len(key_path), 0, -1):
            if key_path[:length] in key_lines:
                return str(path), key_lines[key_path[:length]]
        return str(path), None

    allow_weak = configuration.daemon.allow_weak_algorithms if configuration else []
    daemon_table = data.get("daemon")
    if isinstance(daemon_table, dict) and "allow_weak_algorithms" in daemon_table:
        try:
            allow_weak = parse_list(daemon_table["allow_weak_algorithms"])
        except _ValueProblem:
            pass  # reported with its location when [daemon] is validated
    source = RawSource(
        path=str(path), data=data, locate=locate, kind="toml", allow_weak=tuple(allow_weak)
    )
    configuration = build_configuration(source, configuration)
    if any(s.source == str(path) for s in configuration.shared_secrets):
        warn_if_readable(path, configuration)
    return configuration


def warn_if_readable(path: Path, configuration: Configuration) -> None:
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        configuration.warnings.append(
            f"{path} holds a pre-shared key and is readable by group/others: chmod 600 {path}"
        )


# --------------------------------------------------------------------------- credentials


def _check_key_file_mode(path: Path) -> None:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist", hint="check the path") from None
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {error.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"private key file {path} is readable or writable by group/others "
            f"(mode {stat.S_IMODE(mode):04o})",
            hint=f"chmod 600 {path}",
        )


def load_private_key(path: Path, passphrase: bytes | None = None) -> Any:
    """A ``cryptography`` private key from a PEM or DER file with mode 0600 (or stricter)."""
    from cryptography.hazmat.primitives import serialization

    _check_key_file_mode(path)
    data = path.read_bytes()
    loaders = (
        (serialization.load_pem_private_key, serialization.load_der_private_key)
        if b"-----BEGIN" in data
        else (serialization.load_der_private_key,)
    )
    last_error: Exception | None = None
    for loader in loaders:
        try:
            return loader(data, password=passphrase)
        except (ValueError, TypeError) as error:
            last_error = error
    raise ConfigError(
        f"{path} is not a private key we can read ({last_error})",
        hint="give a PEM or DER key (PKCS#1, SEC1 or PKCS#8); a passphrase goes in secret",
    )


def load_certificate(path: Path) -> Any:
    """A ``cryptography`` X.509 certificate from a PEM or DER file."""
    from cryptography import x509

    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"certificate {path} does not exist", hint="check the path") from None
    except OSError as error:
        raise ConfigError(f"cannot read certificate {path}: {error.strerror}") from None
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError as error:
        raise ConfigError(f"{path} is not an X.509 certificate ({error})") from None


def _public_bytes(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _check_credentials(configuration: Configuration) -> None:
    """Every named certificate readable; every pubkey connection has its private key."""
    for connection in configuration.connections.values():
        for side in ("local", "remote"):
            auth: AuthSettings = getattr(connection, side)
            for kind in ("certs", "cacerts"):
                for cert_path in getattr(auth, kind):
                    try:
                        load_certificate(cert_path)
                    except ConfigError as error:
                        raise ConfigError(
                            error.reason,
                            file=connection.source,
                            key=f"connections.{connection.name}.{side}.{kind}",
                            hint=error.hint,
                        ) from None
        if connection.local.auth == "pubkey":
            _find_private_key(configuration, connection)
        remote = connection.remote
        if (
            remote.auth == "pubkey"
            and not remote.cacerts
            and not remote.certs
            and not configuration.authorities
        ):
            raise ConfigError(
                "auth = pubkey for the peer, but no CA certificate to check its certificate",
                file=connection.source,
                key=f"connections.{connection.name}.remote.cacerts",
                hint="add cacerts = [<CA certificate>] to the remote section "
                "(swanctl.conf: or put it in x509ca/)",
            )
        uses_psk = "psk" in (connection.local.auth, connection.remote.auth)
        if uses_psk and not configuration.shared_secrets:
            raise ConfigError(
                "auth = psk but no ike secret is configured",
                file=connection.source,
                key=f"connections.{connection.name}",
                hint="add [secrets.ike-NAME] with secret = ... and the ids it is for",
            )


def _find_private_key(configuration: Configuration, connection: ConnectionSettings) -> Any:
    leaf = load_certificate(connection.local.certs[0])
    wanted = _public_bytes(leaf.public_key())
    for private in configuration.private_keys:
        if _public_bytes(private.key.public_key()) == wanted:
            return private.key
    raise ConfigError(
        f"no private key matches certificate {connection.local.certs[0]}",
        file=connection.source,
        key=f"connections.{connection.name}.local.certs",
        hint="add [secrets.private-NAME] file = <key> (swanctl.conf: put it in private/)",
    )


# --------------------------------------------------------------------------- loading


def load_configuration(
    toml_path: str | os.PathLike[str] | None = None,
    swanctl_path: str | os.PathLike[str] | None = None,
) -> Configuration:
    """Load ``-c FILE`` and/or ``--swanctl-conf FILE`` into one validated model.

    With both, ``[daemon]`` comes from the TOML file, connections and secrets from both
    (a connection name defined twice is an error).
    """
    if toml_path is None and swanctl_path is None:
        raise ConfigError(
            "no configuration given", hint="use -c FILE.toml and/or --swanctl-conf FILE"
        )
    configuration = Configuration()
    if toml_path is not None:
        load_toml(toml_path, configuration)
    if swanctl_path is not None:
        from aioipsec.swanctl import load_swanctl

        load_swanctl(swanctl_path, configuration)
    _check_credentials(configuration)
    if not configuration.connections:
        configuration.warnings.append("no connections configured: the daemon will only listen")
    return configuration


# --------------------------------------------------------------------------- engine configs


def _child_to_engine(child: ChildSettings) -> Any:
    from ikev2.config import ChildConfig

    # strongSwan's lifetime defaults (vici_config.c check_lifetimes): rekey 1 h, or
    # life / 1.1 when only life is given; life = rekey * 1.1.
    rekey_time: float | None = child.rekey_time
    if rekey_time is None:
        rekey_time = child.life_time / 1.1 if child.life_time is not None else 3600.0
    _, rekey_bytes, rekey_packets = _child_rekey_limits(child)
    life_bytes = child.life_bytes if child.life_bytes is not None else int(rekey_bytes * 1.1)
    life_packets = (
        child.life_packets if child.life_packets is not None else int(rekey_packets * 1.1)
    )
    return ChildConfig(
        name=child.name,
        local_ts=list(child.local_ts),
        remote_ts=list(child.remote_ts),
        esp_proposals=list(child.esp_proposals) if not child.ah_proposals else [],
        ah_proposals=list(child.ah_proposals),
        mode=child.mode,  # type: ignore[arg-type]
        start_action=child.start_action,  # type: ignore[arg-type]
        close_action=child.close_action,  # type: ignore[arg-type]
        dpd_action=child.dpd_action,  # type: ignore[arg-type]
        rekey_time=float(rekey_time),
        life_time=child.life_time,
        rand_time=child.rand_time,
        rekey_bytes=rekey_bytes,
        life_bytes=life_bytes,
        rekey_packets=rekey_packets,
        life_packets=life_packets,
        replay_window=child.replay_window,
    )


def _auth_to_engine(configuration: Configuration, connection: ConnectionSettings, side: str) -> Any:
    from ikev2.config import AuthConfig

    settings: AuthSettings = getattr(connection, side)
    certs = [load_certificate(path) for path in settings.certs]
    cacerts = [load_certificate(path) for path in settings.cacerts]
    if side == "remote" and settings.auth == "pubkey" and not cacerts:
        # swanctl trusts every CA certificate it loaded (x509ca/): do the same.
        cacerts = [load_certificate(path) for path in configuration.authorities]
    identity = settings.id
    if identity is None and certs:
        # strongSwan's default: the certificate's subject, in certificate order.
        identity = strongswan_dn(certs[0].subject)
    auth = AuthConfig(
        auth=settings.auth,  # type: ignore[arg-type]
        id=identity or "%any",
        certs=certs,
        cacerts=cacerts,
        send_certreq=connection.send_certreq,
        send_cert=connection.send_cert,  # type: ignore[arg-type]
        rsa_pss=settings.rsa_pss,
    )
    if side == "local" and settings.auth == "pubkey":
        auth.private_key = _find_private_key(configuration, connection)
    return auth


def _resolve_addrs(connection: ConnectionSettings, key: str) -> list[str]:
    """Addresses for the engine: DNS names are resolved now (at load and reload), as the
    engine and the data plane work with addresses only."""
    resolved: list[str] = []
    for addr in getattr(connection, key):
        if addr.startswith("%") or _ip_ok(addr):
            resolved.append(addr)
            continue
        try:
            infos = socket.getaddrinfo(addr, None, type=socket.SOCK_DGRAM)
        except OSError as error:
            raise ConfigError(
                f"cannot resolve {addr!r}: {error.strerror or error}",
                file=connection.source,
                key=f"connections.{connection.name}.{key}",
                hint="write an IP address, or make the name resolvable",
            ) from None
        for info in infos:
            address = str(info[4][0])
            if address not in resolved:
                resolved.append(address)
    return resolved


def to_engine_configs(configuration: Configuration) -> list[Any]:
    """The engine's ``ikev2.config.IkeConfig`` objects, one per connection.

    strongSwan's IKE lifetime defaults are applied here (vici_config.c): with neither
    rekey_time nor reauth_time set, rekey every 4 h; with only reauth_time, no rekeying.
    The ``[daemon]`` retransmission settings apply to every connection (strongSwan's are
    daemon-wide too). PSKs are not copied in: give ``configuration.psk_lookup`` to the
    dispatcher.
    """
    from ikev2.config import IkeConfig

    engine_configs = []
    for connection in configuration.connections.values():
        rekey_time, reauth_time = connection.rekey_time, connection.reauth_time
        if rekey_time is None and reauth_time is None:
            rekey_time, reauth_time = 14400.0, 0.0
        engine_configs.append(
            IkeConfig(
                name=connection.name,
                version=2,
                local_addrs=_resolve_addrs(connection, "local_addrs"),
                remote_addrs=_resolve_addrs(connection, "remote_addrs"),
                local_port=connection.local_port,
                remote_port=connection.remote_port,
                proposals=list(connection.proposals),
                encap=connection.encap,
                dpd_delay=connection.dpd_delay,
                dpd_timeout=connection.dpd_timeout,
                rekey_time=rekey_time or 0.0,
                reauth_time=reauth_time or 0.0,
                over_time=connection.over_time,
                rand_time=connection.rand_time,
                fragmentation=connection.fragmentation,  # type: ignore[arg-type]
                local=_auth_to_engine(configuration, connection, "local"),
                remote=_auth_to_engine(configuration, connection, "remote"),
                children=[_child_to_engine(c) for c in connection.children.values()],
                retransmit_timeout=configuration.daemon.retransmit_timeout,
                retransmit_base=configuration.daemon.retransmit_base,
                retransmit_tries=configuration.daemon.retransmit_tries,
            )
        )
    return engine_configs


# --------------------------------------------------------------------------- listings


_VICI_ACTIONS = {"none": "none", "clear": "none", "start": "start", "restart": "start",
                 "trap": "trap"}  # fmt: skip
_DN_NAMES = {
    "countryName": "C", "stateOrProvinceName": "ST", "localityName": "L",
    "organizationName": "O", "organizationalUnitName": "OU", "commonName": "CN",
    "emailAddress": "E", "serialNumber": "serialNumber", "domainComponent": "DC",
}  # fmt: skip


def strongswan_dn(name: Any) -> str:
    """An X.509 name as strongSwan prints it: in certificate order, ``C=CH, O=x, CN=y``."""
    parts = []
    for rdn in name.rdns:
        for attribute in rdn:
            label = _DN_NAMES.get(attribute.oid._name, attribute.oid.dotted_string)
            parts.append(f"{label}={attribute.value}")
    return ", ".join(parts)


def _cert_names(paths: list[Path]) -> list[str]:
    names = []
    for path in paths:
        try:
            names.append(strongswan_dn(load_certificate(path).subject))
        except ConfigError:
            names.append(str(path))
    return names


def _child_rekey_limits(child: ChildSettings) -> tuple[int, int, int]:
    """(rekey_time, rekey_bytes, rekey_packets) with strongSwan's defaults applied."""
    rekey_time = child.rekey_time
    if rekey_time is None:
        rekey_time = child.life_time / 1.1 if child.life_time is not None else 3600.0
    rekey_bytes = child.rekey_bytes
    if rekey_bytes is None:
        rekey_bytes = int(child.life_bytes / 1.1) if child.life_bytes else 0
    rekey_packets = child.rekey_packets
    if rekey_packets is None:
        rekey_packets = int(child.life_packets / 1.1) if child.life_packets else 0
    return int(rekey_time), rekey_bytes, rekey_packets


def connection_listing(configuration: Configuration) -> list[dict[str, Any]]:
    """Connections as VICI ``list-conns`` events (one ``{name: {...}}`` per connection),
    with charon's key names and value forms (strings, lists of strings); a few keys VICI
    does not have are added (``proposals``, ``esp_proposals``, ``start_action``, ...).

    What the control socket's ``conns`` command returns; never contains secrets.
    """
    listing = []
    for connection in configuration.connections.values():
        rekey_time = connection.rekey_time
        if rekey_time is None:
            rekey_time = 0.0 if connection.reauth_time else 14400.0
        entry: dict[str, Any] = {
            "local_addrs": list(connection.local_addrs),
            "remote_addrs": list(connection.remote_addrs),
            "version": "IKEv2",
            "reauth_time": str(int(connection.reauth_time or 0)),
            "rekey_time": str(int(rekey_time)),
        }
        if connection.dpd_delay:
            entry["dpd_delay"] = str(int(connection.dpd_delay))
        entry.update(
            local_port=str(connection.local_port),
            remote_port=str(connection.remote_port),
            encap="yes" if connection.encap else "no",
            proposals=list(connection.proposals),
            source=connection.source,
        )
        for side in ("local", "remote"):
            auth: AuthSettings = getattr(connection, side)
            round_entry: dict[str, Any] = {}
            certs = _cert_names(auth.certs)
            if auth.id is not None:
                round_entry["id"] = auth.id
            elif side == "local" and certs:
                round_entry["id"] = certs[0]  # charon's default: the certificate subject
            round_entry.update(
                {
                    "class": "pre-shared key" if auth.auth == "psk" else "public key",
                    "certs": certs,
                    "cacerts": _cert_names(auth.cacerts),
                }
            )
            entry[f"{side}-1"] = round_entry
        children = {}
        for child in connection.children.values():
            child_rekey_time, rekey_bytes, rekey_packets = _child_rekey_limits(child)
            children[child.name] = {
                "mode": child.mode.upper(),
                "rekey_time": str(child_rekey_time),
                "rekey_bytes": str(rekey_bytes),
                "rekey_packets": str(rekey_packets),
                "dpd_action": _VICI_ACTIONS[child.dpd_action],
                "close_action": _VICI_ACTIONS[child.close_action],
                "start_action": _VICI_ACTIONS[child.start_action],
                "esp_proposals": list(child.esp_proposals),
                "ah_proposals": list(child.ah_proposals),
                "local-ts": list(child.local_ts),
                "remote-ts": list(child.remote_ts),
            }
        entry["children"] = children
        listing.append({connection.name: entry})
    return listing


# --------------------------------------------------------------------------- daemon options


@dataclass
class DaemonOptions:
    """What ``aioipsec daemon`` hands to ``aioipsec.daemon.run_daemon(options)``.

    Command-line values override the ``[daemon]`` table (``None``: take the config's).
    """

    config_file: Path | None = None
    swanctl_conf: Path | None = None
    socket_path: str | None = None
    log_format: str | None = None
    log_level: str | None = None
    save_keys_dir: Path | None = None
    foreground: bool = True
    # Skip the start-up self-test (tests only; the CLI does not offer it).
    run_selftest: bool = True

    def load(self) -> Configuration:
        """Load and validate the configuration, then apply the command-line overrides.

        Call it again to reload (SIGHUP, ``aioipsec reload``): it re-reads the files.
        """
        configuration = load_configuration(self.config_file, self.swanctl_conf)
        if self.socket_path is not None:
            configuration.daemon.control_socket = self.socket_path
        if self.log_format is not None:
            configuration.daemon.log_format = self.log_format
        if self.log_level is not None:
            configuration.daemon.log_level = self.log_level
        return configuration
