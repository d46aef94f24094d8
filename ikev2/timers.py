"""Timer arithmetic: retransmission back-off, lifetimes with jitter, a tiny timer set.

Nothing here reads a clock: ``now`` is always passed in (sans-I/O).
"""

from __future__ import annotations

from collections.abc import Callable


def retransmit_delay(attempt: int, timeout: float, base: float) -> float:
    """Delay before retransmission ``attempt`` (0 = after the first send).

    strongSwan's formula: ``timeout * base ** attempt`` (defaults 4 s, 1.8, 5 tries:
    4, 7.2, 13, 23.3, 42, then give up after another 75.6 s; RFC 7296 sec. 2.4).
    """
    return timeout * (base**attempt)


def random_fraction(rng: Callable[[int], bytes]) -> float:
    """A float in [0, 1) from the injected random source."""
    return int.from_bytes(rng(4), "big") / 2**32


def jittered_rekey(rekey_time: float, rand_time: float, rng: Callable[[int], bytes]) -> float:
    """Rekey time minus a random part of ``rand_time`` (strongSwan's ``rand_time``), so
    that two peers with the same config do not start rekeying at the same instant
    (which would make every rekey a collision, RFC 7296 sec. 2.8.1)."""
    if rekey_time <= 0:
        return 0.0
    jitter = random_fraction(rng) * max(0.0, min(rand_time, rekey_time))
    return rekey_time - jitter


class TimerSet:
    """Named deadlines; ``earliest()`` for get_timer(), ``due(now)`` for handle_timer()."""

    __slots__ = ("_deadlines",)  # one per IKE SA: no instance dictionary

    def __init__(self) -> None:
        self._deadlines: dict[str, float] = {}

    def set(self, name: str, deadline: float | None) -> None:
        if deadline is None:
            self._deadlines.pop(name, None)
        else:
            self._deadlines[name] = deadline

    def cancel(self, name: str) -> None:
        self._deadlines.pop(name, None)

    def get(self, name: str) -> float | None:
        return self._deadlines.get(name)

    def earliest(self) -> float | None:
        return min(self._deadlines.values(), default=None)

    def pop_due(self, now: float) -> list[str]:
        """Names whose deadline is <= now, earliest first; they are removed."""
        due = sorted(
            (deadline, name) for name, deadline in self._deadlines.items() if deadline <= now
        )
        for _, name in due:
            del self._deadlines[name]
        return [name for _, name in due]

    def clear(self) -> None:
        self._deadlines.clear()
