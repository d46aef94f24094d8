"""NAT keepalives (RFC 3948 sec. 2.3 and 4), sans-I/O: the caller passes the time in.

A host behind a NAT sends a one-octet 0xFF datagram to the peer's port 4500 when it has sent
nothing else to the peer for ``interval`` seconds, so that the NAT keeps the UDP mapping.
Any other packet sent to the peer (IKE or ESP-in-UDP) refreshes the mapping as well and resets
the timer. strongSwan's default ``keep_alive`` interval is 20 s, the RFC's suggestion.
"""

from __future__ import annotations

from nat_t.demux import NAT_KEEPALIVE

DEFAULT_KEEPALIVE_INTERVAL = 20.0


class KeepaliveTimer:
    """When the next keepalive is due. ``enabled`` follows "we are behind a NAT"."""

    def __init__(
        self, now: float, interval: float = DEFAULT_KEEPALIVE_INTERVAL, enabled: bool = True
    ) -> None:
        if interval <= 0:
            raise ValueError("keepalive interval must be positive")
        self.interval = interval
        self.enabled = enabled
        self.last_sent = now
        self.keepalives_sent = 0

    def packet_sent(self, now: float) -> None:
        """Record that some datagram (IKE, ESP or keepalive) went to the peer at NOW."""
        self.last_sent = max(self.last_sent, now)

    def next_due(self) -> float | None:
        """The time the next keepalive is due, None when disabled."""
        return self.last_sent + self.interval if self.enabled else None

    def poll(self, now: float) -> bytes | None:
        """The keepalive datagram to send now, or None; sending it is recorded."""
        due = self.next_due()
        if due is None or now < due:
            return None
        self.last_sent = now
        self.keepalives_sent += 1
        return NAT_KEEPALIVE
