"""One global budget above every log line of the running daemon (issue 13, F3).

The per-key limiters (:class:`aioipsec.log.RateLimitedLogger`) allow one line per key per
interval; when the key is a source address, spoofed sources make every packet a new key:
50,000 raw ESP packets with an unknown SPI from 50,000 sources wrote 50,000 lines (5.6 MB)
and tripled the CPU per packet. Any line the network can trigger (unknown SPI, bad ICV,
half-open SAs failing, refused IKE_SA_INIT, IKE SAs deleted) therefore also draws on one
token bucket for the whole process: ``burst`` lines at once, ``rate`` lines per second
after that. A line without a token is dropped and counted; every ``summary_interval``
seconds in which lines were dropped ends with one summary line saying how many (it takes
no token)::

    log lines suppressed by the global log budget  suppressed=49731 budget_per_s=20.0

The budget covers structlog (a processor in front of the chain) and the standard
``logging`` records of the protocol packages (a filter on the handlers that print them).
The daemon installs it once it runs (start-up lines are never dropped) and shows its
counters in ``stats`` (``log``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, MutableMapping
from typing import Any

import structlog

__all__ = ["DEFAULT_BURST", "DEFAULT_RATE", "LogBudget", "install_log_budget"]

DEFAULT_RATE = 20.0  # lines per second, sustained
DEFAULT_BURST = 200  # lines at once (a start with many connections, a rekey wave)
SUMMARY_INTERVAL = 10.0
_EXEMPT = "_log_budget_summary"


class LogBudget:
    """A token bucket for log lines; time comes from ``clock`` (injectable in tests)."""

    def __init__(
        self,
        rate: float = DEFAULT_RATE,
        burst: int = DEFAULT_BURST,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self._tokens = float(burst)
        self._last = clock()
        self.passed = 0
        self.suppressed = 0  # since the start
        self._unreported = 0  # since the last summary line
        self._emit: Callable[[int], None] | None = None

    def take(self) -> bool:
        """Whether one more line may be written now (and count it either way)."""
        now = self.clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            self.passed += 1
            return True
        self.suppressed += 1
        self._unreported += 1
        return False

    def report(self) -> int:
        """Write the summary line for lines dropped since the last one; how many."""
        count, self._unreported = self._unreported, 0
        if count and self._emit is not None:
            self._emit(count)
        return count

    def stats(self) -> dict[str, Any]:
        return {
            "budget-per-s": self.rate,
            "burst": self.burst,
            "lines-passed": self.passed,
            "lines-suppressed": self.suppressed,
        }

    # --- structlog

    def processor(
        self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        if event_dict.pop(_EXEMPT, False):
            return event_dict
        if not self.take():
            raise structlog.DropEvent
        return event_dict

    # --- logging (the ikev2 package logs through the standard library)

    def filter(self, record: logging.LogRecord) -> bool:
        # One record may reach several handlers: it takes one token, decided once.
        verdict = getattr(record, _EXEMPT, None)
        if verdict is None:
            verdict = self.take()
            setattr(record, _EXEMPT, verdict)
        return bool(verdict)


def _summary_writer(budget: LogBudget) -> Callable[[int], None]:
    logger = structlog.get_logger("aioipsec.ratelimit")

    def emit(count: int) -> None:
        logger.warning(
            "log lines suppressed by the global log budget",
            suppressed=count,
            budget_per_s=budget.rate,
            **{_EXEMPT: True},
        )

    return emit


def install_log_budget(
    loop: asyncio.AbstractEventLoop | None = None,
    *,
    rate: float = DEFAULT_RATE,
    burst: int = DEFAULT_BURST,
    summary_interval: float = SUMMARY_INTERVAL,
) -> tuple[LogBudget, Callable[[], None]]:
    """Put a :class:`LogBudget` in front of structlog's processors and on the handlers of
    the standard ``logging`` records; with ``loop``, a summary line every
    ``summary_interval`` seconds while lines are dropped. Returns the budget and a
    function that takes it out again (and writes the last summary)."""
    budget = LogBudget(rate, burst)
    budget._emit = _summary_writer(budget)
    config = structlog.get_config()
    previous = list(config["processors"])
    structlog.configure(processors=[budget.processor, *previous])
    handlers = [*logging.getLogger().handlers]
    if logging.lastResort is not None:
        handlers.append(logging.lastResort)
    for handler in handlers:
        handler.addFilter(budget.filter)
    timer: asyncio.TimerHandle | None = None

    def tick() -> None:
        nonlocal timer
        budget.report()
        if loop is not None:
            timer = loop.call_later(summary_interval, tick)

    if loop is not None:
        timer = loop.call_later(summary_interval, tick)

    def uninstall() -> None:
        if timer is not None:
            timer.cancel()
        budget.report()
        processors = [p for p in structlog.get_config()["processors"] if p != budget.processor]
        structlog.configure(processors=processors)
        for handler in handlers:
            handler.removeFilter(budget.filter)

    return budget, uninstall
