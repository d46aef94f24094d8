"""Liveness checks (RFC 7296 sec. 2.4): an empty INFORMATIONAL request. Retransmission
exhaustion (``ikev2.sa``) declares the peer dead and applies the Child SAs' dpd_action
(clear / restart / trap, reported in ``PeerUnreachable``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ikev2.enums import ExchangeType
from ikev2.tasks import Task

if TYPE_CHECKING:
    from ikev2.sa import IkeSa


class DpdTask(Task):
    exchange = ExchangeType.INFORMATIONAL
    name = "INFORMATIONAL(DPD)"

    def build(self, sa: IkeSa, now: float) -> list[Any] | None:
        return [] if sa.established else None

    def process(self, sa: IkeSa, payloads: list[Any], now: float) -> bool:
        return False
