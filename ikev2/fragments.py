"""IKE message fragmentation, RFC 7383.

Sending (sec. 2.5): :func:`serialize_fragments` splits the *inner* payload chain of a
message that would go in one SK payload into chunks, and protects each chunk in its own
Encrypted Fragment (SKF) payload; every fragment is a complete IKE message with the same
Message ID, exchange and flags, and the associated data of each includes its Fragment
Number and Total Fragments fields::

    datagrams = serialize_fragments(header, payloads, cipher, max_size=1280 - 28)

Receiving (sec. 2.6): one :class:`Reassembler` per IKE SA. Parse each datagram with
``ikev2.message.parse_message``; when ``msg.is_fragment``, hand it to the reassembler::

    whole = reassembler.add(msg, peer_cipher, now)   # None until the last fragment arrives

Checks done by ``add`` (bad-inputs.md: numbering, fragment 0, duplicates, total changing,
bounded memory):

* the integrity of every fragment is verified (``cipher.open``) before it is stored
  (sec. 2.6: "MUST check the integrity of each fragment ... before storing it");
* Fragment Number 0 or above Total Fragments is refused (SKF.parse, and again here);
* a duplicate fragment is ignored (returns None, counted in ``stats``);
* a fragment with a *higher* Total Fragments than the fragments kept so far makes us
  discard them and start again with the new total; a *lower* one is ignored (sec. 2.6.1:
  the sender changed its fragment size after a retransmission);
* memory is bounded: at most ``max_fragments`` fragments and ``max_bytes`` decrypted
  octets per message, at most one message per direction (request / response) being
  collected at a time, and a message not completed within ``timeout`` seconds is dropped
  (time is passed in; nothing here reads a clock);
* an older Message ID than the one being collected is ignored; a newer one replaces it;
* memory is bounded in total too: every IKE SA's reassembler draws on one
  :class:`ReassemblyBudget` (the dispatcher's), so a thousand half-open SAs whose keys an
  attacker knows cannot each hold ``max_bytes`` (issue 13, F2); the dispatcher releases
  an SA's share when the SA is forgotten.

``add`` raises ``ProtocolError`` with ``notify=None`` (drop silently) for a fragment it
refuses, ``IntegrityError`` (also ``notify=None``) when the ICV does not verify, and
``ProtocolError(INVALID_SYNTAX)`` when a complete, authenticated message has a bad inner
payload chain. The caller checks the Message ID against its window *before* calling (a
retransmitted request is answered from the response cache, sec. 2.6.1).
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

from ikev2.crypto.sk import SkCipher
from ikev2.enums import PayloadType
from ikev2.errors import ProtocolError
from ikev2.message import (
    IKE_HEADER_SIZE,
    SKF_HEADER_SIZE,
    IkeHeader,
    IkeMessage,
    parse_payload_chain,
    serialize_payload_chain,
)
from ikev2.payloads import Payload, SkfPayload

MAX_TOTAL_FRAGMENTS = 0xFFFF  # the field is 16 bits
FRAGMENT_OVERHEAD = IKE_HEADER_SIZE + SKF_HEADER_SIZE  # before IV, padding and ICV

# Defaults for the receiver's bounds. strongSwan caps a reassembled message at 10000 octets
# by default (charon.max_packet) and allows 64 fragments; we keep the same order of size.
DEFAULT_MAX_FRAGMENTS = 64
DEFAULT_MAX_BYTES = 65535
DEFAULT_TIMEOUT = 30.0


def max_ike_message_size(path_mtu: int, ipv6: bool, non_esp_marker: bool = False) -> int:
    """The largest IKE message that fits a path MTU: minus IP (20/40), UDP (8) and the
    4-octet non-ESP marker on port 4500 (RFC 7383 sec. 2.5.1 recommends 576 for IPv4 and
    1280 for IPv6 as the MTU when nothing better is known)."""
    return path_mtu - (40 if ipv6 else 20) - 8 - (4 if non_esp_marker else 0)


def fragment_content_size(cipher: SkCipher, max_size: int) -> int:
    """The largest chunk of inner payload octets whose SKF message fits ``max_size``."""
    size = max_size - FRAGMENT_OVERHEAD - cipher.iv_size - cipher.icv_size - 1
    while size > 0 and FRAGMENT_OVERHEAD + cipher.sealed_length(size) > max_size:
        size -= 1
    if size <= 0:
        raise ValueError(f"fragment size {max_size} leaves no room for content")
    return size


def serialize_fragments(
    header: IkeHeader,
    payloads: Sequence[Payload],
    cipher: SkCipher,
    max_size: int,
    *,
    ivs: Sequence[bytes] | None = None,
) -> list[bytes]:
    """The datagrams of ``payloads`` sent as SKF fragments of at most ``max_size`` octets.

    ``max_size`` is the IKE message length (UDP payload without the non-ESP marker), see
    :func:`max_ike_message_size`. ``cipher`` is our own direction. ``ivs`` (one per
    fragment) is for known-answer tests only. All fragments share ``header``'s Message ID,
    exchange and flags; the first one's SKF Next Payload is the first inner payload type,
    the others' is 0 (sec. 2.5). Even a message that would fit yields at least one
    fragment: deciding *whether* to fragment is the caller's job
    (``ikev2.message.encrypted_message_length``).
    """
    inner = serialize_payload_chain(payloads)
    chunk_size = fragment_content_size(cipher, max_size)
    chunks = [inner[i : i + chunk_size] for i in range(0, len(inner), chunk_size)] or [b""]
    total = len(chunks)
    if total > MAX_TOTAL_FRAGMENTS:
        raise ValueError(f"{total} fragments exceed the 16-bit Total Fragments field")
    if ivs is not None and len(ivs) != total:
        raise ValueError(f"{len(ivs)} IVs for {total} fragments")
    first_inner = int(payloads[0].TYPE) if payloads else PayloadType.NO_NEXT_PAYLOAD
    datagrams: list[bytes] = []
    for number, chunk in enumerate(chunks, start=1):
        sealed_length = cipher.sealed_length(len(chunk))
        skf_length = SKF_HEADER_SIZE + sealed_length
        final = dataclasses.replace(
            header, next_payload=PayloadType.SKF, length=IKE_HEADER_SIZE + skf_length
        )
        aad = final.serialize() + struct.pack(
            "!BBHHH",
            first_inner if number == 1 else PayloadType.NO_NEXT_PAYLOAD,
            0,
            skf_length,
            number,
            total,
        )
        datagrams.append(aad + cipher.seal(aad, chunk, None if ivs is None else ivs[number - 1]))
    return datagrams


@dataclass
class _PendingMessage:
    message_id: int
    total: int
    started_at: float
    header: IkeHeader
    chunks: dict[int, bytes] = field(default_factory=dict)
    first_inner: int = PayloadType.NO_NEXT_PAYLOAD
    first_raw: bytes = b""
    octets: int = 0


@dataclass
class ReassemblyStats:
    """Counters for logs and the control socket."""

    completed: int = 0
    duplicates: int = 0
    restarted: int = 0  # higher Total Fragments seen: collection restarted
    refused: int = 0  # out of range, lower total, stale Message ID, over a bound
    expired: int = 0


class ReassemblyBudget:
    """Decrypted fragment octets held by all the reassemblers that share it.

    A fragment that would take ``held`` above ``max_bytes`` is refused (dropped, counted in
    ``refused``): the sender retransmits, and by then expired or completed messages have
    given their share back. ``release(owner)`` empties the reassembler of a dead IKE SA.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.held = 0
        self.refused = 0
        self._holders: dict[int, Reassembler] = {}

    def register(self, owner: int, reassembler: Reassembler) -> None:
        self._holders[owner] = reassembler

    def release(self, owner: int) -> None:
        reassembler = self._holders.pop(owner, None)
        if reassembler is not None:
            reassembler.clear()


