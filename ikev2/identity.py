"""IKE identities (RFC 7296 sec. 3.5) written the way strongSwan writes them.

Strings (as in swanctl.conf) and what they become::

    %any                         any identity (configuration only, never sent)
    192.0.2.1, 2001:db8::1       ID_IPV4_ADDR / ID_IPV6_ADDR (4 / 16 octets)
    vpn.example.org              ID_FQDN
    @vpn.example.org             ID_FQDN (the "@" forces FQDN)
    user@example.org             ID_RFC822_ADDR
    C=CH, O=x, CN=y              ID_DER_ASN1_DN (DER Name, RDNs in the order written)
    @#0102ab, keyid:#0102ab      ID_KEY_ID with those octets (keyid:text: the text's octets)
    fqdn: dns: email: rfc822: userfqdn: ipv4: ipv6: asn1dn:   explicit type prefixes

DN strings are in ASN.1 order (most significant first, as strongSwan prints them), not
RFC 4514's reversed order. Configured identities may use ``*`` as a wildcard: ``*`` as a
whole FQDN/RFC822 label prefix (``*.example.org``, ``*@example.org``) or as a whole DN
attribute value (``C=CH, O=x, CN=*``).
"""

from __future__ import annotations

import fnmatch
import functools
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID, ObjectIdentifier

from ikev2.enums import IdType
from ikev2.errors import ProtocolError

__all__ = ["ANY", "Identity", "IdentitySyntaxError", "dn_from_string", "dn_to_string"]


class IdentitySyntaxError(ValueError):
    """An identity string from the configuration is not valid."""


# strongSwan's attribute names (src/libstrongswan/utils/identification.c x501rdns), the
# subset cryptography knows by OID.
_DN_KEYS: dict[str, ObjectIdentifier] = {
    "C": NameOID.COUNTRY_NAME,
    "ST": NameOID.STATE_OR_PROVINCE_NAME,
    "L": NameOID.LOCALITY_NAME,
    "O": NameOID.ORGANIZATION_NAME,
    "OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "CN": NameOID.COMMON_NAME,
    "E": NameOID.EMAIL_ADDRESS,
    "EMAIL": NameOID.EMAIL_ADDRESS,
    "EMAILADDRESS": NameOID.EMAIL_ADDRESS,
    "SN": NameOID.SURNAME,
    "SERIALNUMBER": NameOID.SERIAL_NUMBER,
    "G": NameOID.GIVEN_NAME,
    "GN": NameOID.GIVEN_NAME,
    "T": NameOID.TITLE,
    "DC": NameOID.DOMAIN_COMPONENT,
    "UID": NameOID.USER_ID,
    "STREET": NameOID.STREET_ADDRESS,
    "POSTALCODE": NameOID.POSTAL_CODE,
    "DNQ": NameOID.DN_QUALIFIER,
    "PSEUDONYM": NameOID.PSEUDONYM,
    "I": NameOID.INITIALS,
}
_DN_NAMES: dict[ObjectIdentifier, str] = {
    NameOID.COUNTRY_NAME: "C",
    NameOID.STATE_OR_PROVINCE_NAME: "ST",
    NameOID.LOCALITY_NAME: "L",
    NameOID.ORGANIZATION_NAME: "O",
    NameOID.ORGANIZATIONAL_UNIT_NAME: "OU",
    NameOID.COMMON_NAME: "CN",
    NameOID.EMAIL_ADDRESS: "E",
    NameOID.SURNAME: "SN",
    NameOID.SERIAL_NUMBER: "serialNumber",
    NameOID.GIVEN_NAME: "G",
    NameOID.TITLE: "T",
    NameOID.DOMAIN_COMPONENT: "DC",
    NameOID.USER_ID: "UID",
    NameOID.STREET_ADDRESS: "street",
    NameOID.POSTAL_CODE: "postalCode",
    NameOID.DN_QUALIFIER: "dnQualifier",
    NameOID.PSEUDONYM: "pseudonym",
    NameOID.INITIALS: "I",
}


