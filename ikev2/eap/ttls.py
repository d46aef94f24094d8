"""EAP-TTLS version 0 (RFC 5281): a TLS 1.2 tunnel carried in EAP, an inner EAP method
carried in Diameter AVPs inside it, both roles, with the MSK of RFC 5281 sec. 8.

The TLS part reuses EAP-TLS's machinery (:mod:`ikev2.eap.tls`: pyOpenSSL through memory
BIOs, the same fragmentation), with two differences of RFC 5281:

* only the server has a certificate (sec. 7.1: the client is authenticated in phase 2),
  so the gateway does not request one;
* the Flags octet carries the EAP-TTLS version in its low three bits (sec. 9.1); only
  version 0 exists and anything else is refused.

Phase 2 (sec. 11.2.1, as strongSwan's eap-ttls runs it): after the handshake the client
sends an EAP-Response/Identity in an EAP-Message AVP, without a Request (the tunnel
replaced it); the server then runs an inner EAP method in the same way: EAP-MD5
(strongSwan's default ``phase2_method``) first, EAP-MSCHAPv2 when the client Naks MD5.
The inner EAP-Success is not tunnelled: the outer EAP-Success ends both.

AVP (sec. 10.1), in the TLS application data, padded to four octets (sec. 10.2)::

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                           AVP Code                            |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |V M r r r r r r|                  AVP Length                   |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                        Vendor-ID (opt)                        |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |    Data ...
    +-+-+-+-+-+-+-+-+

The EAP packet travels in EAP-Message (code 79, M set, sec. 11.2.1). An AVP we do not know
with M set is refused (sec. 10.1: "MUST fail the negotiation"); without M it is skipped.

Keying material (sec. 8): PRF(master secret, "ttls keying material", client random ||
server random), 128 octets: the MSK is the first 64 (the EMSK the next 64, unused in
IKEv2). That is the RFC 5705 exporter without a context, as for EAP-TLS.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Self

from OpenSSL import SSL

from ikev2.eap.packet import EapError, EapPacket, identity_response
from ikev2.eap.session import (
    EapAuthenticator,
    EapPeer,
    PeerMethodFactory,
    ServerMethodFactory,
)
from ikev2.eap.tls import FLAG_S, TlsCredentials, _TlsOverEap, read_available
from ikev2.enums import EapCode, EapType

_EXPORT_LABEL = b"ttls keying material"  # RFC 5281 sec. 8
VERSION_MASK = 0x07  # RFC 5281 sec. 9.1: the low three bits of the Flags octet
AVP_EAP_MESSAGE = 79  # RFC 3579 sec. 3.1, carried as RFC 5281 sec. 11.2.1 says
AVP_FLAG_V = 0x80
AVP_FLAG_M = 0x40
# Inner EAP packets are small (an MS-CHAPv2 Response is 59 octets); a peer announcing
# more than this in one AVP is refused before anything is buffered.
MAX_AVP = 4096


@dataclass(frozen=True)
class Avp:
    """One Diameter AVP as RFC 5281 sec. 10.1 carries it."""

    code: int
    data: bytes
    mandatory: bool = True
    vendor: int | None = None

    @classmethod
    def parse_all(cls, octets: bytes) -> list[Self]:
        """Every AVP of the decrypted application data (a record may hold several)."""
        avps = []
        offset = 0
        while offset < len(octets):
            if len(octets) - offset < 8:
                raise EapError(f"EAP-TTLS AVP header of {len(octets) - offset} octets (8)")
            code, flags_length = struct.unpack_from("!II", octets, offset)
            flags, length = flags_length >> 24, flags_length & 0xFFFFFF
            header = 12 if flags & AVP_FLAG_V else 8
            if length < header or length > MAX_AVP:
                raise EapError(f"EAP-TTLS AVP Length {length} (from {header} to {MAX_AVP})")
            if offset + length > len(octets):
                raise EapError(
                    f"EAP-TTLS AVP of {length} octets in {len(octets) - offset} remaining"
                )
            vendor = None
            if flags & AVP_FLAG_V:
                (vendor,) = struct.unpack_from("!I", octets, offset + 8)
            data = octets[offset + header : offset + length]
            avps.append(cls(code, bytes(data), bool(flags & AVP_FLAG_M), vendor))
            # sec. 10.2: each AVP starts on a four-octet boundary; the last may be unpadded.
            offset += (length + 3) & ~3
        return avps

    def serialize(self) -> bytes:
        flags = (AVP_FLAG_M if self.mandatory else 0) | (AVP_FLAG_V if self.vendor else 0)
        vendor = struct.pack("!I", self.vendor) if self.vendor else b""
        length = 8 + len(vendor) + len(self.data)
        padding = bytes(-length % 4)
        return struct.pack("!II", self.code, flags << 24 | length) + vendor + self.data + padding


def eap_from_avps(octets: bytes) -> bytes:
    """The one inner EAP packet of a phase-2 message (EapError for anything else)."""
    messages = []
    for avp in Avp.parse_all(octets):
        if avp.code == AVP_EAP_MESSAGE and avp.vendor is None:
            messages.append(avp.data)
        elif avp.mandatory:
            raise EapError(
                f"EAP-TTLS AVP {avp.code}"
                + (f" of vendor {avp.vendor}" if avp.vendor else "")
                + " is mandatory and not understood (RFC 5281 sec. 10.1)"
            )
    if len(messages) != 1:
        raise EapError(f"EAP-TTLS phase 2 message with {len(messages)} EAP-Message AVPs (1)")
    return messages[0]


def avp_for(packet: EapPacket) -> bytes:
    return Avp(AVP_EAP_MESSAGE, packet.serialize()).serialize()


class _TtlsOverEap(_TlsOverEap):
    """TLS with the TTLS label and version bits, and application data once it is up."""

    type = EapType.TTLS

    def _type_data(self, data: bytes) -> bytes:
        """The Flags' version must be 0 (sec. 9.1); the rest is EAP-TLS framing."""
        if not data:
            raise EapError("EAP-TTLS packet without Flags")
        if data[0] & VERSION_MASK:
            raise EapError(f"EAP-TTLS version {data[0] & VERSION_MASK} (only 0 exists)")
        return data

    def _seal(self, plaintext: bytes) -> None:
        """Application data out through the tunnel, ready to be fragmented."""
        try:
            self._connection.send(plaintext)
        except SSL.Error as error:
            raise EapError(f"EAP-TTLS tunnel could not send: {error}") from None
        self._feed(b"")  # the records the tunnel made of it

    def _open(self, records: bytes) -> bytes:
        """Application data in (the whole of what these records carry)."""
        try:
            self._connection.bio_write(records)
            plaintext = read_available(self._connection.recv)
        except SSL.ZeroReturnError:
            raise EapError("the EAP-TTLS peer closed the tunnel") from None
        except SSL.Error as error:
            raise EapError(f"EAP-TTLS tunnel data refused: {error}") from None
        return plaintext

    def _keying_material(self) -> bytes:
        return bytes(self._connection.export_keying_material(_EXPORT_LABEL, 128)[:64])

    def _packet(self, code: EapCode, identifier: int, data: bytes) -> EapPacket:
        return EapPacket(code, identifier, EapType.TTLS, data)


