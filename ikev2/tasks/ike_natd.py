"""NAT detection (RFC 7296 sec. 2.23) and strongSwan's faked NAT (``encap = yes``).

NAT_DETECTION_SOURCE_IP / _DESTINATION_IP carry SHA-1(SPIi | SPIr | IP | Port) of the
sender's and the receiver's address as the sender sees them (the SPIs as in the IKE header
of that message: SPIr is zero in the IKE_SA_INIT request). A hash that does not match what
we compute from the packet we received reveals a NAT between us. With ``encap`` we send a
random source hash so that the peer believes we are behind a NAT; both sides then move to
port 4500 and UDP-encapsulate ESP, which is what kernel-libipsec needs.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
from collections.abc import Callable

from ikev2.enums import NotifyType
from ikev2.events import Address
from ikev2.payloads import NotifyPayload
from ikev2.tasks.context import Payload, TaskContext

NAT_T_PORT = 4500
IKE_PORT = 500


def natd_hash(spi_i: bytes, spi_r: bytes, address: Address) -> bytes:
    host, port = address
    return hashlib.sha1(spi_i + spi_r + _packed(host) + port.to_bytes(2, "big")).digest()


# Four hashes per IKE_SA_INIT over the same few addresses (RFC 7296 sec. 2.23): parsing the
# text each time was ~2 % of a responder's engine time.
@functools.lru_cache(maxsize=4096)
def _packed(host: str) -> bytes:
    return ipaddress.ip_address(host).packed


def natd_notifies(
    spi_i: bytes,
    spi_r: bytes,
    local_addr: Address,
    remote_addr: Address,
    *,
    fake_nat: bool,
    rng: Callable[[int], bytes],
) -> list[NotifyPayload]:
    source = rng(20) if fake_nat else natd_hash(spi_i, spi_r, local_addr)
    return [
        NotifyPayload(notify_type=NotifyType.NAT_DETECTION_SOURCE_IP, data=source),
        NotifyPayload(
            notify_type=NotifyType.NAT_DETECTION_DESTINATION_IP,
            data=natd_hash(spi_i, spi_r, remote_addr),
        ),
    ]


def evaluate(sa: TaskContext, payloads: list[Payload], spi_i: bytes, spi_r: bytes) -> None:
    """Set ``sa.peer.nat_local`` / ``sa.peer.nat_remote`` from the peer's NAT_DETECTION notifies
    (with the SPIs of the message they came in). No notifies: no NAT-T (sec. 2.23)."""
    sources = [
        p.data
        for p in payloads
        if isinstance(p, NotifyPayload) and p.notify_type == NotifyType.NAT_DETECTION_SOURCE_IP
    ]
    destinations = [
        p.data
        for p in payloads
        if isinstance(p, NotifyPayload) and p.notify_type == NotifyType.NAT_DETECTION_DESTINATION_IP
    ]
    if not sources or not destinations:
        sa.peer.nat_local = sa.config.encap
        sa.peer.nat_remote = False
        return
    expected_source = natd_hash(spi_i, spi_r, sa.remote_addr)
    expected_destination = natd_hash(spi_i, spi_r, sa.local_addr)
    sa.peer.nat_remote = expected_source not in sources
    sa.peer.nat_local = expected_destination not in destinations or sa.config.encap


def float_to_nat_t(sa: TaskContext) -> None:
    """Initiator: after IKE_SA_INIT, move IKE to port 4500 if a NAT was detected (sec.
    2.23: "the initiator MUST ... change to port 4500"); ESP is then UDP-encapsulated."""
    if not (sa.peer.nat_local or sa.peer.nat_remote):
        return
    sa.peer.udp_encap = True
    local_host, local_port = sa.local_addr
    remote_host, remote_port = sa.remote_addr
    if remote_port == IKE_PORT:
        sa.remote_addr = (remote_host, NAT_T_PORT)
    if local_port == IKE_PORT:
        sa.local_addr = (local_host, NAT_T_PORT)
