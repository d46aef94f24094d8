"""Value parsers and key tables: which keys each section takes, and how each is read.

A parser takes one raw value (a TOML value, or swanctl.conf's string) and returns the
model's value, or raises :class:`ValueProblem`; the walker (:mod:`aioipsec.config.build`)
adds the file, line and key path. The key tables map every key a section accepts to its
parser, and list the strongSwan keys we refuse or accept only with one value.
"""

from __future__ import annotations

import base64
import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from aioipsec.config.model import LOG_FORMATS, LOG_LEVELS
from aioipsec.pools import parse_vips
from ikev2.config import AuthMethodName
from ikev2.enums import ProtocolId
from ikev2.identity import Identity
from ikev2.policy import AlgorithmPolicy, WeakAlgorithmError
from ikev2.proposals import ProposalSyntaxError, parse_proposals

# --------------------------------------------------------------------------- value parsers

# A source of raw configuration data: a nested mapping whose leaves are TOML values or
# (swanctl.conf) strings, plus a way to find the line of a key path.
Locator = Callable[[tuple[str, ...]], tuple[str, int | None]]


class ValueProblem(Exception):
    """Raised by a value parser; the walker turns it into a ConfigError with location."""

    def __init__(self, reason: str, hint: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.hint = hint


def as_text(value: Any) -> str:
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        return str(value)
    raise ValueProblem(f"expected a single value, got {type(value).__name__}")


def parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = as_text(value).lower()
    if text in ("yes", "true", "enabled", "1"):
        return True
    if text in ("no", "false", "disabled", "0"):
        return False
    raise ValueProblem(f"{value!r} is not a yes/no value", "write yes or no")


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: Any) -> float:
    """Seconds; strings as strongSwan writes them: ``90``, ``90s``, ``30m``, ``4h``, ``1d``."""
    if isinstance(value, bool):
        raise ValueProblem(f"{value!r} is not a duration", "write e.g. 3600, 30m, 4h or 1d")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdSMHD]?)\s*", str(value))
        if not match:
            raise ValueProblem(f"{value!r} is not a duration", "write e.g. 3600, 30m, 4h or 1d")
        seconds = float(match.group(1)) * _DURATION_UNITS.get(match.group(2).lower(), 1)
    if seconds < 0:
        raise ValueProblem("a duration cannot be negative")
    return seconds


_BYTE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def parse_count(value: Any) -> int:
    """A byte or packet count; strongSwan's binary suffixes ``k``, ``M``, ``G`` allowed."""
    if isinstance(value, bool):
        raise ValueProblem(f"{value!r} is not a number", "write e.g. 500000000 or 500M")
    if isinstance(value, int):
        number = value
    else:
        match = re.fullmatch(r"\s*(\d+)\s*([kKmMgG]?)\s*", str(value))
        if not match:
            raise ValueProblem(f"{value!r} is not a number", "write e.g. 500000000 or 500M")
        number = int(match.group(1)) * _BYTE_UNITS[match.group(2).lower()]
    if number < 0:
        raise ValueProblem("a count cannot be negative")
    return number


def _int_range(low: int, high: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, bool):
            raise ValueProblem(f"{value!r} is not a number")
        try:
            number = int(value) if isinstance(value, int) else int(as_text(value), 0)
        except ValueError:
            raise ValueProblem(f"{value!r} is not a number") from None
        if not low <= number <= high:
            raise ValueProblem(f"{number} is out of range", f"use {low}..{high}")
        return number

    return parse


parse_port = _int_range(0, 65535)


def _positive_duration(value: Any) -> float:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueProblem("must be more than 0 s", "write e.g. 4s or 0.5s")
    return seconds


def _retransmit_base(value: Any) -> float:
    """The back-off factor: a number, at least 1 (strongSwan's charon.retransmit_base)."""
    if isinstance(value, bool):
        raise ValueProblem(f"{value!r} is not a number", "write e.g. 1.8")
    try:
        base = float(value) if isinstance(value, int | float) else float(as_text(value))
    except ValueError:
        raise ValueProblem(f"{value!r} is not a number", "write e.g. 1.8") from None
    if not 1.0 <= base <= 10.0:
        raise ValueProblem(f"{base} is out of range", "use 1.0..10.0 (strongSwan: 1.8)")
    return base


def parse_string(value: Any) -> str:
    text = as_text(value)
    if not text:
        raise ValueProblem("empty value")
    return text


