"""The key exchange contract shared by every method (see :mod:`ikev2.crypto.keyexchange`).

A leaf module: :mod:`ikev2.crypto.keyexchange` (MODP, ECP, Curve25519/448 and the
``new_key_exchange`` factory) and :mod:`ikev2.crypto.mlkem_ke` (ML-KEM) both build on it,
and the factory imports ML-KEM, so the base class cannot live in the factory's module.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

from ikev2.enums import KeId
from ikev2.errors import ProtocolError

#: ``rng(n)`` returns n random octets (``os.urandom``, or a seeded generator for tests and
#: ``aioipsec explain --seed``).
Rng = Callable[[int], bytes]


def invalid_key_exchange_data(method: KeId, reason: str) -> ProtocolError:
    """The error for a malformed peer value: ``ProtocolError(INVALID_SYNTAX)`` naming the
    method and what is wrong (RFC 7296 sec. 3.4; the caller decides whether it is fatal)."""
    return ProtocolError(f"{method.name} key exchange data: {reason}")


class KeyExchange(ABC):
    """One key exchange of one method; each instance is used for exactly one exchange."""

    method: KeId
    #: Octets of the Key Exchange Data this method sends (for a KEM: the initiator's).
    payload_length: int
    #: Octets of the Key Exchange Data expected from the peer.
    peer_payload_length: int

    @abstractmethod
    def our_payload(self) -> bytes:
        """The Key Exchange Data of our KE payload."""

    @abstractmethod
    def compute(self, peer_payload: bytes) -> bytes:
        """Validate the peer's Key Exchange Data and return the shared secret."""

    def _check_length(self, peer_payload: bytes) -> None:
        if len(peer_payload) != self.peer_payload_length:
            raise invalid_key_exchange_data(
                self.method,
                f"{len(peer_payload)} octets, {self.peer_payload_length} expected",
            )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.method.name})"
