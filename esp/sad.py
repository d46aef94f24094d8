"""Security Association Database (RFC 4301 sec. 4.4.2): what ``ip xfrm state`` shows.

Inbound lookup is one dictionary access by SPI (per protocol); outbound SAs are found by
the ``reqid`` of the policy that protects the packet. Rekeying (RFC 7296 sec. 2.8) installs
the new SAs first: an outbound SA added for a reqid that already has one takes over at
once (the old one stays listed, unused, until deleted), and the old inbound SA keeps
accepting packets until the IKE side deletes it.

The SAD owns the event queue that its SAs (and the SPD) report into.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from esp.ah import AhSa
from esp.events import Event
from esp.sa import Direction, EspSa, SaBase

INVALID_SPI_REPORT_INTERVAL = 1.0  # seconds between two UnknownSpi events (rate limit)


@dataclass(frozen=True, slots=True)
class UnknownSpi:
    """A packet arrived for an SPI we do not have. Rate-limited; the IKE side may answer
    with an INVALID_SPI notify (RFC 7296 sec. 2.21.3), or not."""

    protocol: str
    spi: int


class Sad:
    def __init__(self) -> None:
        self.events: collections.deque[Any] = collections.deque()
        self._inbound: dict[str, dict[int, SaBase]] = {"esp": {}, "ah": {}}
        self._outbound: dict[int, list[SaBase]] = {}
        # reqid -> the newest outbound SA (the last of its list): what the SPD protects with.
        self.current_outbound: dict[int, SaBase] = {}
        self._states: list[SaBase] = []
        self.unknown_spi = 0
        self._last_unknown_report = float("-inf")

    # ------------------------------------------------------------ changes
    def add(self, sa: SaBase) -> None:
        """Install ``sa``. Inbound: an SPI already in use for the protocol is refused.
        Outbound: it becomes the SA for its reqid (rekey: install new, then delete old)."""
        if sa.direction is Direction.IN:
            table = self._inbound[sa.protocol]
            if sa.spi in table:
                raise ValueError(f"inbound {sa.protocol} SPI {sa.spi:#010x} already installed")
            table[sa.spi] = sa
        else:
            self._outbound.setdefault(sa.reqid, []).append(sa)
            self.current_outbound[sa.reqid] = sa
        sa.events = self.events
        self._states.append(sa)

    def update(self, old: SaBase, new: SaBase) -> None:
        """Rekey: install ``new`` before removing ``old`` (no window without an SA)."""
        self.add(new)
        self.delete(old)

    def delete(self, sa: SaBase) -> None:
        if sa.direction is Direction.IN:
            table = self._inbound[sa.protocol]
            if table.get(sa.spi) is sa:
                del table[sa.spi]
        else:
            candidates = self._outbound.get(sa.reqid, [])
            if sa in candidates:
                candidates.remove(sa)
            if candidates:
                self.current_outbound[sa.reqid] = candidates[-1]
            else:
                self._outbound.pop(sa.reqid, None)
                self.current_outbound.pop(sa.reqid, None)
        if sa in self._states:
            self._states.remove(sa)

    def flush(self) -> None:
        for sa in list(self._states):
            self.delete(sa)

    # ------------------------------------------------------------ lookups
    def lookup_inbound(
        self, spi: int, protocol: str = "esp", now: float | None = None
    ) -> SaBase | None:
        """The inbound SA for ``spi`` or None (counted as ``unknown_spi``; with ``now``,
        an ``UnknownSpi`` event at most once per second)."""
        sa = self._inbound[protocol].get(spi)
        if sa is None:
            self.unknown_spi += 1
            if now is not None and now - self._last_unknown_report >= INVALID_SPI_REPORT_INTERVAL:
                self._last_unknown_report = now
                self.events.append(UnknownSpi(protocol, spi))
        return sa

    def lookup_outbound(self, reqid: int) -> SaBase | None:
        candidates = self._outbound.get(reqid)
        return candidates[-1] if candidates else None

    def inbound_esp_table(self) -> dict[int, SaBase]:
        """The SPI -> SA dictionary itself, for a receive loop that wants ``dict.get``."""
        return self._inbound["esp"]

    def __iter__(self) -> Iterator[SaBase]:
        return iter(list(self._states))

    def __len__(self) -> int:
        return len(self._states)

    # ------------------------------------------------------------ time and events
    def expire(self, now: float) -> list[SaBase]:
        """Check time lifetimes; SAs past a hard limit are removed (as the kernel does)
        and returned. Their ``SaExpired`` events are in the queue."""
        removed = []
        for sa in list(self._states):
            sa.check_time(now)
            if sa.expired:
                self.delete(sa)
                removed.append(sa)
        return removed

    def next_event(self) -> Event | UnknownSpi | None:
        return self.events.popleft() if self.events else None

    # ------------------------------------------------------------ listings
    def to_json(self) -> list[dict[str, object]]:
        return [state_json(sa) for sa in self._states]

    def json(self) -> str:
        return json.dumps(self.to_json(), indent=2)

    def text(self) -> str:
        """Close to ``ip -s xfrm state``; keys are never shown (only their length)."""
        return "".join(state_text(sa) for sa in self._states)


def _limit(value: int | float | None) -> str:
    return "(INF)" if value is None else str(value)


def state_json(sa: SaBase) -> dict[str, object]:
    info: dict[str, object] = {
        "src": sa.src,
        "dst": sa.dst,
        "proto": sa.protocol,
        "spi": f"{sa.spi:#010x}",
        "reqid": sa.reqid,
        "mode": sa.mode.value,
        "dir": sa.direction.value,
        "esn": sa.esn,
        "replay_window": sa.replay_window if sa.direction is Direction.IN else 0,
        "seq": sa.seq,
        "replay_highest": sa.replay.highest if sa.replay else None,
        "lifetime": {
            "soft_bytes": sa.lifetime.soft_bytes,
            "hard_bytes": sa.lifetime.hard_bytes,
            "soft_packets": sa.lifetime.soft_packets,
            "hard_packets": sa.lifetime.hard_packets,
            "soft_seconds": sa.lifetime.soft_seconds,
            "hard_seconds": sa.lifetime.hard_seconds,
            "installed_at": sa.installed_at,
        },
        "soft_expired": sa.soft_expired,
        "expired": sa.expired,
        "counters": sa.counters(),
        "selectors": [sel.to_json() for sel in sa.selectors],
    }
    if isinstance(sa, EspSa):
        info["encr"] = {"id": sa.encr.name, "name": sa.encr_name, "key_bits": sa.key_bits}
        info["integ"] = sa.integ.name if sa.integ_name else None
        info["icv_bytes"] = sa.icv_size
        info["tfc_pad_to"] = sa.tfc_pad_to
        info["encap"] = (
            {"type": "espinudp", "sport": sa.udp_encap[0], "dport": sa.udp_encap[1]}
            if sa.udp_encap
            else None
        )
    elif isinstance(sa, AhSa):
        info["integ"] = sa.integ.name
        info["icv_bytes"] = sa.icv_size
    return info


def state_text(sa: SaBase) -> str:
    flags = " flag esn" if sa.esn else ""
    lines = [
        f"src {sa.src or '0.0.0.0'} dst {sa.dst or '0.0.0.0'}",
        f"\tproto {sa.protocol} spi {sa.spi:#010x} reqid {sa.reqid} mode {sa.mode.value}",
        f"\treplay-window {sa.replay_window if sa.replay else 0}{flags}",
    ]
    if isinstance(sa, EspSa):
        if sa.icv_size and sa.integ_name is None:
            lines.append(f"\taead {sa.encr_name} (key {sa.key_bits} bits, not shown) "
                         f"{sa.icv_size * 8}")  # fmt: skip
        else:
            lines.append(f"\tenc {sa.encr_name} (key {sa.key_bits} bits, not shown)")
            if sa.integ_name:
                lines.append(f"\tauth-trunc {sa.integ_name} (key not shown) {sa.icv_size * 8}")
        if sa.udp_encap:
            lines.append(f"\tencap type espinudp sport {sa.udp_encap[0]} dport {sa.udp_encap[1]}")
        if sa.tfc_pad_to:
            lines.append(f"\ttfcpad {sa.tfc_pad_to}")
    elif isinstance(sa, AhSa):
        lines.append(f"\tauth-trunc {sa.integ_name} (key not shown) {sa.icv_size * 8}")
    for selector in sa.selectors:
        lines.append(f"\tsel {selector.text()}")
    highest = sa.replay.highest if sa.replay else 0
    lines.append(
        f"\tanti-replay context: seq-hi {highest >> 32:#x}, seq {highest & 0xFFFFFFFF:#x}, "
        f"oseq-hi {sa.seq >> 32:#x}, oseq {sa.seq & 0xFFFFFFFF:#x}"
    )
    if sa.replay:
        lines.append(f"\treplay_window {sa.replay.size}, bitmap {sa.replay.bitmap_hex()}")
    life = sa.lifetime
    lines += [
        "\tlifetime config:",
        f"\t  limit: soft {_limit(life.soft_bytes)}(bytes), hard {_limit(life.hard_bytes)}(bytes)",
        f"\t  limit: soft {_limit(life.soft_packets)}(packets), "
        f"hard {_limit(life.hard_packets)}(packets)",
        f"\t  expire add: soft {_limit(life.soft_seconds)}(sec), "
        f"hard {_limit(life.hard_seconds)}(sec)",
        "\tlifetime current:",
        f"\t  {sa.bytes_in + sa.bytes_out}(bytes), {sa.packets_in + sa.packets_out}(packets)",
        f"\t  add {sa.installed_at}",
        "\tstats:",
        f"\t  replay-window 0 replay {sa.replays} failed {sa.icv_failures}",
        "\t  " + " ".join(f"{k} {v}" for k, v in sa.counters().items()),
        f"\tdir {sa.direction.value}"
        + (" expired" if sa.expired else " soft-expired" if sa.soft_expired else ""),
    ]
    return "\n".join(lines) + "\n"
