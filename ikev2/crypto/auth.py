"""AUTH payload computation and verification (RFC 7296 sec. 2.15, RFC 7427, RFC 4754).

The signed octets (RFC 7296 sec. 2.15)::

    InitiatorSignedOctets = RealMessage1 | NonceRData | MACedIDForI
    MACedIDForI           = prf(SK_pi, RestOfInitIDPayload)
    RestOfInitIDPayload   = IDType | RESERVED (3 octets) | InitIDData

and symmetrically for the responder (RealMessage2 | NonceIData | prf(SK_pr, IDr')).

Shared key (method 2)::

    AUTH = prf( prf(Shared Secret, "Key Pad for IKEv2"), <SignedOctets> )

The ``prf`` argument is any callable ``prf(key, data) -> bytes`` (``ikev2.crypto.prf.Prf``
instances are). Verification failures raise :class:`AuthenticationError`, a
``ProtocolError`` carrying AUTHENTICATION_FAILED, whose reason never contains secrets.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable

from ikev2.enums import NotifyType
from ikev2.errors import ProtocolError

__all__ = [
    "KEY_PAD",
    "AuthenticationError",
    "psk_auth",
    "signed_octets",
    "verify_psk_auth",
]

PrfFunction = Callable[[bytes, bytes], bytes]

# RFC 7296 sec. 2.15: the 17 ASCII octets, no terminating NUL.
KEY_PAD = b"Key Pad for IKEv2"


class AuthenticationError(ProtocolError):
    """The peer's AUTH payload (or its credentials) did not verify: AUTHENTICATION_FAILED."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, notify=NotifyType.AUTHENTICATION_FAILED)


def signed_octets(
    message: bytes,
    peer_nonce: bytes,
    prf: PrfFunction,
    sk_p: bytes,
    id_payload_body: bytes,
) -> bytes:
    """The octets the AUTH payload covers (RFC 7296 sec. 2.15).

    ``message``: our IKE_SA_INIT message exactly as sent (initiator: the request;
    responder: the response). ``peer_nonce``: the other side's Nonce data.
    ``sk_p``: SK_pi for the initiator, SK_pr for the responder.
    ``id_payload_body``: the body of our IDi/IDr payload (ID Type, 3 RESERVED, data).
    """
    if len(id_payload_body) < 4:
        raise ValueError("an ID payload body has at least ID Type and 3 RESERVED octets")
    return b"".join((message, peer_nonce, prf(sk_p, id_payload_body)))


def psk_auth(prf: PrfFunction, shared_secret: bytes, octets: bytes) -> bytes:
    """AUTH data for method 2 (Shared Key Message Integrity Code)."""
    return prf(prf(shared_secret, KEY_PAD), octets)


def verify_psk_auth(
    prf: PrfFunction,
    shared_secret: bytes,
    octets: bytes,
    received: bytes,
    *,
    peer_id: str = "?",
) -> None:
    """Check a received PSK AUTH value in constant time; raise AuthenticationError if not."""
    expected = psk_auth(prf, shared_secret, octets)
    if not hmac.compare_digest(expected, bytes(received)):
        raise AuthenticationError(
            f"AUTH payload does not verify with the configured PSK for id {peer_id} (PSK mismatch?)"
        )
