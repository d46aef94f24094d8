"""EAP-MSCHAPv2: MS-CHAPv2 (RFC 2759) inside EAP (draft-kamath-pppext-eap-mschapv2-02),
with the MSK of RFC 3079 sec. 3.

The crypto functions carry the names of RFC 2759 sec. 8 and RFC 3079 sec. 3.4 and are
checked against their test vectors (RFC 2759 sec. 9.2, RFC 3079 sec. 3.5.3). MS-CHAPv2 is
weak (its 2^56 DES core is exhaustible); aioipsec offers it because Windows and Android
clients use it, and only inside an IKE SA whose gateway is authenticated by certificate.

EAP Type-Data of type 26 (draft-kamath sec. 2)::

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |    OpCode     |  MS-CHAPv2-ID |           MS-Length           |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |  Value-Size   |  Value (Challenge: 16, Response: 49) ...
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |  Name ...
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+

Response Value (RFC 2759 sec. 4): Peer-Challenge (16) | Reserved (8, zero) | NT-Response
(24) | Flags (1, zero). Success and Failure Requests carry a text Message after MS-Length
("S=<40 hex> M=..." / "E=691 R=0 C=<32 hex> V=3 M=..."); their Responses are the OpCode
octet alone. MS-Length counts from OpCode to the end (EAP Length - 5).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Self

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes

from ikev2.crypto.md4 import md4
from ikev2.eap.packet import EapError, EapPacket
from ikev2.enums import EapCode, EapType

# --------------------------------------------------------------------------- RFC 2759 sec. 8

# RFC 2759 sec. 8.7 GenerateAuthenticatorResponse()
_AUTH_MAGIC1 = b"Magic server to client signing constant"
_AUTH_MAGIC2 = b"Pad to make it do more than one iteration"
# RFC 3079 sec. 3.4 GetMasterKey() / GetAsymmetricStartKey()
_KEY_MAGIC1 = b"This is the MPPE Master Key"
_KEY_MAGIC2 = (
    b"On the client side, this is the send key; on the server side, it is the receive key."
)
_KEY_MAGIC3 = (
    b"On the client side, this is the receive key; on the server side, it is the send key."
)
_SHS_PAD1 = bytes(40)
_SHS_PAD2 = b"\xf2" * 40


def nt_password_hash(password: str) -> bytes:
    """NtPasswordHash (sec. 8.3): MD4 of the password in UTF-16LE (Unicode, sec. 8.1)."""
    return md4(password.encode("utf-16-le"))


def hash_nt_password_hash(password_hash: bytes) -> bytes:
    """HashNtPasswordHash (sec. 8.4)."""
    return md4(password_hash)


def user_name(identity: str) -> str:
    """The user name of ChallengeHash (sec. 8.2): without a Windows "DOMAIN\\" prefix."""
    return identity.rsplit("\\", 1)[-1]


def challenge_hash(peer_challenge: bytes, authenticator_challenge: bytes, name: str) -> bytes:
    """ChallengeHash (sec. 8.2): SHA-1 of both challenges and the user name, first 8 octets."""
    digest = hashlib.sha1(
        peer_challenge + authenticator_challenge + user_name(name).encode("utf-8")
    )
    return digest.digest()[:8]


def _des_key(seven: bytes) -> bytes:
    """DesEncrypt's key (sec. 8.6): 56 bits spread over 8 octets, parity bits left 0
    (DES ignores them; OpenSSL does not check them)."""
    bits = int.from_bytes(seven, "big")
    return bytes(((bits >> (49 - 7 * i)) & 0x7F) << 1 for i in range(8))


def _des_encrypt(clear: bytes, seven: bytes) -> bytes:
    # Single DES is 3DES with K1 = K2 = K3, the one form ``cryptography`` still offers
    # (its "decrepit" module); MS-CHAPv2 needs nothing stronger and nothing else uses it.
    key = _des_key(seven)
    encryptor = Cipher(TripleDES(key * 3), modes.ECB()).encryptor()
    return encryptor.update(clear) + encryptor.finalize()


def challenge_response(challenge: bytes, password_hash: bytes) -> bytes:
    """ChallengeResponse (sec. 8.5): the 24-octet response of three DES keys."""
    z = password_hash + bytes(21 - len(password_hash))
    return b"".join(_des_encrypt(challenge, z[i : i + 7]) for i in (0, 7, 14))


def generate_nt_response(
    authenticator_challenge: bytes, peer_challenge: bytes, name: str, password: str
) -> bytes:
    """GenerateNTResponse (sec. 8.1)."""
    challenge = challenge_hash(peer_challenge, authenticator_challenge, name)
    return challenge_response(challenge, nt_password_hash(password))


def generate_authenticator_response(
    password_hash: bytes,
    nt_response: bytes,
    peer_challenge: bytes,
    authenticator_challenge: bytes,
    name: str,
) -> str:
    """GenerateAuthenticatorResponse (sec. 8.7): ``"S=" + 40 upper-case hex digits``."""
    digest = hashlib.sha1(hash_nt_password_hash(password_hash) + nt_response + _AUTH_MAGIC1)
    challenge = challenge_hash(peer_challenge, authenticator_challenge, name)
    digest = hashlib.sha1(digest.digest() + challenge + _AUTH_MAGIC2)
    return "S=" + digest.hexdigest().upper()


def get_master_key(password_hash_hash: bytes, nt_response: bytes) -> bytes:
    """GetMasterKey (RFC 3079 sec. 3.4)."""
    return hashlib.sha1(password_hash_hash + nt_response + _KEY_MAGIC1).digest()[:16]


def get_asymmetric_start_key(master_key: bytes, is_send: bool, is_server: bool) -> bytes:
    """GetAsymmetricStartKey (RFC 3079 sec. 3.4), 16 octets."""
    magic = _KEY_MAGIC3 if is_send == is_server else _KEY_MAGIC2
    return hashlib.sha1(master_key + _SHS_PAD1 + magic + _SHS_PAD2).digest()[:16]


def msk(password_hash_hash: bytes, nt_response: bytes) -> bytes:
    """The 64-octet EAP-MSCHAPv2 MSK: MasterReceiveKey | MasterSendKey | 32 zero octets,
    in the server's terms (the client's send key, then its receive key: the same octets
    on both sides), as Windows, hostapd and strongSwan derive it. RFC 7296 sec. 2.16 uses
    it as the AUTH key."""
    master = get_master_key(password_hash_hash, nt_response)
    receive = get_asymmetric_start_key(master, is_send=False, is_server=True)
    send = get_asymmetric_start_key(master, is_send=True, is_server=True)
    return receive + send + bytes(32)


# --------------------------------------------------------------------------- packets


class OpCode(IntEnum):
    """draft-kamath-pppext-eap-mschapv2 sec. 2."""

    CHALLENGE = 1
    RESPONSE = 2
    SUCCESS = 3
    FAILURE = 4
    CHANGE_PASSWORD = 7


@dataclass
class MsChapV2Message:
    """The Type-Data of one EAP-MSCHAPv2 packet (see the module docstring)."""

    opcode: OpCode | int
    ms_id: int = 0
    value: bytes = b""  # Challenge (16) or Response (49); empty for Success/Failure
    name: bytes = b""  # Name of Challenge/Response; the Message of Success/Failure Requests
    short: bool = False  # a Success/Failure Response: the OpCode octet alone

    @classmethod
    def parse(cls, data: bytes) -> Self:
        if not data:
            raise EapError("EAP-MSCHAPv2 packet without an OpCode")
        opcode = data[0]
        if len(data) == 1 and opcode in (OpCode.SUCCESS, OpCode.FAILURE):
            return cls(OpCode(opcode), short=True)
        if len(data) < 4:
            raise EapError(f"EAP-MSCHAPv2 packet of {len(data)} octets")
        ms_id, ms_length = struct.unpack_from("!BH", data, 1)
        if ms_length != len(data):
            raise EapError(f"EAP-MSCHAPv2 MS-Length {ms_length} in {len(data)} octets")
        if opcode in (OpCode.CHALLENGE, OpCode.RESPONSE):
            if len(data) < 5:
                raise EapError("EAP-MSCHAPv2 Challenge/Response without a Value-Size")
            size = data[4]
            expected = 16 if opcode == OpCode.CHALLENGE else 49
            if size != expected or len(data) < 5 + size:
                raise EapError(f"EAP-MSCHAPv2 {OpCode(opcode).name} Value-Size {size}")
            return cls(OpCode(opcode), ms_id, bytes(data[5 : 5 + size]), bytes(data[5 + size :]))
        if opcode in (OpCode.SUCCESS, OpCode.FAILURE):
            return cls(OpCode(opcode), ms_id, name=bytes(data[4:]))
        raise EapError(f"EAP-MSCHAPv2 OpCode {opcode} is not supported")

    def serialize(self) -> bytes:
        if self.short:
            return bytes((self.opcode,))
        body = bytes((len(self.value),)) + self.value if self.value else b""
        body += self.name
        return struct.pack("!BBH", self.opcode, self.ms_id, 4 + len(body)) + body


def _packet(code: EapCode, identifier: int, message: MsChapV2Message) -> EapPacket:
    return EapPacket(code, identifier, EapType.MSCHAPV2, message.serialize())


def _message(packet: EapPacket) -> MsChapV2Message:
    if packet.type != EapType.MSCHAPV2:
        raise EapError(f"{packet.describe()} during EAP-MSCHAPv2")
    return MsChapV2Message.parse(packet.data)


Random = Callable[[int], bytes]
PasswordLookup = Callable[[str], "str | None"]


class MsChapV2Server:
    """The authenticator's side (the gateway): Challenge, check Response, Success/Failure.

    ``process`` takes the peer's Response and returns the next Request, or None when the
    method is over (``succeeded`` tells how; ``msk`` is set on success). ``identity`` is
    the authenticated name: the Name of the peer's Response, as strongSwan uses it.
    """

    type = EapType.MSCHAPV2

    def __init__(
        self, lookup: PasswordLookup, server_name: str = "aioipsec", random: Random = os.urandom
    ) -> None:
        self._lookup = lookup
        self._server_name = server_name.encode()
        self._random = random
        self._challenge = b""
        self._ms_id = 0
        self._state = "start"
        self._nt_response = b""
        self._password_hash = b""
        self.identity: str | None = None
        self.succeeded = False
        self.failure_reason: str | None = None
        self.msk: bytes | None = None

    def start(self, identifier: int) -> EapPacket:
        self._challenge = self._random(16)
        self._ms_id = self._random(1)[0]
        self._state = "challenge"
        message = MsChapV2Message(OpCode.CHALLENGE, self._ms_id, self._challenge, self._server_name)
        return _packet(EapCode.REQUEST, identifier, message)

    def process(self, packet: EapPacket, identifier: int) -> EapPacket | None:
        message = _message(packet)
        if self._state == "challenge":
            if message.opcode != OpCode.RESPONSE or message.ms_id != self._ms_id:
                raise EapError(
                    f"expected an MS-CHAPv2 Response to id {self._ms_id}, got "
                    f"{OpCode(message.opcode).name} id {message.ms_id}"
                )
            return self._check_response(message, identifier)
        if self._state in ("success", "failure"):
            wanted = OpCode.SUCCESS if self._state == "success" else OpCode.FAILURE
            if message.opcode != wanted or not message.short:
                raise EapError(f"expected the MS-CHAPv2 {wanted.name} acknowledgement")
            self.succeeded = self._state == "success"
            self._state = "done"
            return None
        raise EapError("EAP-MSCHAPv2 message after the method ended")

    def _check_response(self, message: MsChapV2Message, identifier: int) -> EapPacket:
        peer_challenge, nt_response = message.value[:16], message.value[24:48]
        try:
            name = message.name.decode("utf-8")
        except UnicodeDecodeError:
            raise EapError("EAP-MSCHAPv2 Name is not UTF-8") from None
        self.identity = name
        password = self._lookup(name)
        expected = b""
        if password is not None:
            self._password_hash = nt_password_hash(password)
            expected = generate_nt_response(self._challenge, peer_challenge, name, password)
        # Compared in constant time (the password hash must not leak through timing).
        if password is None or not hmac.compare_digest(expected, nt_response):
            self.failure_reason = (
                f"no EAP secret for {name!r}"
                if password is None
                else f"wrong MS-CHAPv2 password for {name!r}"
            )
            self._state = "failure"
            text = f"E=691 R=0 C={self._random(16).hex().upper()} V=3 M=Authentication failed"
            message = MsChapV2Message(OpCode.FAILURE, self._ms_id, name=text.encode())
            return _packet(EapCode.REQUEST, identifier, message)
        self._nt_response = nt_response
        response = generate_authenticator_response(
            self._password_hash, nt_response, peer_challenge, self._challenge, name
        )
        self.msk = msk(hash_nt_password_hash(self._password_hash), nt_response)
        self._state = "success"
        success = f"{response} M=Welcome".encode()
        return _packet(
            EapCode.REQUEST, identifier, MsChapV2Message(OpCode.SUCCESS, self._ms_id, name=success)
        )


_AUTHENTICATOR_RESPONSE = re.compile(rb"S=([0-9A-Fa-f]{40})")


class MsChapV2Peer:
    """The peer's side (the road warrior): answer the Challenge, check the gateway's
    authenticator response (mutual authentication, RFC 2759 sec. 5), acknowledge."""

    type = EapType.MSCHAPV2

    def __init__(self, identity: str, password: str, random: Random = os.urandom) -> None:
        self._identity = identity
        self._password = password
        self._random = random
        self._state = "start"
        self._expected = ""
        self.succeeded = False
        self.failure_reason: str | None = None
        self.msk: bytes | None = None

    def process(self, packet: EapPacket) -> EapPacket:
        message = _message(packet)
        if self._state == "start" and message.opcode == OpCode.CHALLENGE:
            peer_challenge = self._random(16)
            nt_response = generate_nt_response(
                message.value, peer_challenge, self._identity, self._password
            )
            password_hash = nt_password_hash(self._password)
            self._expected = generate_authenticator_response(
                password_hash, nt_response, peer_challenge, message.value, self._identity
            )
            self.msk = msk(hash_nt_password_hash(password_hash), nt_response)
            value = peer_challenge + bytes(8) + nt_response + b"\x00"
            response = MsChapV2Message(
                OpCode.RESPONSE, message.ms_id, value, self._identity.encode("utf-8")
            )
            self._state = "responded"
            return _packet(EapCode.RESPONSE, packet.identifier, response)
        if self._state == "responded" and message.opcode == OpCode.SUCCESS:
            found = _AUTHENTICATOR_RESPONSE.search(message.name)
            got = "S=" + found.group(1).decode().upper() if found else ""
            if not hmac.compare_digest(got.encode(), self._expected.encode()):
                self.msk = None
                raise EapError(
                    "the gateway's MS-CHAPv2 authenticator response is wrong: "
                    "it does not know our password"
                )
            self.succeeded = True
            self._state = "done"
            return _packet(
                EapCode.RESPONSE, packet.identifier, MsChapV2Message(OpCode.SUCCESS, short=True)
            )
        if self._state == "responded" and message.opcode == OpCode.FAILURE:
            self.msk = None
            text = message.name.decode("ascii", "replace")
            code = re.search(r"E=(\d+)", text)
            self.failure_reason = "the gateway refused our MS-CHAPv2 password" + (
                f" (E={code.group(1)})" if code else ""
            )
            self._state = "done"
            return _packet(
                EapCode.RESPONSE, packet.identifier, MsChapV2Message(OpCode.FAILURE, short=True)
            )
        raise EapError(f"unexpected MS-CHAPv2 OpCode {message.opcode} in state {self._state}")
