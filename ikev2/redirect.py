"""The notification data of IKEv2 redirection (RFC 5685 sec. 8-10): REDIRECT and
REDIRECTED_FROM, and the gateway identity both carry.

REDIRECT (RFC 5685 sec. 8.1), Notify Message Type 16407, Protocol ID and SPI Size 0::

                         1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    | Next Payload  |C|  RESERVED   |         Payload Length        |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |Protocol ID(=0)| SPI Size (=0) |      Notify Message Type      |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    | GW Ident Type |  GW Ident Len |                               |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+                               ~
    ~                   New Responder GW Identity                   ~
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                                                               |
    ~                        Nonce Data                             ~
    |                                                               |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+

The Nonce Data is the initiator's Ni, present only when the REDIRECT is in an
IKE_SA_INIT response (sec. 4.2: it binds the unauthenticated redirect to our request);
in IKE_AUTH and INFORMATIONAL the message is protected and the field is empty.

REDIRECTED_FROM (sec. 8.2), 16408: the same without the Nonce Data, naming the gateway
that redirected the client (its address: sec. 8.2 allows only IPv4 and IPv6 here, but
we parse an FQDN too and let the caller decide, as strongSwan does).

Gateway Identity Types (sec. 10, IANA "Gateway Identity Type"): 1 IPv4 (4 octets),
2 IPv6 (16 octets), 3 FQDN (RFC 1035 name, no terminating NUL). Everything else is
refused with :class:`ikev2.errors.ProtocolError`; resolving an FQDN is the daemon's job
(nothing here does I/O).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from ikev2.enums import GatewayIdType
from ikev2.errors import ProtocolError

_ADDRESS_LENGTH = {GatewayIdType.IPV4: 4, GatewayIdType.IPV6: 16}
# RFC 1035 sec. 2.3.1 / RFC 1123 sec. 2.1: letters, digits, hyphens; labels of 1-63
# octets that neither start nor end with a hyphen; 255 octets in all.
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)\Z")
MAX_FQDN = 255


def _valid_fqdn(name: str) -> bool:
    if not name or len(name) > MAX_FQDN:
        return False
    labels = name[:-1].split(".") if name.endswith(".") else name.split(".")
    return all(_LABEL.match(label) for label in labels) and not name.replace(".", "").isdigit()


@dataclass(frozen=True)
class GatewayIdentity:
    """A gateway as REDIRECT and REDIRECTED_FROM name it: ``value`` is the text form
    (``192.0.2.1``, ``2001:db8::1`` or ``gw2.example.net``)."""

    kind: GatewayIdType
    value: str

    @classmethod
    def from_text(cls, text: str) -> GatewayIdentity:
        """An address literal or a host name, as a user or the cluster writes it.
        Raises ValueError (a local mistake, not the peer's) for anything else."""
        text = text.strip()
        try:
            address = ipaddress.ip_address(text.strip("[]"))
        except ValueError:
            if not _valid_fqdn(text):
                raise ValueError(
                    f"{text!r} is neither an IP address nor a host name (RFC 1123)"
                ) from None
            return cls(GatewayIdType.FQDN, text.rstrip(".").lower())
        kind = GatewayIdType.IPV4 if address.version == 4 else GatewayIdType.IPV6
        return cls(kind, str(address))

    @property
    def is_fqdn(self) -> bool:
        return self.kind is GatewayIdType.FQDN

    def encode(self) -> bytes:
        """GW Ident Type, GW Ident Len, New Responder GW Identity."""
        if self.kind is GatewayIdType.FQDN:
            body = self.value.encode("ascii")
        else:
            body = ipaddress.ip_address(self.value).packed
        return bytes([int(self.kind), len(body)]) + body

    @classmethod
    def decode(cls, data: bytes) -> tuple[GatewayIdentity, bytes]:
        """The identity at the start of ``data`` and the octets after it."""
        if len(data) < 2:
            raise ProtocolError(
                f"gateway identity of {len(data)} octets (needs at least the type and "
                "length octets, RFC 5685 sec. 8.1)"
            )
        raw_kind, length = data[0], data[1]
        body = data[2 : 2 + length]
        if len(body) != length:
            raise ProtocolError(
                f"gateway identity says {length} octets, {len(body)} follow (RFC 5685 sec. 8.1)"
            )
        try:
            kind = GatewayIdType(raw_kind)
        except ValueError:
            raise ProtocolError(
                f"unknown gateway identity type {raw_kind} (RFC 5685 sec. 10 defines 1-3)"
            ) from None
        if kind is GatewayIdType.FQDN:
            try:
                name = body.decode("ascii")
            except UnicodeDecodeError:
                name = ""
            if not _valid_fqdn(name):
                raise ProtocolError(
                    f"gateway FQDN {body[:64]!r} is not a host name (RFC 1123 sec. 2.1)"
                )
            return cls(kind, name.rstrip(".").lower()), data[2 + length :]
        if length != _ADDRESS_LENGTH[kind]:
            raise ProtocolError(
                f"{kind.name} gateway identity of {length} octets "
                f"(must be {_ADDRESS_LENGTH[kind]}, RFC 5685 sec. 8.1)"
            )
        return cls(kind, str(ipaddress.ip_address(body))), data[2 + length :]

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class RedirectData:
    """The data of a REDIRECT notify (sec. 8.1); ``nonce`` empty outside IKE_SA_INIT."""

    gateway: GatewayIdentity
    nonce: bytes = b""

    @classmethod
    def parse(cls, data: bytes) -> RedirectData:
        gateway, rest = GatewayIdentity.decode(bytes(data))
        # RFC 7296 sec. 3.9: Ni is 16-256 octets; anything else cannot be ours.
        if rest and not 16 <= len(rest) <= 256:
            raise ProtocolError(
                f"REDIRECT Nonce Data of {len(rest)} octets (a nonce is 16-256 octets)"
            )
        return cls(gateway, rest)

    def serialize(self) -> bytes:
        return self.gateway.encode() + self.nonce


@dataclass(frozen=True)
class RedirectedFromData:
    """The data of a REDIRECTED_FROM notify (sec. 8.2): the gateway that redirected us."""

    gateway: GatewayIdentity

    @classmethod
    def parse(cls, data: bytes) -> RedirectedFromData:
        gateway, rest = GatewayIdentity.decode(bytes(data))
        if rest:
            raise ProtocolError(f"REDIRECTED_FROM with {len(rest)} octets after the identity")
        return cls(gateway)

    def serialize(self) -> bytes:
        return self.gateway.encode()
