"""Python's cyclic garbage collector, tuned for a process whose heap grows with its SAs.

Left to its defaults, the collector makes a *full* (generation 2) pass whenever the objects
promoted to the old generation since the last full pass exceed 25 % of those that survived
it. A daemon that sets up thousands of IKE SAs grows its heap by more than that again and
again, and each full pass walks the whole heap, every SA's objects included: under
``bench.ike_load`` our responder stopped for 40 ms (about 100 SAs, the modules and the
configuration) to 120-370 ms (1,000-3,000 SAs) in the middle of set-ups, which was its p99
set-up time (docs/performance.md, bench/notes.md).

:class:`CollectorPolicy` keeps the collector on, for the short-lived garbage of every
message, but stops it from walking what has lived long:

* once started (modules imported, configuration loaded, sockets open) the heap is
  collected once and frozen (:func:`gc.freeze`: the collector no longer looks at it);
* after every full pass the collector makes by itself, what survived it is frozen as well,
  so each full pass walks only what was promoted since the previous one, not the SAs of an
  hour ago: its pause stays as short as a young generation's, at any number of SAs;
* what is frozen is never collected, and an SA's objects form reference cycles (an IKE SA
  and its tasks, an ESP SA and its closures): when SAs go away their objects are garbage
  the collector cannot see. So the caller says when long-lived things are released
  (:meth:`released`: an IKE or Child SA deleted, a negotiation failed, a reload), and once
  they reach a quarter of the live IKE SAs (at least ``RECLAIM_MIN``), or
  ``RECLAIM_INTERVAL`` after the first one, everything is unfrozen, collected in one full
  pass and frozen again. That pass is as long as one of the default collector's, but it
  comes only after as much churn as would have triggered one anyway, never because the
  number of SAs grew.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable
from typing import Any

# A full pass after this many releases at least (small daemons churn a few SAs at a time).
RECLAIM_MIN = 256
# ... or when the releases reach this fraction of the live IKE SAs (the default
# collector's own 25 % rule, counted in SAs instead of objects).
RECLAIM_FRACTION = 0.25
# ... and at the latest this long after the first release since the last full pass, so
# that garbage that nobody counted (rekeyed SAs, expired half-open ones) is bounded too.
RECLAIM_INTERVAL = 600.0
# Python's third threshold (default 10): see start().
OLD_PASS_EVERY = 1
# How often the loop looks at the counts (cheap: two comparisons).
CHECK_INTERVAL = 1.0


class CollectorPolicy:
    """Freeze the start-up heap and the survivors of each full pass; reclaim after churn.

    ``live`` returns the number of live IKE SAs (for the 25 % rule). Use from one event
    loop: :meth:`start` on it, :meth:`released` from its callbacks, :meth:`stop` at the end.
    """

    def __init__(self, live: Callable[[], int] = lambda: 0) -> None:
        self.live = live
        self.pending_releases = 0
        self.full_passes = 0  # reclaims (unfreeze + full pass) done by this policy
        self.frozen_after_pass = 0  # automatic full passes whose survivors were frozen
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._first_release: float | None = None
        self._thresholds = gc.get_threshold()

    def start(self, loop: asyncio.AbstractEventLoop | None) -> None:
        """Freeze what exists; with LOOP, look at the releases every CHECK_INTERVAL (without,
        the caller reclaims when it likes: the benchmark's generator, between steps)."""
        self._loop = loop
        self.reclaim()
        self._thresholds = gc.get_threshold()
        # A full pass after every OLD_PASS_EVERY middle-generation passes instead of 10:
        # with the rest frozen it walks only what those promoted, so smaller and more
        # often is shorter pauses for the same work.
        gc.set_threshold(self._thresholds[0], self._thresholds[1], OLD_PASS_EVERY)
        gc.callbacks.append(self._after_collection)
        if loop is not None:
            self._timer = loop.call_later(CHECK_INTERVAL, self._check)

    def stop(self) -> None:
        if self._after_collection in gc.callbacks:
            gc.callbacks.remove(self._after_collection)
            gc.set_threshold(*self._thresholds)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        # What is frozen stays so: the process is about to end, and a full pass over every
        # SA now would only delay the shutdown.

    def released(self, count: int = 1) -> None:
        """COUNT long-lived things (SAs, a configuration) became garbage."""
        self.pending_releases += count
        if self._first_release is None:
            self._first_release = time.monotonic()

    def reclaim(self) -> None:
        """One full pass over everything, then freeze what survived."""
        gc.unfreeze()
        gc.collect()
        gc.freeze()  # again: the callback may not be installed yet
        self.full_passes += 1
        self.pending_releases = 0
        self._first_release = None

    def _after_collection(self, phase: str, info: dict[str, Any]) -> None:
        # Called at the end of every collection. After a full pass the young generations
        # are empty and the old one holds exactly what the pass found reachable: freezing
        # now freezes no garbage (gc.freeze only moves the lists; safe in a callback).
        if phase == "stop" and info.get("generation") == 2:
            gc.freeze()
            self.frozen_after_pass += 1

    def _check(self) -> None:
        assert self._loop is not None
        self._timer = self._loop.call_later(CHECK_INTERVAL, self._check)
        self.maybe_reclaim()

    def maybe_reclaim(self) -> bool:
        """Reclaim when enough was released, or long enough ago; whether it did."""
        if not self.pending_releases:
            return False
        due = self.pending_releases >= max(RECLAIM_MIN, RECLAIM_FRACTION * self.live())
        if not due and self._first_release is not None:
            due = time.monotonic() - self._first_release >= RECLAIM_INTERVAL
        if due:
            self.reclaim()
        return due