_PRINTABLE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 '()+,-./:=?")
_IA5_ATTRIBUTES = frozenset({NameOID.EMAIL_ADDRESS, ObjectIdentifier("1.2.840.113549.1.9.2")})


def _string_type_for(oid: ObjectIdentifier, value: str) -> _ASN1Type:
    """strongSwan's choice (identification.c): IA5String for e-mail addresses,
    PrintableString when the value fits it, UTF8String otherwise -- so that the DER we
    send as ID_DER_ASN1_DN is byte-identical to what charon builds from the same string."""
    if oid in _IA5_ATTRIBUTES and value.isascii():
        return _ASN1Type.IA5String
    if set(value) <= _PRINTABLE:
        return _ASN1Type.PrintableString
    return _ASN1Type.UTF8String


def _split_dn(text: str) -> list[str]:
    """Split at ',' (or '/' for ``/C=CH/O=x``), honouring backslash escapes and quotes."""
    separator = "/" if text.startswith("/") else ","
    if separator == "/":
        text = text[1:]
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    escaped = False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    if escaped or quoted:
        raise IdentitySyntaxError(f"unterminated escape or quote in DN {text!r}")
    parts.append("".join(current))
    return parts


def dn_from_string(text: str) -> x509.Name:
    """``"C=CH, O=x, CN=y"`` -> x509.Name with RDNs in that (ASN.1) order."""
    attributes: list[x509.NameAttribute[str]] = []
    for part in _split_dn(text):
        if "=" not in part:
            raise IdentitySyntaxError(f"DN component {part.strip()!r} has no '=' in {text!r}")
        key, value = part.split("=", 1)
        key = key.strip()
        oid = _DN_KEYS.get(key.upper())
        if oid is None:
            try:
                oid = ObjectIdentifier(key)  # dotted OID form
            except ValueError:
                raise IdentitySyntaxError(f"unknown DN attribute {key!r} in {text!r}") from None
        value = value.strip()
        if not value:
            raise IdentitySyntaxError(f"empty value for {key} in DN {text!r}")
        try:
            attributes.append(x509.NameAttribute(oid, value, _string_type_for(oid, value)))
        except ValueError as error:  # e.g. C= must be 2 letters
            raise IdentitySyntaxError(f"invalid DN attribute {key}={value!r}: {error}") from None
    return x509.Name([x509.RelativeDistinguishedName([a]) for a in attributes])


def dn_to_string(name: x509.Name) -> str:
    """x509.Name -> strongSwan's form ``C=CH, O=x, CN=y`` (ASN.1 order)."""
    parts = []
    for rdn in name.rdns:
        for attribute in rdn:
            key = _DN_NAMES.get(attribute.oid, attribute.oid.dotted_string)
            value = attribute.value
            if isinstance(value, bytes):
                value = "#" + value.hex()
            value = value.replace("\\", "\\\\").replace(",", "\\,")
            parts.append(f"{key}={value}")
    return ", ".join(parts)


def _name_pairs(name: x509.Name) -> list[tuple[str, str]]:
    return [
        (a.oid.dotted_string, a.value if isinstance(a.value, str) else a.value.hex())
        for rdn in name.rdns
        for a in rdn
    ]


