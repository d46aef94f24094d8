"""IKE event counters with the names of strongSwan's ``counters`` plugin.

``swanctl --counters`` (VICI ``get-counters``/``reset-counters``) and the control socket's
``get-counters`` show them: IKE messages in and out by exchange and direction (requests and
responses apart), IKE and Child SA rekeys, and messages refused before any IKE SA handled
them. Global counters always; per connection for the messages of an established IKE SA
(found by its initiator SPI) and for the rekeys, which is where charon counts them too.
"""

from __future__ import annotations

from typing import Any

from ikev2.enums import ExchangeType

# strongSwan's order (vici_query.c, vici_counter_type_names): swanctl prints them as sent.
COUNTER_NAMES = (
    "ike-rekey-init", "ike-rekey-resp", "child-rekey", "invalid", "invalid-spi",
    "ike-init-in-req", "ike-init-in-resp", "ike-init-out-req", "ike-init-out-resp",
    "ike-auth-in-req", "ike-auth-in-resp", "ike-auth-out-req", "ike-auth-out-resp",
    "create-child-in-req", "create-child-in-resp", "create-child-out-req",
    "create-child-out-resp", "info-in-req", "info-in-resp", "info-out-req", "info-out-resp",
)  # fmt: skip

_EXCHANGES: dict[int, str] = {
    int(ExchangeType.IKE_SA_INIT): "ike-init",
    int(ExchangeType.IKE_AUTH): "ike-auth",
    int(ExchangeType.CREATE_CHILD_SA): "create-child",
    int(ExchangeType.INFORMATIONAL): "info",
}
_HEADER_SIZE = 28  # RFC 7296 sec. 3.1
_RESPONSE_FLAG = 0x20  # RFC 7296 sec. 3.1: the R bit of the flags octet


def _zero() -> dict[str, int]:
    return dict.fromkeys(COUNTER_NAMES, 0)


class IkeCounters:
    """The counters; fed by the daemon with every IKE message and the rekey events."""

    def __init__(self) -> None:
        self.totals = _zero()
        self.by_connection: dict[str, dict[str, int]] = {}
        # initiator SPI -> connection, for the IKE SAs established (and not deleted).
        self._connection_of_spi: dict[int, str] = {}
        self._engine_unknown_spi = 0
        self._unknown_spi_base = 0

    def _add(self, name: str, connection: str | None) -> None:
        self.totals[name] += 1
        if connection is not None:
            self.by_connection.setdefault(connection, _zero())[name] += 1

    def message(self, data: bytes, incoming: bool) -> None:
        """One IKE message (without the non-ESP marker) received or sent. Only the header
        is read (RFC 7296 sec. 3.1): exchange type and the Response flag."""
        if len(data) < _HEADER_SIZE or data[17] >> 4 != 2:
            if incoming:
                self._add("invalid", None)
            return
        kind = _EXCHANGES.get(data[18])
        if kind is None:
            return
        response = bool(data[19] & _RESPONSE_FLAG)
        name = f"{kind}-{'in' if incoming else 'out'}-{'resp' if response else 'req'}"
        spi_i = int.from_bytes(data[:8], "big")
        self._add(name, self._connection_of_spi.get(spi_i))

    def ike_sa_up(self, connection: str, spi_i: int) -> None:
        self._connection_of_spi[spi_i] = connection

    def ike_sa_down(self, spi_i: int) -> None:
        self._connection_of_spi.pop(spi_i, None)

    def ike_rekeyed(self, connection: str, old_spi_i: int, new_spi_i: int, initiator: bool) -> None:
        self._connection_of_spi.pop(old_spi_i, None)
        self._connection_of_spi[new_spi_i] = connection
        self._add("ike-rekey-init" if initiator else "ike-rekey-resp", connection)

    def child_rekeyed(self, connection: str) -> None:
        self._add("child-rekey", connection)

    def engine_unknown_spi(self, engine_count: int) -> None:
        """Messages for no known IKE SA: the engine counts them (``unknown_spi``); taken
        over before each listing, relative to the last reset."""
        self._engine_unknown_spi = engine_count
        self.totals["invalid-spi"] = engine_count - self._unknown_spi_base

    def listing(self, name: str | None = None, every: bool = False) -> dict[str, Any]:
        """``{"": global}`` by default; ``{name: ...}`` for one connection; every tracked
        connection with ``every`` (VICI ``all = yes``). Values are decimal strings."""
        if every:
            chosen = self.by_connection
        elif name:
            chosen = {name: self.by_connection.get(name, _zero())}
        else:
            chosen = {"": self.totals}
        return {key: {k: str(v) for k, v in values.items()} for key, values in chosen.items()}

    def reset(self, name: str | None = None, every: bool = False) -> None:
        if every:
            for values in self.by_connection.values():
                values.update(_zero())
        elif name:
            self.by_connection.pop(name, None)
        else:
            self.totals = _zero()
            self._unknown_spi_base = self._engine_unknown_spi