def _random_identifier(identifier: int) -> Callable[[int], bytes]:
    """So an inner authenticator's first Identifier is ``identifier`` (see below)."""
    return lambda _n: bytes(((identifier - 1) & 0xFF,))


class EapTtlsServer(_TtlsOverEap):
    """The gateway: TLS with our certificate, then the inner method for the identity the
    client gives inside the tunnel. ``phase2`` are the inner methods, the first proposed
    first (a Nak may pick another); ``eap_id`` (not ``%any``): the inner identity must be it.
    """

    def __init__(
        self,
        credentials: TlsCredentials,
        now: float,
        phase2: Mapping[EapType, ServerMethodFactory],
        eap_id: str | None = None,
    ) -> None:
        super().__init__(credentials, now, server=True)
        # The client has no certificate in EAP-TTLS (sec. 7.1): do not ask for one.
        self._connection.set_verify(SSL.VERIFY_NONE, None)
        self._phase2 = dict(phase2)
        self._eap_id = None if eap_id in (None, "%any") else eap_id
        self._inner: EapAuthenticator | None = None
        self._state = "start"

    def start(self, identifier: int) -> EapPacket:
        self._state = "handshake"
        return self._packet(EapCode.REQUEST, identifier, bytes((FLAG_S,)))

    def process(self, packet: EapPacket, identifier: int) -> EapPacket | None:
        if self._state not in ("handshake", "phase2"):
            raise EapError("EAP-TTLS message after the method ended")
        data = self._type_data(packet.data)
        if self.sending:
            if data != b"\x00":
                raise EapError("expected an EAP-TTLS fragment acknowledgement")
            return self._packet(EapCode.REQUEST, identifier, self._fragment())
        message = self._take(data)
        if message is None:
            return self._packet(EapCode.REQUEST, identifier, b"\x00")
        if self._state == "handshake":
            out = self._feed(message)
            if self.failure_reason is not None:
                self._state = "done"
                return None
            if not out:
                raise EapError(
                    "EAP-TTLS: the peer's message left the handshake with nothing to say"
                )
            if self.handshake_done:
                self._state = "phase2"
            return self._packet(EapCode.REQUEST, identifier, self._fragment())
        if not message:
            # A client that waits to be asked: the Identity Request goes through the tunnel.
            inner = self._inner_authenticator(identifier)
            return self._tunnel(inner.start(), identifier)
        return self._phase2_step(self._open(message), identifier)

    def _inner_authenticator(self, first_identifier: int) -> EapAuthenticator:
        if self._inner is not None:
            raise EapError("EAP-TTLS phase 2 started twice")
        self._inner = EapAuthenticator(
            self._phase2, self._eap_id, random=_random_identifier(first_identifier)
        )
        return self._inner

    def _phase2_step(self, plaintext: bytes, identifier: int) -> EapPacket | None:
        inner_message = eap_from_avps(plaintext)
        if self._inner is None:
            # sec. 11.2.1 (and strongSwan): the client starts phase 2 with an
            # EAP-Response/Identity to a Request it never saw. The inner authenticator
            # is started as if it had sent that Request, with the Response's Identifier.
            response = EapPacket.parse(inner_message)
            if response.code != EapCode.RESPONSE or response.type != EapType.IDENTITY:
                raise EapError(
                    f"EAP-TTLS phase 2 began with {response.describe()}, not an Identity"
                )
            self._inner_authenticator(response.identifier).start()
        assert self._inner is not None
        answer = self._inner.process(inner_message)
        if self._inner.pending_failure is not None:
            self.failure_reason = self._inner.pending_failure
        if not self._inner.finished:
            return self._tunnel(answer, identifier)
        # The inner EAP-Success / EAP-Failure is not tunnelled: the outer one ends both.
        self._state = "done"
        self.identity = self._inner.identity
        if not self._inner.succeeded:
            self.failure_reason = f"phase 2: {self._inner.failure_reason}"
            return None
        self.msk = self._keying_material()
        self.succeeded = True
        return None

    def _tunnel(self, inner: EapPacket, identifier: int) -> EapPacket:
        self._seal(avp_for(inner))
        return self._packet(EapCode.REQUEST, identifier, self._fragment())