@dataclass(frozen=True)
class Identity:
    """An IKE identity. ``id_type is None`` means ``%any`` (configuration only)."""

    id_type: IdType | None
    data: bytes

    # ---- construction ----------------------------------------------------------------

    @classmethod
    def parse(cls, text: str) -> Identity:
        """Parse a strongSwan identity string (module docstring)."""
        return _parse_cached(text) if cls is Identity else cls._parse(text)

    @classmethod
    def _parse(cls, text: str) -> Identity:
        text = text.strip()
        if not text:
            raise IdentitySyntaxError("empty identity")
        if text in ("%any", "%any6", "0.0.0.0", "::"):
            return ANY
        lowered = text.lower()
        for prefix, handler in _PREFIXES.items():
            if lowered.startswith(prefix):
                if not text[len(prefix) :]:
                    raise IdentitySyntaxError(f"nothing after {prefix!r} in identity {text!r}")
                return handler(text[len(prefix) :])
        if text in ("@", "@@", "@#"):
            # An empty FQDN/RFC822/KEY_ID would print as "fqdn:" and could not be read back.
            raise IdentitySyntaxError(f"nothing after {text!r} in identity {text!r}")
        if text.startswith("@#"):
            return cls._key_id_hex(text[2:])
        if text.startswith("@@"):
            return cls(IdType.ID_RFC822_ADDR, text[2:].encode())
        if text.startswith("@"):
            return cls(IdType.ID_FQDN, text[1:].encode())
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            pass
        else:
            kind = IdType.ID_IPV4_ADDR if address.version == 4 else IdType.ID_IPV6_ADDR
            return cls(kind, address.packed)
        if "=" in text:
            return cls(IdType.ID_DER_ASN1_DN, dn_from_string(text).public_bytes())
        if "@" in text:
            return cls(IdType.ID_RFC822_ADDR, text.encode())
        return cls(IdType.ID_FQDN, text.encode())

    @classmethod
    def _key_id_hex(cls, digits: str) -> Identity:
        try:
            return cls(IdType.ID_KEY_ID, bytes.fromhex(digits))
        except ValueError:
            raise IdentitySyntaxError(f"KEY_ID {digits!r} is not hex") from None

    @classmethod
    def from_payload(cls, id_type: int, data: bytes) -> Identity:
        """From an IDi/IDr payload (wire input: ProtocolError(INVALID_SYNTAX) if malformed)."""
        data = bytes(data)
        try:
            kind = IdType(id_type)
        except ValueError:
            raise ProtocolError(f"unknown ID type {id_type}") from None
        if kind is IdType.ID_IPV4_ADDR and len(data) != 4:
            raise ProtocolError(f"ID_IPV4_ADDR with {len(data)} octets")
        if kind is IdType.ID_IPV6_ADDR and len(data) != 16:
            raise ProtocolError(f"ID_IPV6_ADDR with {len(data)} octets")
        if kind is IdType.ID_DER_ASN1_DN:
            try:
                _load_name(data)
            except ValueError:
                raise ProtocolError("ID_DER_ASN1_DN is not a DER Name") from None
        if kind is not IdType.ID_NULL and not data:
            raise ProtocolError(f"empty {kind.name} identity")
        return cls(kind, data)

    def to_payload(self) -> tuple[IdType, bytes]:
        """(ID type, data) for an IDi/IDr payload."""
        if self.id_type is None:
            raise ValueError("%any cannot be sent as an identity")
        return self.id_type, self.data

    def payload_body(self) -> bytes:
        """ID Type | RESERVED (3) | data: the octets AUTH's MACedID covers (sec. 2.15)."""
        kind, data = self.to_payload()
        return bytes([int(kind), 0, 0, 0]) + data

    # ---- rendering ---------------------------------------------------------------------

    def __str__(self) -> str:
        return _text_cached(self)

    def _text(self) -> str:
        kind = self.id_type
        if kind is None:
            return "%any"
        if kind in (IdType.ID_IPV4_ADDR, IdType.ID_IPV6_ADDR):
            return str(ipaddress.ip_address(self.data))
        if kind in (IdType.ID_FQDN, IdType.ID_RFC822_ADDR):
            text = self.data.decode("utf-8", "backslashreplace")
            try:
                reparsed = Identity.parse(text)
            except ValueError:
                reparsed = None
            if reparsed != self:  # e.g. an FQDN that looks like an IP address
                return ("fqdn:" if kind is IdType.ID_FQDN else "email:") + text
            return text
        if kind is IdType.ID_DER_ASN1_DN:
            try:
                return dn_to_string(_load_name(self.data))
            except ValueError:
                return "#" + self.data.hex()
        if kind is IdType.ID_KEY_ID:
            return "@#" + self.data.hex()
        return f"{kind.name}:#{self.data.hex()}"

    @property
    def is_any(self) -> bool:
        return self.id_type is None

    # ---- matching ----------------------------------------------------------------------

    def matches(self, received: Identity) -> bool:
        """Does the peer's ``received`` identity satisfy this configured one?"""
        if self.id_type is None:
            return True
        if received.id_type != self.id_type:
            return False
        if self.id_type in (IdType.ID_FQDN, IdType.ID_RFC822_ADDR):
            pattern = self.data.decode("ascii", "replace").lower()
            value = received.data.decode("ascii", "replace").lower()
            if "*" in pattern:
                return fnmatch.fnmatchcase(value, pattern.replace("?", "[?]"))
            return pattern == value
        if self.id_type is IdType.ID_DER_ASN1_DN:
            try:
                mine = _name_pairs(_load_name(self.data))
                theirs = _name_pairs(_load_name(received.data))
            except ValueError:
                return False
            if len(mine) != len(theirs):
                return False
            return all(
                m[0] == t[0] and (m[1] == "*" or m[1] == t[1])
                for m, t in zip(mine, theirs, strict=True)
            )
        return self.data == received.data


