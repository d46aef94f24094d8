"""NAT detection hashes (RFC 7296 sec. 2.23).

    NAT_DETECTION_SOURCE_IP / NAT_DETECTION_DESTINATION_IP notify data =
        SHA-1(SPIi | SPIr | IP address | Port)

IP address is 4 octets (IPv4) or 16 (IPv6), Port two octets, both in network order; SPIr is zero
in the IKE_SA_INIT request. A host is behind a NAT when none of the peer's DESTINATION hash
matches its own address/port; the peer is behind a NAT when none of its SOURCE hashes matches
the address/port the message arrived from.

These are pure functions for the socket side (the daemon, tests, `aioipsec explain`); the IKE
engine in ``ikev2/`` stays independent of this package and may compute the same hash itself.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass


def natd_hash(spi_i: bytes, spi_r: bytes, ip: str, port: int) -> bytes:
    """SHA-1(SPIi | SPIr | IP | Port), 20 octets."""
    if len(spi_i) != 8 or len(spi_r) != 8:
        raise ValueError("IKE SPIs are 8 octets")
    packed_ip = ipaddress.ip_address(ip).packed
    return hashlib.sha1(
        spi_i + spi_r + packed_ip + port.to_bytes(2, "big"), usedforsecurity=False
    ).digest()


@dataclass(frozen=True)
class NatDetection:
    local_behind_nat: bool
    remote_behind_nat: bool

    @property
    def nat_detected(self) -> bool:
        """Either side is behind a NAT: move to port 4500 and encapsulate ESP in UDP."""
        return self.local_behind_nat or self.remote_behind_nat


def _matches(expected: bytes, received: Iterable[bytes]) -> bool:
    # The hashes are not secret, but compare_digest costs nothing and keeps the habit.
    return any(hmac.compare_digest(expected, value) for value in received)


def detect_nat(
    spi_i: bytes,
    spi_r: bytes,
    local: tuple[str, int],
    remote: tuple[str, int],
    received_source_hashes: Iterable[bytes],
    received_destination_hashes: Iterable[bytes],
) -> NatDetection:
    """Evaluate the peer's NAT_DETECTION notifies for a message received at LOCAL from REMOTE.

    ``local`` is the address/port the message arrived on (our view of ourselves), ``remote``
    the source address/port as seen in the UDP packet.
    """
    local_hash = natd_hash(spi_i, spi_r, *local)
    remote_hash = natd_hash(spi_i, spi_r, *remote)
    return NatDetection(
        local_behind_nat=not _matches(local_hash, list(received_destination_hashes)),
        remote_behind_nat=not _matches(remote_hash, list(received_source_hashes)),
    )
