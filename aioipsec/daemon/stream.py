"""The ``subscribe`` stream (``aioipsec explain --follow``): one JSON record per IKE
message sent or received and per engine event, never keys."""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import fields
from typing import Any

from aioipsec.control import Stream
from aioipsec.daemon.state import DaemonState
from aioipsec.decode import short_name
from ikev2 import events as ev
from ikev2.enums import ExchangeType, PayloadType
from ikev2.message import parse_message
from ikev2.payloads import SkPayload

SUBSCRIBER_QUEUE = 10000  # records kept for a slow ``subscribe`` client before dropping


class EventStream(DaemonState):
    """The subscribers of the ``subscribe`` command and what they are sent."""

    def _publish(self, record: dict[str, Any]) -> None:
        """Queue one record for every subscriber; a subscriber that does not keep up loses
        records (counted) rather than growing the daemon's memory."""
        for queue in self._subscribers:
            try:
                queue.put_nowait(record)
            except asyncio.QueueFull:
                self.subscriber_drops += 1

    async def _cmd_subscribe(self, args: dict[str, Any]) -> Any:
        """Stream one JSON record per IKE message sent or received and per engine event
        (``aioipsec explain --follow``). Never keys: with ``--save-keys`` the first record
        points to the key files."""

        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=SUBSCRIBER_QUEUE)
        # Not "key_files": the control socket's secret filter redacts any "key" field, and
        # these are file names, not keys.
        tables = None
        if self.exporter is not None:
            tables = [str(self.exporter.ike_table_path), str(self.exporter.esp_table_path)]
        queue.put_nowait(
            {"type": "subscribed", "time": time.time(), "pid": os.getpid(),
             "decryption_tables": tables}
        )  # fmt: skip
        self._subscribers.add(queue)

        async def items() -> Any:
            while True:
                yield await queue.get()

        return Stream(items(), on_close=lambda: self._subscribers.discard(queue))


def ike_message_record(
    data: bytes, direction: str, local: tuple[str, int], remote: tuple[str, int]
) -> dict[str, Any]:
    """One IKE message as the ``subscribe`` stream shows it, decoded with our parser: header
    fields and payload names in RFC 7296 notation. Encrypted messages are not decrypted
    (the stream carries no keys): their SK payload names the first payload inside it."""

    record: dict[str, Any] = {
        "type": "ike", "time": time.time(), "direction": direction,
        "local": list(local), "remote": list(remote), "length": len(data),
    }  # fmt: skip
    try:
        message = parse_message(data)
    except Exception as error:  # a datagram the engine will refuse: say so, do not fail
        record["error"] = str(getattr(error, "reason", error))
        return record
    header = message.header
    try:
        exchange = ExchangeType(header.exchange).name
    except ValueError:
        exchange = str(int(header.exchange))
    names = []
    for payload in message.payloads:
        if isinstance(payload, SkPayload):
            try:
                first = PayloadType(payload.first_inner).name
            except ValueError:
                first = str(payload.first_inner)
            names.append(f"SK{{{first}...}}")
        else:
            names.append(short_name(payload, hide_nonce_role=True))
    record.update(
        exchange=exchange, message_id=header.message_id, response=header.response,
        initiator_flag=header.initiator, spi_i=header.spi_i.hex(), spi_r=header.spi_r.hex(),
        payloads=names,
    )  # fmt: skip
    return record


def event_record(event: ev.Event) -> dict[str, Any]:
    """One engine event for the ``subscribe`` stream (key fields are left out: they are
    ``repr=False`` in ikev2.events)."""
    return {
        "type": "event",
        "time": time.time(),
        "event": type(event).__name__,
        "connection": event.connection,
        "ike_sa_id": event.ike_sa_id,
        "fields": public_fields(event),
    }


def public_fields(event: ev.Event) -> dict[str, Any]:
    return {
        f.name: getattr(event, f.name)
        for f in fields(event)
        if f.repr and f.name not in ("ike_sa_id", "connection")
    }
