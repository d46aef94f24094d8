"""Driving the sans-I/O engine from asyncio: datagrams in and out, one timer task.

The engine (``ikev2.dispatcher.Dispatcher``) never reads a clock and never sleeps: it is
told the time with every call, and says when it next wants to be woken (``get_timer()``).
:class:`EngineDriver` owns that contract:

* :meth:`feed` hands one received IKE message to the engine and then :meth:`pump`\\ s:
  everything the engine wants to send goes out, every event goes to the event handler,
  and the timer task is re-armed when the engine's next deadline is earlier;
* one task, :meth:`run_timer`, sleeps until the engine's deadline (or until re-armed
  because a new deadline is earlier) and calls ``handle_timer``. Retransmission,
  rekey/reauth/expiry and DPD deadlines all come through this one timer: the engine keeps
  them ordered, so one task is enough and cannot drift from the engine's own view.

The daemon's one time base is :func:`now`: POSIX seconds (``time.time()``). The engine
gets it as ``now`` and uses it for its timers *and* for certificate validity periods
(RFC 5280), which need the real date; so the daemon leaves the dispatcher's
``wall_time_offset`` at 0. The data path (``aioipsec.runtime.datapath``) takes the same
clock for the SAs' install times and the SPD's hold timers, and the listings subtract
from it. A clock step moves all deadlines with it; that is the price of one time base.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from typing import Any

import structlog

from ikev2.events import Event

Address = tuple[str, int]
log = structlog.get_logger("aioipsec.engine")

# (data without the non-ESP marker, local address, remote address)
SendFunction = Callable[[bytes, Address, Address], None]
EventHandler = Callable[[Event], None]


def now() -> float:
    """The daemon's time base: POSIX seconds (see the module doc)."""
    return time.time()


class EngineDriver:
    def __init__(
        self,
        dispatcher: Any,
        send: SendFunction,
        on_event: EventHandler,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.dispatcher = dispatcher
        self._send = send
        self._on_event = on_event
        self._loop = loop
        self._rearm = asyncio.Event()
        # The deadline run_timer sleeps towards (inf: none). Only an earlier one wakes it:
        # a later one is found when it wakes (handle_timer before a deadline does nothing).
        # Waking it after every message cost a task and a timer handle per datagram.
        self._armed = math.inf
        self.messages_in = 0
        self.messages_out = 0

    def now(self) -> float:
        """The daemon's time base, :func:`now` (what the engine is told)."""
        return now()

    def feed(self, data: bytes, remote_addr: Address, local_addr: Address) -> None:
        """One IKE message (marker already stripped) from REMOTE_ADDR to LOCAL_ADDR."""
        self.messages_in += 1
        try:
            self.dispatcher.receive_datagram(data, remote_addr, local_addr, self.now())
        except Exception:
            # The engine answers protocol errors itself; anything escaping is a bug that
            # must not take the daemon down with it (one bad datagram from the network).
            log.exception("engine failed on a received message", remote=remote_addr)
        self.pump()

    def pump(self) -> None:
        """Send what the engine queued, deliver its events, re-arm the timer."""
        now = self.now()
        for datagram in self.dispatcher.datagrams_to_send(now):
            self.messages_out += 1
            self._send(datagram.data, tuple(datagram.local_addr), tuple(datagram.remote_addr))
        while (event := self.dispatcher.next_event()) is not None:
            try:
                self._on_event(event)
            except Exception:
                log.exception("event handler failed", event=type(event).__name__)
        # Event handlers may have called the engine (e.g. trap -> initiate): send that too.
        for datagram in self.dispatcher.datagrams_to_send(now):
            self.messages_out += 1
            self._send(datagram.data, tuple(datagram.local_addr), tuple(datagram.remote_addr))
        deadline = self.dispatcher.get_timer()
        if deadline is not None and deadline < self._armed:
            self._rearm.set()

    def call(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call an engine method with ``now`` and pump afterwards."""
        try:
            return function(*args, now=self.now(), **kwargs)
        finally:
            self.pump()

    async def run_timer(self) -> None:
        while True:
            deadline = self.dispatcher.get_timer()
            timeout = None if deadline is None else max(0.0, deadline - self.now())
            self._armed = math.inf if deadline is None else deadline
            self._rearm.clear()
            # asyncio.timeout rather than wait_for: on Python 3.11 wait_for wraps the wait in
            # a new task whenever a deadline is set, one task per re-arm, and the task count
            # the churn checks read then depends on whether a timer happens to be pending.
            try:
                async with asyncio.timeout(timeout):
                    await self._rearm.wait()
                continue  # re-armed: the deadline may have moved
            except TimeoutError:
                pass
            now = self.now()
            try:
                self.dispatcher.handle_timer(now)
            except Exception:
                log.exception("engine failed in its timer")
            self.pump()
            deadline = self.dispatcher.get_timer()
            if deadline is not None and deadline <= now:
                # A deadline the engine did not move: do not spin on it.
                await asyncio.sleep(0.01)
