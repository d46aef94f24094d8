"""Liveness checks (RFC 7296 sec. 2.4): an empty INFORMATIONAL request. Retransmission
exhaustion (``ikev2.sa``) declares the peer dead and applies the Child SAs' dpd_action
(clear / restart / trap, reported in ``PeerUnreachable``)."""

from __future__ import annotations

from ikev2.enums import ExchangeType
from ikev2.tasks import Payload, Task, TaskContext


class DpdTask(Task):
    exchange = ExchangeType.INFORMATIONAL
    name = "INFORMATIONAL(DPD)"

    def build(self, sa: TaskContext, now: float) -> list[Payload] | None:
        return [] if sa.established else None

    def process(self, sa: TaskContext, payloads: list[Payload], now: float) -> bool:
        return False