def _drop(reason: str) -> ProtocolError:
    return ProtocolError(reason, notify=None)


class Reassembler:
    """Collects the SKF fragments of one IKE SA's incoming messages (RFC 7383 sec. 2.6).

    One message per direction (requests from the peer, responses to our requests) is
    collected at a time: IKEv2 windows are 1 by default and the caller rejects Message IDs
    outside its window before calling :meth:`add`.
    """

    def __init__(
        self,
        *,
        max_fragments: int = DEFAULT_MAX_FRAGMENTS,
        max_bytes: int = DEFAULT_MAX_BYTES,
        timeout: float = DEFAULT_TIMEOUT,
        budget: ReassemblyBudget | None = None,
        owner: int = 0,
    ) -> None:
        self.max_fragments = max_fragments
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.stats = ReassemblyStats()
        self._pending: dict[bool, _PendingMessage] = {}  # key: header.response
        self._budget = budget
        if budget is not None:
            budget.register(owner, self)

    @property
    def pending_octets(self) -> int:
        """Decrypted octets held right now (bounded by 2 * max_bytes)."""
        return sum(p.octets for p in self._pending.values())

    def expire(self, now: float) -> int:
        """Drop messages whose first fragment is older than ``timeout``; returns how many."""
        stale = [k for k, p in self._pending.items() if now - p.started_at > self.timeout]
        for key in stale:
            self._discard(key)
        self.stats.expired += len(stale)
        return len(stale)

    def clear(self) -> None:
        for key in list(self._pending):
            self._discard(key)

    def _discard(self, key: bool) -> None:
        pending = self._pending.pop(key, None)
        if pending is not None and self._budget is not None:
            self._budget.held -= pending.octets

    def add(self, msg: IkeMessage, cipher: SkCipher, now: float) -> IkeMessage | None:
        """Verify and store one fragment; the reassembled message once all have arrived.

        ``msg`` comes from ``parse_message`` (``msg.is_fragment``); ``cipher`` is the
        peer's direction. The returned message has the inner payloads, ``protected=True``
        and ``raw`` = the datagram of fragment 1.
        """
        skf = msg.encrypted_payload
        if not isinstance(skf, SkfPayload) or msg.sk_offset is None:
            raise ProtocolError("not an SKF fragment")
        number, total = skf.fragment_number, skf.total_fragments
        if not 1 <= number <= total:  # SKF.parse refuses these already; never trust callers
            self.stats.refused += 1
            raise _drop(f"fragment {number} of {total}")
        if total > self.max_fragments:
            self.stats.refused += 1
            raise _drop(f"{total} fragments exceed the limit of {self.max_fragments}")
        self.expire(now)
        key = msg.header.response
        pending = self._pending.get(key)
        if pending is not None and msg.header.message_id < pending.message_id:
            self.stats.refused += 1
            raise _drop(f"fragment of old Message ID {msg.header.message_id}")

        # sec. 2.6: integrity first; nothing unauthenticated changes our state.
        chunk = cipher.open(msg.associated_data, msg.encrypted_body)

        if pending is not None and msg.header.message_id > pending.message_id:
            pending = None  # the peer moved on: the older message can never complete
        if pending is not None:
            if total < pending.total:
                self.stats.refused += 1
                raise _drop(f"Total Fragments went down from {pending.total} to {total}")
            if total > pending.total:
                self.stats.restarted += 1
                pending = None
            elif msg.header.exchange != pending.header.exchange:
                self.stats.refused += 1
                raise _drop("fragments of one message with different exchange types")
        if pending is None:
            self._discard(key)  # an older or restarted message: its octets go back
            pending = _PendingMessage(
                message_id=msg.header.message_id, total=total, started_at=now, header=msg.header
            )
            self._pending[key] = pending
        if number in pending.chunks:
            self.stats.duplicates += 1
            return None
        if pending.octets + len(chunk) > self.max_bytes:
            self._discard(key)
            self.stats.refused += 1
            raise _drop(f"reassembled message would exceed {self.max_bytes} octets")
        budget = self._budget
        if budget is not None:
            if budget.held + len(chunk) > budget.max_bytes:
                # Keep what this message has (it may complete on a retransmission once
                # others gave octets back); refuse only this fragment.
                budget.refused += 1
                self.stats.refused += 1
                raise _drop(f"all reassembly buffers together hold {budget.max_bytes} octets")
            budget.held += len(chunk)
        pending.chunks[number] = chunk
        pending.octets += len(chunk)
        if number == 1:
            pending.first_inner = skf.first_inner
            pending.first_raw = msg.raw
        if len(pending.chunks) < pending.total:
            return None

        self._discard(key)
        data = b"".join(pending.chunks[i] for i in range(1, pending.total + 1))
        payloads, _ = parse_payload_chain(data, pending.first_inner, inside_sk=True)
        self.stats.completed += 1
        # The header is the first-arrived fragment's (next payload SKF, its own length).
        return IkeMessage(
            header=pending.header, payloads=payloads, raw=pending.first_raw, protected=True
        )
