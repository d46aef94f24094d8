"""The state one SA direction keeps between packets, ESP and AH alike (RFC 4301 sec. 4.4.2).

``SaBase`` is the documented public object the per-packet functions of
``esp.processing`` (and ``esp.ah``) read and write: identity (``spi``, ``esn``, ``mode``,
``tunnel``), the outbound sequence number ``seq``, the inbound ``replay`` window, the
counters, the compiled selectors ``inner_match`` and three thresholds that let one
compare per packet cover every limit:

* ``seq_check``: outbound, the next ``seq`` at which ``outbound_limit(seq)`` must look
  (sequence-number soft/hard limit, packet lifetimes, hard expiry);
* ``packets_check`` / ``bytes_check``: the next ``packets_in`` / byte count at which
  ``limit_reached()`` must look (packet and byte lifetimes);
* ``min_plaintext``: inbound, the shortest plaintext accepted; raised above any length
  once the SA is hard-expired, so that the length check also refuses expired SAs.

The thresholds are recomputed here (``_recompute_checks``) whenever a limit fires; the
packet functions only compare and call the two slow paths.
"""

from __future__ import annotations

import collections
from enum import StrEnum
from typing import Any

from esp.errors import DropReason, EspDrop
from esp.events import Lifetime, SaExpired
from esp.replay import ReplayWindow
from esp.selectors import Selector, compile_selectors

_NEVER = 1 << 65


class Mode(StrEnum):
    TUNNEL = "tunnel"
    TRANSPORT = "transport"


class Direction(StrEnum):
    IN = "in"
    OUT = "out"


