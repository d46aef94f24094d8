"""EAP-TLS (RFC 5216): a TLS 1.2 handshake carried in EAP, both roles, with its MSK.

Why pyOpenSSL: the MSK is TLS-PRF(master_secret, "client EAP encryption", client.random ||
server.random) (RFC 5216 sec. 2.3), which is exactly the RFC 5705 keying-material exporter
without a context. Python's ``ssl`` module has no exporter (nor access to the master secret),
and ``cryptography`` has no TLS; pyOpenSSL, maintained by the same PyCA project as
``cryptography`` and built on the same OpenSSL, has ``Connection.export_keying_material``
and memory BIOs, so the handshake runs over EAP with no socket. TLS 1.3 (RFC 9190, a
different key schedule and a commitment message) is not offered: the version is pinned to
TLS 1.2, which every EAP-TLS peer (strongSwan, Windows, Android) speaks.

The certificates are checked by our own ``ikev2.crypto.certs.validate_chain`` (the same
rules as IKE's certificate authentication), not by OpenSSL's verifier: OpenSSL is told to
request and accept the peer's chain, and the method validates it once the handshake is over,
against the configured CAs and the expected identity.

EAP-TLS Type-Data (RFC 5216 sec. 3.1, 3.2)::

     0 1 2 3 4 5 6 7 8
    +-+-+-+-+-+-+-+-+
    |L M S R R R R R|  Flags: L = length included, M = more fragments, S = EAP-TLS start
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                 TLS Message Length (4 octets, only with L)                    |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |  TLS Data ...

A fragment with M is acknowledged by an EAP-TLS packet with no data (sec. 2.1.5).
"""

from __future__ import annotations

import datetime
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from OpenSSL import SSL, crypto

from ikev2.crypto.auth import AuthenticationError
from ikev2.crypto.certs import validate_chain
from ikev2.eap.packet import EapError, EapPacket
from ikev2.enums import EapCode, EapType
from ikev2.identity import Identity, IdentitySyntaxError

FLAG_L = 0x80
FLAG_M = 0x40
FLAG_S = 0x20
# strongSwan's EAP-TLS fragment size; inside IKE, IKE fragmentation (RFC 7383) does the rest.
FRAGMENT_SIZE = 1024
# A whole TLS flight (certificate chains included) is far below this; a peer announcing
# more is refused before anything is buffered.
MAX_MESSAGE = 128 * 1024
_EXPORT_LABEL = b"client EAP encryption"  # RFC 5216 sec. 2.3


def _context(certs: Sequence[x509.Certificate], key: Any, server: bool) -> SSL.Context:
    context = SSL.Context(SSL.TLS_METHOD)
    context.set_min_proto_version(SSL.TLS1_2_VERSION)
    context.set_max_proto_version(SSL.TLS1_2_VERSION)
    if certs:
        context.use_certificate(certs[0])
        for extra in certs[1:]:
            context.add_extra_chain_cert(crypto.X509.from_cryptography(extra))
        context.use_privatekey(key)
        context.check_privatekey()
    # Renegotiation is never done inside EAP-TLS: refuse it. That makes it safe to talk to
    # servers without the renegotiation_info extension (RFC 5746), which OpenSSL 3 refuses
    # by default; strongSwan's own TLS stack (charon's eap-tls as gateway) sends none.
    context.set_options(SSL.OP_NO_RENEGOTIATION)
    if not server:
        context.set_options(SSL.OP_LEGACY_SERVER_CONNECT)
    # OpenSSL asks for and accepts the peer's chain; validate_chain judges it afterwards.
    mode = SSL.VERIFY_PEER | (SSL.VERIFY_FAIL_IF_NO_PEER_CERT if server else 0)
    context.set_verify(mode, lambda *_: True)
    return context


@dataclass(frozen=True)
class TlsCredentials:
    """Our certificate chain (leaf first) and key, and the CAs that vouch for the peer."""

    certs: Sequence[x509.Certificate]
    key: Any = field(repr=False)
    cacerts: Sequence[x509.Certificate] = ()


def read_available(read: Callable[[int], bytes]) -> bytes:
    """All that an OpenSSL memory-BIO read (``bio_read``, ``recv``) has now: it raises
    WantReadError once there is nothing more (the BIOs never block)."""
    data = b""
    while True:
        try:
            data += read(65536)
        except SSL.WantReadError:
            return data