class _InnerPeer(EapPeer):
    @property
    def method_succeeded(self) -> bool:
        return self._method is not None and self._method.succeeded


class EapTtlsPeer(_TtlsOverEap):
    """The road warrior: the server's certificate must chain to ``cacerts`` and name
    ``server_identity``; then the inner method (``phase2``) for ``identity``."""

    def __init__(
        self,
        credentials: TlsCredentials,
        now: float,
        identity: str,
        phase2: Mapping[EapType, PeerMethodFactory],
        server_identity: str | None = None,
    ) -> None:
        super().__init__(credentials, now, server=False)
        self._server_identity = server_identity
        self._identity = identity
        self._inner = _InnerPeer(identity, dict(phase2))
        self._started = False
        self._tunnel_up = False

    def process(self, packet: EapPacket) -> EapPacket:
        data = self._type_data(packet.data)
        if not self._started:
            if not data[0] & FLAG_S:
                raise EapError("EAP-TTLS must start with a Start request (RFC 5281 sec. 9.2.1)")
            self._started = True
            self._feed(b"")
            return self._packet(EapCode.RESPONSE, packet.identifier, self._fragment())
        if self.sending:
            if data != b"\x00":
                raise EapError("expected an EAP-TTLS fragment acknowledgement")
            return self._packet(EapCode.RESPONSE, packet.identifier, self._fragment())
        message = self._take(data)
        if message is None:
            return self._packet(EapCode.RESPONSE, packet.identifier, b"\x00")
        if self._tunnel_up:
            return self._phase2_step(self._open(message), packet.identifier)
        out = self._feed(message)
        if self.failure_reason is not None:
            raise EapError(self.failure_reason)
        if out:
            return self._packet(EapCode.RESPONSE, packet.identifier, self._fragment())
        if not self.handshake_done:
            raise EapError("EAP-TTLS: the server's message left the handshake unfinished")
        # The server's Finished: check who it is before anything goes through the tunnel.
        self._finish(self._server_identity)
        if not self.succeeded:
            raise EapError(self.failure_reason or "EAP-TTLS server refused")
        self.succeeded = False  # until phase 2 authenticated us
        self.msk = self._keying_material()
        self._tunnel_up = True
        self._seal(avp_for(identity_response(0, self._identity)))
        return self._packet(EapCode.RESPONSE, packet.identifier, self._fragment())

    def _phase2_step(self, plaintext: bytes, identifier: int) -> EapPacket:
        answer = self._inner.process(eap_from_avps(plaintext))
        if answer is None:  # an inner Success/Failure (strongSwan sends none)
            if not self._inner.succeeded:
                raise EapError(f"phase 2: {self._inner.failure_reason or 'EAP-Failure'}")
            self.succeeded = True
            return self._packet(EapCode.RESPONSE, identifier, b"\x00")
        self.succeeded = self._inner.method_succeeded
        self._seal(avp_for(answer))
        return self._packet(EapCode.RESPONSE, identifier, self._fragment())