class SaBase:
    """What ESP and AH SAs share: identity, sequence numbers and replay window, lifetimes
    and the events they raise, counters, selectors."""

    protocol = ""

    # Slots, not an instance dict: with ~40 attributes a dict costs ~1.6 KiB per SA
    # direction, slots 8 octets each (issue 17: memory per tunnel). ``__dict__`` stays
    # for what is set from outside: aioipsec.runtime.workers' SequenceGuard shadows
    # ``_recompute_checks`` and ``outbound_limit`` per instance (a slot cannot share a
    # method's name); an SA without such an attribute never creates that dict.
    __slots__ = (
        "__dict__",
        "bytes_check",
        "bytes_in",
        "bytes_out",
        "direction",
        "dst",
        "dummy",
        "esn",
        "events",
        "expired",
        "expired_drops",
        "icv_failures",
        "inner_match",
        "installed_at",
        "last_next_header",
        "lifetime",
        "malformed",
        "min_plaintext",
        "mode",
        "packets_check",
        "packets_in",
        "policy_drops",
        "replay",
        "replay_window",
        "replays",
        "reqid",
        "selectors",
        "seq",
        "seq_check",
        "seq_hard_limit",
        "seq_soft_limit",
        "soft_expired",
        "spi",
        "src",
        "tunnel",
        "udp_encap",
    )  # fmt: skip

    def __init__(
        self, spi: int, direction: Direction | str, *, esn: bool = False,
        replay_window: int = 1024, mode: Mode | str = Mode.TUNNEL,
        src: str | None = None, dst: str | None = None,
        selectors: tuple[Selector, ...] | list[Selector] = (),
        lifetime: Lifetime | None = None, udp_encap: tuple[int, int] | None = None,
        reqid: int = 0, seq_soft_limit: int | None = None, now: float = 0.0,
        events: collections.deque[Any] | None = None, icmp: bool = False,
    ) -> None:  # fmt: skip
        if not 256 <= spi <= 0xFFFFFFFF:
            # RFC 4303 sec. 2.1: 1..255 are reserved by IANA, 0 is for local use only.
            raise ValueError(f"SPI {spi:#x} is reserved")
        self.spi = spi
        self.direction = Direction(direction)
        self.esn = esn
        self.mode = Mode(mode)
        self.tunnel = self.mode is Mode.TUNNEL
        self.src = src
        self.dst = dst
        self.selectors = tuple(selectors)
        # icmp: ICMP errors quoting a packet of the selectors pass too (strongSwan's icmp).
        self.inner_match = compile_selectors(self.selectors, icmp=icmp)
        self.lifetime = lifetime or Lifetime()
        self.reqid = reqid
        self.udp_encap = udp_encap
        self.installed_at = now
        self.events: collections.deque[Any] = events if events is not None else collections.deque()

        # Outbound sequence number: the last one sent (= packets sent). RFC 4303
        # sec. 3.3.3: it never wraps.
        self.seq = 0
        self.seq_hard_limit = 0xFFFFFFFFFFFFFFFF if esn else 0xFFFFFFFF
        if seq_soft_limit is None:
            seq_soft_limit = self.seq_hard_limit - (1 << (32 if esn else 24))
        self.seq_soft_limit = seq_soft_limit
        self.replay: ReplayWindow | None = (
            ReplayWindow(replay_window) if self.direction is Direction.IN else None
        )
        self.replay_window = replay_window
        self.last_next_header = 0
        self.expired = False  # hard limit reached: neither send nor accept
        self.soft_expired = False

        # Counters (per SA and per reason); read with counters().
        self.bytes_in = self.packets_in = self.bytes_out = 0
        self.icv_failures = self.replays = self.malformed = 0
        self.policy_drops = self.dummy = self.expired_drops = 0

        # The next value of seq (outbound) / packets_in, bytes_in+bytes_out at which a
        # limit has to be looked at: one compare per packet covers them all.
        self.min_plaintext = 2  # set above any length once the SA is hard-expired
        self.seq_check = 0
        self.packets_check = _NEVER
        self.bytes_check = _NEVER
        self._recompute_checks()

    @property
    def packets_out(self) -> int:
        return self.seq

    def _selectors_match(self, inner: bytes | bytearray | memoryview) -> bool:
        match = self.inner_match
        if match is None:
            return True
        if (
            len(inner) < 20
            or inner[0] >> 4 not in (4, 6)
            or (inner[0] >> 4 == 6 and len(inner) < 40)
        ):
            return False
        return match(inner, len(inner))

    def matches_selectors(self, inner: bytes | bytearray | memoryview) -> bool:
        """Policy check of a decrypted packet against the SA's selectors (no selectors:
        everything matches). Tunnel mode does it inside ``decrypt_into`` already."""
        return not self.selectors or self._selectors_match(memoryview(inner))

    # ---------------------------------------------------------------- limits
    def _recompute_checks(self) -> None:
        life = self.lifetime
        if self.expired:
            self.seq_check = 0
            self.packets_check = self.bytes_check = 0
            self.min_plaintext = 1 << 20
            return
        soft = not self.soft_expired
        seq_checks = [self.seq_hard_limit + 1]
        if life.hard_packets is not None:
            seq_checks.append(life.hard_packets)
        if soft:
            seq_checks.append(self.seq_soft_limit)
            if life.soft_packets is not None:
                seq_checks.append(life.soft_packets)
        self.seq_check = max(min(seq_checks), self.seq + 1)
        packets = [p for p in (life.hard_packets, life.soft_packets if soft else None) if p]
        nbytes = [b for b in (life.hard_bytes, life.soft_bytes if soft else None) if b]
        self.packets_check = min(packets, default=_NEVER)
        self.bytes_check = min(nbytes, default=_NEVER)

    def outbound_limit(self, seq: int) -> None:
        """Slow path of ``encrypt_into`` once ``seq`` reached the next limit to look at."""
        life = self.lifetime
        if self.expired:
            self.expired_drops += 1
            raise EspDrop(DropReason.EXPIRED, "SA reached a hard limit")
        if seq > self.seq_hard_limit or (life.hard_packets is not None and seq > life.hard_packets):
            self._expire(hard=True, reason="sequence" if seq > self.seq_hard_limit else "packets")
            self.expired_drops += 1
            raise EspDrop(DropReason.EXPIRED, "hard limit (RFC 4303 sec. 3.3.3: no wrap)")
        if seq >= self.seq_soft_limit:
            self._expire(hard=False, reason="sequence")
        elif life.soft_packets is not None and seq >= life.soft_packets:
            self._expire(hard=False, reason="packets")
        if life.hard_packets is not None and seq == life.hard_packets:
            # This packet is the last one allowed; the next call raises.
            self._expire(hard=True, reason="packets")
            self.seq_check = seq + 1
            return
        self._recompute_checks()
        self.seq_check = max(self.seq_check, seq + 1)

    def limit_reached(self) -> None:
        """Slow path once a packet or byte count reached a lifetime limit."""
        life = self.lifetime
        packets = self.packets_in
        nbytes = self.bytes_in + self.bytes_out
        if life.hard_packets is not None and packets >= life.hard_packets:
            self._expire(hard=True, reason="packets")
        elif life.hard_bytes is not None and nbytes >= life.hard_bytes:
            self._expire(hard=True, reason="bytes")
        elif life.soft_packets is not None and packets >= life.soft_packets:
            self._expire(hard=False, reason="packets")
        elif life.soft_bytes is not None and nbytes >= life.soft_bytes:
            self._expire(hard=False, reason="bytes")
        self._recompute_checks()

    def _expire(self, *, hard: bool, reason: str) -> None:
        if hard:
            if self.expired:
                return
            self.expired = True
            self.soft_expired = True
        else:
            if self.soft_expired:
                return
            self.soft_expired = True
        self.events.append(
            SaExpired(self.protocol, self.spi, self.direction.value, self.reqid, hard, reason)
        )
        self._recompute_checks()

    def check_time(self, now: float) -> None:
        """Report soft/hard time lifetimes (call from a timer; ``now`` on the install clock)."""
        life = self.lifetime
        age = now - self.installed_at
        if life.hard_seconds is not None and age >= life.hard_seconds:
            self._expire(hard=True, reason="time")
        elif life.soft_seconds is not None and age >= life.soft_seconds:
            self._expire(hard=False, reason="time")

    def expire(self, *, hard: bool = True) -> None:
        """Force expiry (e.g. the IKE side deleted the SA)."""
        self._expire(hard=hard, reason="forced")

    def counters(self) -> dict[str, int]:
        return {
            "bytes_in": self.bytes_in,
            "packets_in": self.packets_in,
            "bytes_out": self.bytes_out,
            "packets_out": self.packets_out,
            DropReason.ICV_FAILURE.value: self.icv_failures,
            DropReason.REPLAY.value: self.replays,
            DropReason.MALFORMED.value: self.malformed,
            DropReason.POLICY.value: self.policy_drops,
            DropReason.DUMMY.value: self.dummy,
            DropReason.EXPIRED.value: self.expired_drops,
        }