class _TlsOverEap:
    """What both roles share: TLS through memory BIOs, fragmentation, the final checks."""

    type = EapType.TLS

    def __init__(self, credentials: TlsCredentials, now: float, server: bool) -> None:
        context = _context(credentials.certs, credentials.key, server)
        self._connection = SSL.Connection(context, None)
        if server:
            self._connection.set_accept_state()
        else:
            self._connection.set_connect_state()
        self._cacerts = list(credentials.cacerts)
        self._now = now
        self._incoming = bytearray()
        self._incoming_total: int | None = None
        self._outgoing = b""
        self._outgoing_first = True
        self._handshake_done = False
        self.peer_certificate: x509.Certificate | None = None
        self.succeeded = False
        self.failure_reason: str | None = None
        self.msk: bytes | None = None
        self.identity: str | None = None

    # -- fragments

    def _take(self, data: bytes) -> bytes | None:
        """One received fragment; the whole TLS message when it was the last, else None."""
        if not data:
            raise EapError("EAP-TLS packet without Flags")
        flags, rest = data[0], data[1:]
        if flags & FLAG_L:
            if len(rest) < 4:
                raise EapError("EAP-TLS L flag without a TLS Message Length")
            (total,) = struct.unpack_from("!I", rest)
            rest = rest[4:]
            if total > MAX_MESSAGE:
                raise EapError(f"EAP-TLS message of {total} octets (at most {MAX_MESSAGE})")
            if self._incoming_total is not None and total != self._incoming_total:
                raise EapError("EAP-TLS TLS Message Length changed between fragments")
            self._incoming_total = total
        self._incoming += rest
        limit = self._incoming_total if self._incoming_total is not None else MAX_MESSAGE
        if len(self._incoming) > limit:
            raise EapError("EAP-TLS fragments exceed the announced TLS Message Length")
        if flags & FLAG_M:
            return None
        message = bytes(self._incoming)
        if self._incoming_total is not None and len(message) != self._incoming_total:
            raise EapError(
                f"EAP-TLS message of {len(message)} octets, {self._incoming_total} announced"
            )
        self._incoming.clear()
        self._incoming_total = None
        return message

    def _fragment(self) -> bytes:
        """The Type-Data of the next fragment of what we have to send."""
        chunk, self._outgoing = self._outgoing[:FRAGMENT_SIZE], self._outgoing[FRAGMENT_SIZE:]
        if not self._outgoing and self._outgoing_first:
            return bytes((0,)) + chunk  # unfragmented: no L needed (sec. 3.1)
        flags = FLAG_M if self._outgoing else 0
        header = b""
        if self._outgoing_first:
            flags |= FLAG_L
            header = struct.pack("!I", len(chunk) + len(self._outgoing))
        self._outgoing_first = False
        return bytes((flags,)) + header + chunk

    @property
    def sending(self) -> bool:
        return bool(self._outgoing)

    # -- TLS

    def _feed(self, message: bytes) -> bytes:
        """TLS records in, TLS records out (the next flight; empty when there is none)."""
        try:
            if message:
                self._connection.bio_write(message)
            try:
                self._connection.do_handshake()
                self._handshake_done = True
            except SSL.WantReadError:
                pass
        except SSL.Error as error:
            self.failure_reason = f"TLS handshake failed: {_openssl_reason(error)}"
        out = read_available(self._connection.bio_read)
        self._outgoing, self._outgoing_first = out, True
        return out

    @property
    def handshake_done(self) -> bool:
        return self._handshake_done and self.failure_reason is None

    def _finish(self, expected_identity: str | None) -> None:
        """After the handshake: validate the peer's chain, derive the MSK."""
        # On the server side OpenSSL's peer chain leaves out the leaf: take it separately.
        leaf = self._connection.get_peer_certificate(as_cryptography=True)
        if leaf is None:
            self.failure_reason = "the TLS peer sent no certificate"
            return
        chain = [leaf] + [
            cert
            for cert in self._connection.get_peer_cert_chain(as_cryptography=True) or []
            if cert != leaf
        ]
        try:
            identity = Identity.parse(expected_identity) if expected_identity else None
            validate_chain(
                leaf,
                chain[1:],
                self._cacerts,
                datetime.datetime.fromtimestamp(self._now, datetime.UTC),
                identity=identity if identity is not None and not identity.is_any else None,
            )
        except (AuthenticationError, IdentitySyntaxError) as error:
            self.failure_reason = f"EAP-TLS certificate refused: {error}"
            return
        self.peer_certificate = leaf
        self.identity = expected_identity
        key_material = self._connection.export_keying_material(_EXPORT_LABEL, 128)
        self.msk = bytes(key_material[:64])
        self.succeeded = True


