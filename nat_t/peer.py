"""Following the peer's address when its NAT mapping changes (RFC 7296 sec. 2.23, RFC 3948).

A NAT may drop a mapping and build a new one with another public port (or address). The peer's
next packet then arrives from a new (ip, port). RFC 7296 sec. 2.23: a host that is NOT behind a
NAT SHOULD then send everything to the address and port of the *validated* packet; a host
behind a NAT SHOULD NOT (an attacker could break the connection with a single packet), and the
update must only follow a *new* packet (a replayed old packet must not revert the address).

So the update is taken only for a packet that passed integrity checking and was new (an IKE
message with a new message ID, an ESP packet that advanced the replay window), and only when
we are not behind a NAT ourselves.
"""

from __future__ import annotations

Address = tuple[str, int]


class PeerAddressTracker:
    """The (ip, port) to send to for one IKE SA and its Child SAs."""

    def __init__(self, address: Address, *, local_behind_nat: bool = False) -> None:
        self.address: Address = (address[0], address[1])
        self.local_behind_nat = local_behind_nat
        self.updates = 0

    def authenticated_packet_from(self, source: Address, *, new: bool) -> bool:
        """Report a packet that passed integrity checking; True when the peer address changed.

        ``new``: the packet was not a replay (new IKE message ID / ESP sequence number beyond
        the previous highest). The caller re-targets sockets and SAs on True.
        """
        source = (source[0], source[1])
        if source == self.address or not new or self.local_behind_nat:
            return False
        self.address = source
        self.updates += 1
        return True