def _load_name(data: bytes) -> x509.Name:
    """Parse a DER Name; ValueError if it is not one."""
    try:
        return x509.Name.from_bytes(data)
    except Exception as error:  # cryptography raises ValueError (or its Rust errors)
        raise ValueError(f"not a DER Name: {error}") from None


def _ipv4(text: str) -> Identity:
    try:
        return Identity(IdType.ID_IPV4_ADDR, ipaddress.IPv4Address(text).packed)
    except ValueError:
        raise IdentitySyntaxError(f"{text!r} is not an IPv4 address") from None


def _ipv6(text: str) -> Identity:
    try:
        return Identity(IdType.ID_IPV6_ADDR, ipaddress.IPv6Address(text).packed)
    except ValueError:
        raise IdentitySyntaxError(f"{text!r} is not an IPv6 address") from None


def _keyid(text: str) -> Identity:
    if text.startswith("#"):
        return Identity._key_id_hex(text[1:])
    return Identity(IdType.ID_KEY_ID, text.encode())


_PREFIXES: dict[str, Callable[[str], Identity]] = {
    "ipv4:": _ipv4,
    "ipv6:": _ipv6,
    "fqdn:": lambda t: Identity(IdType.ID_FQDN, t.encode()),
    "dns:": lambda t: Identity(IdType.ID_FQDN, t.encode()),
    "email:": lambda t: Identity(IdType.ID_RFC822_ADDR, t.encode()),
    "rfc822:": lambda t: Identity(IdType.ID_RFC822_ADDR, t.encode()),
    "userfqdn:": lambda t: Identity(IdType.ID_RFC822_ADDR, t.encode()),
    "keyid:": _keyid,
    "asn1dn:": lambda t: Identity(IdType.ID_DER_ASN1_DN, dn_from_string(t).public_bytes()),
}

ANY = Identity(None, b"")


# The same few identities are parsed and printed for every IKE SA (configured ids, PSK
# lookup by name, logs): ~4.5 % of a responder's time under IKE load, mostly ipaddress
# parsing and the re-parse in __str__. Identities are frozen, both functions pure; errors
# are not cached (lru_cache does not keep exceptions).
@functools.lru_cache(maxsize=4096)
def _parse_cached(text: str) -> Identity:
    return Identity._parse(text)


@functools.lru_cache(maxsize=4096)
def _text_cached(identity: Identity) -> str:
    return identity._text()