def parse_list(value: Any) -> list[str]:
    """A TOML array of strings, or a comma-separated string as swanctl.conf writes it."""
    if isinstance(value, list):
        items: list[str] = []
        for item in value:
            items.extend(parse_list(item))
        return items
    text = as_text(value)
    return [part.strip() for part in text.split(",") if part.strip()]


def _choice(mapping: Mapping[str, str]) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = as_text(value).lower()
        if text not in mapping:
            raise ValueProblem(
                f"{value!r} is not one of {', '.join(sorted(mapping))}",
                f"write one of: {', '.join(sorted(mapping))}",
            )
        return mapping[text]

    return parse


def ip_ok(text: str) -> bool:
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
    if text in ("%any", "%any4", "%any6") or ip_ok(text):
        return True
    # A DNS name: resolved when the engine configuration is built (load and reload).
    return bool(re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?", text))


def parse_addrs(value: Any) -> list[str]:
    addrs = parse_list(value)
    for addr in addrs:
        if not _address_ok(addr):
            raise ValueProblem(
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
            raise ValueProblem(
                f"{selector!r} is not a traffic selector",
                "write a subnet (10.1.0.0/16), a range (10.1.0.1-10.1.0.9) or dynamic, "
                "optionally followed by [protocol/port]",
            )
        if net != "dynamic" and not ip_ok(net):
            raise ValueProblem(
                f"{selector!r} is not a traffic selector: {net!r} is not a subnet, an "
                "address range or 'dynamic'",
                "write e.g. 10.1.0.0/16",
            )
    return [mask_host_bits(selector) for selector in selectors] or ["dynamic"]


def mask_host_bits(selector: str) -> str:
    """``10.1.0.0/10`` is ``10.0.0.0/10``: strongSwan masks a subnet's host bits
    (traffic_selector_create_from_cidr), so we do too, before anything uses it."""
    match = _TS_RE.match(selector)
    net = (match.group("net") or "").strip() if match else ""
    if "/" not in net:
        return selector
    masked = str(ipaddress.ip_network(net, strict=False))
    return selector.replace(net, masked, 1) if masked != net else selector


def parse_proposal_list(value: Any) -> list[str]:
    """Proposal strings; their keywords are checked later, with the algorithm policy."""
    proposals = parse_list(value)
    if not proposals:
        raise ValueProblem("no proposal given", "write e.g. aes256gcm16-prfsha256-x25519")
    return proposals


# RFC 7296 sec. 3.3.1: the proposal number and the number of transforms are one octet
# each, so a proposal list longer than 255, or a proposal with more than 255 transforms,
# cannot be sent.
MAX_PROPOSALS = 255
MAX_TRANSFORMS = 255


def check_proposal_syntax(
    proposals: list[str], protocol: str, allow_weak: Iterable[str] = ()
) -> list[str]:
    """Validate strongSwan proposal strings through ``ikev2.proposals`` and the algorithm
    policy of ``ikev2.policy``; return the policy's warnings (e.g. SHA-1 accepted).

    ``protocol``: "ike", "esp" or "ah". Raises ``ValueProblem`` naming the keyword.
    """

    protocol_id = {"ike": ProtocolId.IKE, "esp": ProtocolId.ESP, "ah": ProtocolId.AH}[protocol]
    parsed: list[Any] = []
    for proposal in proposals:
        try:
            parsed.extend(parse_proposals(proposal, protocol_id))
        except ProposalSyntaxError as error:
            raise ValueProblem(
                f"{proposal!r}: {error}",
                "write strongSwan proposal keywords joined by '-', "
                + (
                    "e.g. aes256gcm16-prfsha256-x25519" if protocol == "ike" else "e.g. aes256gcm16"
                ),
            ) from None
    if len(parsed) > MAX_PROPOSALS:
        raise ValueProblem(
            f"{len(parsed)} proposals: at most {MAX_PROPOSALS} fit in an SA payload "
            "(RFC 7296 sec. 3.3.1, the proposal number is one octet)",
            "remove proposals; a handful is plenty",
        )
    for proposal in parsed:
        transforms = len(getattr(proposal, "transforms", ()))
        if transforms > MAX_TRANSFORMS:
            raise ValueProblem(
                f"a proposal with {transforms} transforms: at most {MAX_TRANSFORMS} fit "
                "(RFC 7296 sec. 3.3.1, the transform count is one octet)",
                "split it into several proposals",
            )
    try:
        policy = AlgorithmPolicy(allow_weak=frozenset(allow_weak))
    except ValueError as error:
        raise ValueProblem(f"[daemon] allow_weak_algorithms: {error}") from None
    try:
        return list(policy.check_proposals(parsed) or [])
    except WeakAlgorithmError as error:
        raise ValueProblem(str(error)) from None


# --------------------------------------------------------------------------- key tables

# Keys swanctl.conf knows that aioipsec accepts only with the value it implements anyway
# (e.g. `mobike = no`, present in most strongSwan test scenarios): any other value is an
# error naming the key. The value is compared as strongSwan reads it (yes/no, a number, a
# word); the text after the value says why the others are refused.
_FIXED_CONNECTION_KEYS = {
    "mobike": ("no", "MOBIKE (RFC 4555) is not implemented"),
    "aggressive": ("no", "aggressive mode is IKEv1 only"),
}
_FIXED_CHILD_KEYS = {
    "ipcomp": ("no", "IPComp is not implemented"),
    "policies": ("yes", "aioipsec always installs the child's policies"),
    "sha256_96": ("no", "the truncated HMAC-SHA-256 of old Linux kernels is not supported"),
    # strongSwan's default is 0: no TFC padding is added to outbound ESP (RFC 4303 sec. 2.7).
    "tfc_padding": ("0", "aioipsec adds no TFC padding"),
    "copy_ecn": ("no", "ECN is not copied between inner and outer headers yet"),
    "copy_dscp": ("no", "DSCP is not copied between inner and outer headers yet"),
}

# Keys of strongSwan's kernel interface (XFRM): marks, interface ids, SELinux labels,
# offload, per-CPU SAs. aioipsec's data path is in userspace: they have no meaning here.
_KERNEL_ONLY_CONNECTION_KEYS = {"if_id_in", "if_id_out"}
_KERNEL_ONLY_CHILD_KEYS = {
    "mark_in", "mark_in_sa", "mark_out", "set_mark_in", "set_mark_out", "if_id_in",
    "if_id_out", "label", "label_mode", "per_cpu_sas", "hw_offload", "interface",
    "policies_fwd_out",
}  # fmt: skip

# Keys swanctl.conf knows and aioipsec does not implement (error: "not supported").
_UNSUPPORTED_CONNECTION_KEYS = {
    "pull", "dscp", "mediation",
    "mediated_by", "mediation_peer",
}  # fmt: skip
_UNSUPPORTED_AUTH_KEYS = {
    "round", "xauth_id",
}  # fmt: skip
_UNSUPPORTED_CHILD_KEYS = {
    "rand_bytes", "rand_packets",
}  # fmt: skip

# Keys that are read into the model but refused until the runtime does what strongSwan
# does with them (key -> what is missing). The runtime that implements one removes it here.
RUNTIME_PENDING: dict[str, str] = {}

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
    # strongSwan's uniqueness policy (ikev2.config.UniqueMode).
    "unique": _choice({"no": "no", "never": "never", "replace": "replace", "keep": "keep"}),
    # RFC 6023 childless IKE SAs (ikev2.config.ChildlessMode).
    "childless": _choice({"allow": "allow", "force": "force", "never": "never"}),
    # How many times to try to establish the IKE SA before giving up: 0 is forever
    # (strongSwan's keyingtries; the daemon retries start_action = start with a back-off).
    "keyingtries": _int_range(0, 1 << 31),
    # RFC 8784 postquantum preshared keys (ikev2.tasks.ike_ppk): the PPK_ID to use (a
    # responder: the pattern the initiator's must match), and whether one is required.
    "ppk_id": lambda value: parse_identity(value),
    "ppk_required": parse_bool,
    # RFC 4806 OCSP in IKE (ikev2.config.OcspMode), strongSwan's default reply.
    "ocsp": _choice({m: m for m in ("never", "reply", "request", "both")}),
    "pools": lambda value: _pool_names(value),
    "vips": lambda value: _vips(value),
}


_UNSUPPORTED_MODES = {
    "iptfs": "IP-TFS (RFC 9347) is not implemented",
    "beet": "BEET mode is not implemented",
}


def _child_mode(value: Any) -> str:
    """tunnel, transport, or a pass/drop shunt; IP-TFS and BEET are refused, saying why."""
    text = as_text(value).lower()
    if text in _UNSUPPORTED_MODES:
        raise ValueProblem(
            f"mode = {text} is {_UNSUPPORTED_MODES[text]}",
            "use mode = tunnel or transport",
        )
    return _choice({m: m for m in ("tunnel", "transport", "pass", "drop")})(value)


def _oids(value: Any) -> list[str]:
    oids = parse_list(value)
    for oid in oids:
        if not re.fullmatch(r"[0-2](\.(0|[1-9][0-9]*))+", oid):
            raise ValueProblem(
                f"{oid!r} is not an OID in dotted form", "write e.g. 1.3.6.1.4.1.36906.1.1.1"
            )
    return oids


def parse_identity(value: Any) -> str:
    """An identity as strongSwan writes it (``ikev2.identity.Identity.parse``)."""
    text = parse_string(value)
    try:
        Identity.parse(text)
    except ValueError as error:
        raise ValueProblem(f"{text!r} is not an identity: {error}") from None
    return text


def _pool_names(value: Any) -> list[str]:
    names = parse_list(value)
    # radius: the address of the RADIUS Access-Accept; dhcp: a DHCP server's
    # (aioipsec.pools.EXTERNAL_POOLS).
    return names


def _vips(value: Any) -> list[str]:
    try:
        return [str(address) for address in parse_vips(parse_list(value))]
    except ValueError as problem:
        raise ValueProblem(
            str(problem), "vips = 0.0.0.0 (and/or ::) asks for any address"
        ) from None


# The EAP methods aioipsec implements (ikev2/eap): auth = eap lets the peer pick one.
_EAP_METHODS: dict[str, AuthMethodName] = {
    "eap": "eap",
    "eap-mschapv2": "eap-mschapv2",
    "eap-tls": "eap-tls",
    "eap-md5": "eap-md5",
    "eap-ttls": "eap-ttls",
    "eap-dynamic": "eap-dynamic",
    # The gateway relays EAP to a RADIUS server ([radius], aioipsec/radius/).
    "eap-radius": "eap-radius",
}

# strongSwan's auth = values for signatures (swanctl.conf, "auth"): a key type, optionally
# "ike:"-prefixed (a constraint for the IKE signature only) and followed by key strengths and
# hash names, e.g. "rsa/pss-sha256", "ike:ecdsa-384-sha384", "pubkey-sha256-sha512".
_SIGNATURE_KEY_TYPES = ("pubkey", "rsa", "rsa/pss", "ecdsa", "ed25519", "ed448")
_SIGNATURE_HASHES = ("sha1", "sha256", "sha384", "sha512", "identity")


def parse_auth(value: Any) -> tuple[AuthMethodName, bool]:
    """An ``auth`` value as strongSwan accepts it: ``("psk" | "pubkey", rsa_pss)``.

    ``rsa/pss`` (in any position, e.g. ``rsa/pss-sha256`` or ``ike:rsa/pss``) makes our RSA
    key sign with RSASSA-PSS (RFC 8017 sec. 8.1, RFC 7427). Key strengths and hash names
    are checked for syntax; as constraints on the peer's chain they are not enforced.
    """
    text = as_text(value).lower()
    if text == "psk":
        return "psk", False
    if text in _EAP_METHODS:
        return _EAP_METHODS[text], False
    if text.startswith("eap"):
        raise ValueProblem(
            f"auth = {text} is not supported",
            "aioipsec implements psk, pubkey (rsa, rsa/pss, ecdsa, ed25519, ed448), "
            "eap-md5, eap-mschapv2, eap-tls, eap-ttls, eap-dynamic, eap (any of them) and "
            "eap-radius (the gateway relays EAP to a RADIUS server)",
        )
    hint = "write psk, pubkey, rsa, rsa/pss, ecdsa, ed25519 or ed448 (e.g. rsa/pss-sha256)"
    tokens = text.split("-")
    if not text or tokens[0].removeprefix("ike:") not in _SIGNATURE_KEY_TYPES:
        raise ValueProblem(f"{value!r} is not a supported auth method", hint)
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
            raise ValueProblem(f"{token!r} in auth = {text!r} is not understood", hint)
    return "pubkey", rsa_pss


_AUTH_KEYS: dict[str, Callable[[Any], Any]] = {
    "auth": lambda value: parse_auth(value)[0],
    "id": parse_string,
    "certs": parse_list,
    "cacerts": parse_list,
    # Raw public keys (swanctl's pubkey/ folder): local, the first is ours; remote, the
    # keys the peer may sign with (strongSwan's CERT_TRUSTED_PUBKEY).
    "pubkeys": parse_list,
    # remote: certificate policy OIDs the peer's certificate must list.
    "cert_policy": lambda value: _oids(value),
    # remote: a CA (its subject) the peer's chain must go through.
    "ca_id": parse_identity,
    "revocation": _choice({"strict": "strict", "ifuri": "ifuri", "relaxed": "relaxed"}),
    "eap_id": parse_string,
    # EAP client: the identity the EAP server proves inside the method (EAP-TLS: its
    # certificate), when that is an AAA server and not the IKE gateway (strongSwan's).
    "aaa_id": parse_string,
    # Remote: the peer must be in one of these groups (RADIUS Class with eap-radius).
    "groups": parse_list,
}

_CHILD_KEYS: dict[str, Callable[[Any], Any]] = {
    "local_ts": parse_traffic_selectors,
    "remote_ts": parse_traffic_selectors,
    "esp_proposals": parse_proposal_list,
    "ah_proposals": parse_proposal_list,
    "mode": lambda value: _child_mode(value),
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
    "updown": parse_string,
    "hostaccess": parse_bool,
    # Close the Child SA after this long without a packet in either direction (0: never).
    "inactivity": parse_duration,
    # strongSwan's copy_df: the inner IPv4 DF bit copied to the outer header (yes), or
    # never DF on it (no): aioipsec/runtime/pmtu.py.
    "copy_df": parse_bool,
    # strongSwan's fixed reqid, policy priority and icmp (docs/configuration.md).
    "reqid": _int_range(0, 0xFFFFFFFF),
    "priority": _int_range(0, 0xFFFFFFFF),
    "icmp": parse_bool,
}

# A top-level ``authorities.NAME`` section (swanctl.conf): a CA and where its revocation
# information is found.
_AUTHORITY_KEYS: dict[str, Callable[[Any], Any]] = {
    "cacert": parse_string,
    "file": parse_string,
    "crl_uris": parse_list,
    "ocsp_uris": parse_list,
    "cert_uri_base": parse_string,
}
_UNSUPPORTED_AUTHORITY_KEYS = {"handle", "slot", "module"}

_DAEMON_KEYS: dict[str, Callable[[Any], Any]] = {
    "control_socket": parse_string,
    "control_group": parse_string,
    "vici_socket": parse_string,
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
    "allow_readable_secret_files": parse_bool,
    "follow_redirects": parse_bool,
    "accept_redirect_to": parse_list,
    "redirect_limit": _int_range(1, 1000),
    "redirect_period": _positive_duration,
    "fail_closed": parse_bool,
    "fail_closed_after_stop": parse_bool,
    "dns_hook": _choice({h: h for h in ("auto", "resolvectl", "resolvconf", "log")}),
    "proxy_arp_interface": parse_string,
    "workers": _int_range(1, 64),
    "worker_steering": _choice({m: m for m in ("direction", "sa")}),
}

# [radius] (aioipsec/radius/settings.py checks the combination and reads the secret).
_RADIUS_KEYS: dict[str, Callable[[Any], Any]] = {
    "servers": parse_list,
    "secret_file": parse_string,
    "nas_identifier": parse_string,
    "timeout": _positive_duration,
    "tries": _int_range(1, 20),
    "class_group": parse_bool,
}

# [dhcp] (aioipsec/dhcp.py: strongSwan's charon.plugins.dhcp settings).
_DHCP_KEYS: dict[str, Callable[[Any], Any]] = {
    "server": parse_string,
    "force_server_address": parse_bool,
    "identity_lease": parse_bool,
    "interface": parse_string,
}

# [cluster] (aioipsec/cluster/settings.py checks the combination).
_CLUSTER_KEYS: dict[str, Callable[[Any], Any]] = {
    "name": parse_string,
    "member": parse_string,
    "store": parse_string,
    "password_file": parse_string,
    "policy": parse_string,
    "max_ike_sas": _int_range(0, 10_000_000),
    "members": parse_list,
    "heartbeat": _positive_duration,
    "ttl": _positive_duration,
    "drain_rate": _int_range(1, 100_000),
}

_UNSUPPORTED_SECRET_TYPES = ("xauth", "ntlm")
_PRIVATE_KEY_TYPES = ("private", "rsa", "ecdsa", "pkcs8")


def decode_secret(text: str) -> bytes:
    """strongSwan's notation: ``0x...`` hex, ``0s...`` base64, anything else as UTF-8."""
    if text[:2].lower() == "0x":
        try:
            return bytes.fromhex(text[2:])
        except ValueError:
            raise ValueProblem("the 0x secret is not valid hex") from None
    if text[:2].lower() == "0s":
        try:
            return base64.b64decode(text[2:], validate=True)
        except ValueError:  # binascii.Error, or a non-ASCII character (a plain ValueError)
            raise ValueProblem("the 0s secret is not valid base64") from None
    return text.encode()
