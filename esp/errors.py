"""Why the data plane drops a packet or refuses an SA.

Every drop is an ``EspDrop`` carrying a ``DropReason``; the SA (or the SAD, for an unknown
SPI) has already counted it when the exception is raised, so a caller only decides whether
to log. Drops are rare compared to good packets, so an exception per drop costs nothing on
the hot path, while good packets pay for no status object at all.
"""

from __future__ import annotations

from enum import StrEnum


class DropReason(StrEnum):
    """The per-reason counters (the names match the keys of ``EspSa.counters()``)."""

    UNKNOWN_SPI = "unknown_spi"
    MALFORMED = "malformed"  # too short, bad length, bad padding, bad inner header
    ICV_FAILURE = "icv_failures"  # "MAC mismatch"; RFC 4303 sec. 3.4.4
    REPLAY = "replays"  # duplicate or left of the window; RFC 4303 sec. 3.4.3
    DUMMY = "dummy"  # next header 59, RFC 4303 sec. 2.6: dropped silently
    POLICY = "policy_drops"  # inner packet outside the SA's selectors; RFC 4301 sec. 5.2
    EXPIRED = "expired"  # hard lifetime or sequence-number limit reached


class EspDrop(Exception):
    """A packet was dropped; ``reason`` says why (already counted)."""

    def __init__(self, reason: DropReason, detail: str = "") -> None:
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
        self.reason = reason
        self.detail = detail

    @property
    def silent(self) -> bool:
        """True for drops the RFC wants without a log line (dummy packets)."""
        return self.reason is DropReason.DUMMY


class UnsupportedAlgorithm(ValueError):
    """The algorithm is unknown here, or refused by the default policy (RFC 8221)."""


class InvalidKey(ValueError):
    """Key material of the wrong length for the algorithm (keys are never printed)."""
