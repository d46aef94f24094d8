"""EAP-MD5 (RFC 3748 sec. 5.4): CHAP's MD5 challenge (RFC 1994 sec. 4) inside EAP, both roles.

EAP-MD5 authenticates the peer only (not the gateway) and derives no key (RFC 3748 sec.
5.4: "does not provide ... key derivation"). Inside IKEv2 the gateway has already proved
itself by its certificate or PSK, and, as no MSK exists, the final AUTH payloads are keyed
with SK_pi and SK_pr instead (RFC 7296 sec. 2.16), as strongSwan's eap-md5 does. The
challenge/response is open to an offline dictionary attack by anyone who sees it; inside
the IKE SA only the gateway does. It is offered because strongSwan and its test
configurations use it; prefer EAP-TLS, EAP-TTLS or EAP-MSCHAPv2.

Type-Data of type 4 (RFC 1994 sec. 4.1, as RFC 3748 sec. 5.4 carries it)::

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |  Value-Size   |  Value ...                                    |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |  Name ...
    +-+-+-+-+-+-+-+-+

Request: Value is the challenge (16 random octets here, as strongSwan sends). Response:
Value = MD5(Identifier || secret || challenge) (RFC 1994 sec. 4.1), where Identifier is
that of the EAP Request/Response pair. The optional Name is ignored (the EAP identity names
the peer).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Self

from ikev2.eap.packet import EapError, EapPacket
from ikev2.enums import EapCode, EapType

CHALLENGE_LENGTH = 16
Random = Callable[[int], bytes]
PasswordLookup = Callable[[str], "str | None"]


@dataclass(frozen=True)
class Md5Message:
    """The Type-Data of an EAP-MD5 Request or Response."""

    value: bytes
    name: bytes = b""

    @classmethod
    def parse(cls, data: bytes) -> Self:
        if not data:
            raise EapError("EAP-MD5 packet without a Value-Size")
        size = data[0]
        if size == 0 or 1 + size > len(data):
            raise EapError(f"EAP-MD5 Value-Size {size} in {len(data)} octets of Type-Data")
        return cls(bytes(data[1 : 1 + size]), bytes(data[1 + size :]))

    def serialize(self) -> bytes:
        return bytes((len(self.value),)) + self.value + self.name


def chap_md5(identifier: int, secret: str, challenge: bytes) -> bytes:
    """RFC 1994 sec. 4.1: MD5 over the Identifier, the secret and the challenge."""
    return hashlib.md5(bytes((identifier,)) + secret.encode("utf-8") + challenge).digest()


class Md5Server:
    """The gateway: a random challenge; the Response must be the MD5 of the peer's secret."""

    type = EapType.MD5_CHALLENGE

    def __init__(self, identity: str, lookup: PasswordLookup, random: Random = os.urandom) -> None:
        self._identity = identity
        self._lookup = lookup
        self._random = random
        self._challenge = b""
        self._identifier = -1
        self.identity: str | None = None
        self.succeeded = False
        self.failure_reason: str | None = None
        self.msk: bytes | None = None  # never: EAP-MD5 derives no key

    def start(self, identifier: int) -> EapPacket:
        self._challenge = self._random(CHALLENGE_LENGTH)
        self._identifier = identifier
        data = Md5Message(self._challenge).serialize()
        return EapPacket(EapCode.REQUEST, identifier, EapType.MD5_CHALLENGE, data)

    def process(self, packet: EapPacket, identifier: int) -> EapPacket | None:
        if self._identifier < 0:
            raise EapError("EAP-MD5 Response before the challenge")
        if packet.identifier != self._identifier:
            raise EapError("EAP-MD5 Response to another challenge (out of order or repeated)")
        message = Md5Message.parse(packet.data)
        self._identifier = -1  # one Response only
        secret = self._lookup(self._identity)
        expected = b"" if secret is None else chap_md5(packet.identifier, secret, self._challenge)
        # Constant time: the comparison must not tell how much of the hash was right.
        if secret is None or not hmac.compare_digest(expected, message.value):
            self.failure_reason = (
                f"no EAP secret for {self._identity!r}"
                if secret is None
                else f"wrong EAP-MD5 secret for {self._identity!r}"
            )
            return None
        self.identity = self._identity
        self.succeeded = True
        return None


class Md5Peer:
    """The road warrior: answers the challenge with its secret. It cannot tell whether the
    gateway knows the secret (EAP-MD5 is one-way); the gateway's IKE AUTH, checked before
    EAP began, is what authenticates it."""

    type = EapType.MD5_CHALLENGE

    def __init__(self, secret: str) -> None:
        self._secret = secret
        self._answered = False
        self.succeeded = False
        self.failure_reason: str | None = None
        self.msk: bytes | None = None

    def process(self, packet: EapPacket) -> EapPacket:
        if self._answered:
            raise EapError("a second EAP-MD5 challenge in one conversation")
        message = Md5Message.parse(packet.data)
        self._answered = True
        # Success here means "answered": the EAP-Success that follows is the verdict.
        self.succeeded = True
        value = chap_md5(packet.identifier, self._secret, message.value)
        return EapPacket(
            EapCode.RESPONSE,
            packet.identifier,
            EapType.MD5_CHALLENGE,
            Md5Message(value).serialize(),
        )