def _openssl_reason(error: SSL.Error) -> str:
    details = error.args[0] if error.args else []
    if isinstance(details, list) and details:
        return "; ".join(str(item[-1]) for item in details if isinstance(item, tuple))
    return str(error)


def _packet(code: EapCode, identifier: int, data: bytes) -> EapPacket:
    return EapPacket(code, identifier, EapType.TLS, data)


class EapTlsServer(_TlsOverEap):
    """The gateway: Start, then the handshake; the peer's certificate must vouch for the
    EAP identity (``eap_identity``) and chain to ``cacerts``."""

    def __init__(self, eap_identity: str, credentials: TlsCredentials, now: float) -> None:
        super().__init__(credentials, now, server=True)
        self._eap_identity = eap_identity
        self._state = "start"

    def start(self, identifier: int) -> EapPacket:
        self._state = "handshake"
        return _packet(EapCode.REQUEST, identifier, bytes((FLAG_S,)))

    def process(self, packet: EapPacket, identifier: int) -> EapPacket | None:
        if self._state != "handshake":
            raise EapError("EAP-TLS message after the method ended")
        if self.sending:
            if packet.data != b"\x00":
                raise EapError("expected an EAP-TLS fragment acknowledgement")
            return _packet(EapCode.REQUEST, identifier, self._fragment())
        message = self._take(packet.data)
        if message is None:  # more fragments to come: acknowledge this one
            return _packet(EapCode.REQUEST, identifier, b"\x00")
        if not message and self.handshake_done:
            # The peer acknowledged our last flight: the method is over (sec. 2.1.1).
            self._state = "done"
            self._finish(self._eap_identity)
            return None
        out = self._feed(message)
        if self.failure_reason is not None:
            self._state = "done"
            return None
        if not out:
            raise EapError("EAP-TLS: the peer's message left the handshake with nothing to say")
        return _packet(EapCode.REQUEST, identifier, self._fragment())


class EapTlsPeer(_TlsOverEap):
    """The road warrior: ``server_identity`` (the gateway's IKE identity, or its
    ``aaa_identity``) must be in the server's certificate."""

    def __init__(
        self, credentials: TlsCredentials, now: float, server_identity: str | None = None
    ) -> None:
        super().__init__(credentials, now, server=False)
        self._server_identity = server_identity
        self._started = False

    def process(self, packet: EapPacket) -> EapPacket:
        data = packet.data
        if not self._started:
            if not data or not data[0] & FLAG_S:
                raise EapError("EAP-TLS must start with a Start request (RFC 5216 sec. 2.1.1)")
            self._started = True
            self._feed(b"")
            return _packet(EapCode.RESPONSE, packet.identifier, self._fragment())
        if self.sending:
            if data != b"\x00":
                raise EapError("expected an EAP-TLS fragment acknowledgement")
            return _packet(EapCode.RESPONSE, packet.identifier, self._fragment())
        message = self._take(data)
        if message is None:
            return _packet(EapCode.RESPONSE, packet.identifier, b"\x00")
        out = self._feed(message)
        if self.failure_reason is not None:
            raise EapError(self.failure_reason)
        if out:
            return _packet(EapCode.RESPONSE, packet.identifier, self._fragment())
        if self.handshake_done and not self.succeeded:
            self._finish(self._server_identity)
            if not self.succeeded:
                raise EapError(self.failure_reason or "EAP-TLS failed")
        # Acknowledge the server's last flight (it answers with EAP-Success).
        return _packet(EapCode.RESPONSE, packet.identifier, b"\x00")
