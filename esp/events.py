"""Events the data plane reports to the IKE side (rekey, expiry, acquire).

The SAD owns one event queue (a ``collections.deque``); SAs and the SPD append to it and the
daemon drains it (``Sad.next_event()``), the same pull model as ``IkeSa.next_event()``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Lifetime:
    """Soft and hard limits (RFC 4301 sec. 4.4.2.1); ``None`` means no limit.

    Soft limits ask the IKE side to rekey (``SaExpired(hard=False)``); at a hard limit the
    SA stops sending and accepting packets (``SaExpired(hard=True)``). Time limits count
    seconds from installation and are checked by ``EspSa.check_time(now)`` (the data plane
    reads no clock: time is passed in).
    """

    soft_bytes: int | None = None
    hard_bytes: int | None = None
    soft_packets: int | None = None
    hard_packets: int | None = None
    soft_seconds: float | None = None
    hard_seconds: float | None = None

    def __post_init__(self) -> None:
        for kind in ("bytes", "packets", "seconds"):
            soft = getattr(self, f"soft_{kind}")
            hard = getattr(self, f"hard_{kind}")
            if (soft is not None and soft < 0) or (hard is not None and hard < 0):
                raise ValueError(f"negative {kind} lifetime")
            if soft is not None and hard is not None and soft > hard:
                raise ValueError(f"soft {kind} lifetime above the hard one")


@dataclass(frozen=True, slots=True)
class SaExpired:
    """A soft (rekey now) or hard (SA unusable) limit was reached.

    ``reason`` is ``"bytes"``, ``"packets"``, ``"time"`` or ``"sequence"`` (the outbound
    counter approaches 2**32 - 1, or 2**64 - 1 with ESN: RFC 4303 sec. 3.3.3 forbids a wrap).
    """

    protocol: str  # "esp" or "ah"
    spi: int
    direction: str  # "in" or "out"
    reqid: int
    hard: bool
    reason: str


@dataclass(frozen=True, slots=True)
class Acquire:
    """A packet matched a protect policy with no SA (like an xfrm ACQUIRE, strongSwan's
    ``start_action = trap``): the IKE side should negotiate a Child SA for ``reqid``.
    The packet itself is held (bounded) by the SPD, never sent in clear."""

    reqid: int
    policy_index: int
    src: str
    dst: str
    protocol: int
    src_port: int
    dst_port: int


Event = SaExpired | Acquire
