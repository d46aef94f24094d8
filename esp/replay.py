"""Anti-replay window (RFC 4303 sec. 3.4.3) as an RFC 6479 ring bitmap, plus ESN inference.

RFC 6479 keeps the bitmap as a ring of blocks: moving the window right clears the blocks
that wrap round instead of shifting every bit, so the cost of an in-order packet is one
compare, one block clear and one bit set, whatever the window size. Blocks here are the
bytes of a ``bytearray``: no Python integer grows with the window.

The ring holds at least ``size + 8`` bits so that every sequence number inside the window
(``highest - size < seq <= highest``) has a bit of its own even when the oldest block is
only partly inside the window (RFC 6479 sec. 2).

Memory: a gateway holds one window per inbound SA, most of them idle at a time. The ring
is allocated with the first packet recorded, and the all-zero block used to clear it
after a long jump is one per ring size, shared: 0.6 KiB less per idle SA (1024 packets:
256-octet ring).

``check`` is called before the ICV is verified and ``update`` only after (RFC 4303
sec. 3.4.3: a forged packet must never move the window).
"""

from __future__ import annotations

MAX_WINDOW = 1 << 16
SEQ64_MAX = (1 << 64) - 1

_ZEROS: dict[int, bytes] = {}  # ring size in octets -> that many zeros (few sizes in use)


class ReplayWindow:
    """Sliding window over full (64-bit when ESN) sequence numbers."""

    __slots__ = ("_bitmap", "_bits_mask", "_blocks_mask", "_zeros", "highest", "size")

    def __init__(self, size: int = 1024) -> None:
        if not 1 <= size <= MAX_WINDOW:
            raise ValueError(f"replay window must be 1..{MAX_WINDOW} packets, not {size}")
        self.size = size
        blocks = 1
        while blocks * 8 < size + 8:
            blocks *= 2
        self._bitmap: bytearray | None = None  # allocated by the first update()
        zeros = _ZEROS.get(blocks)
        if zeros is None:
            zeros = _ZEROS[blocks] = bytes(blocks)
        self._zeros = zeros
        self._blocks_mask = blocks - 1
        self._bits_mask = blocks * 8 - 1
        # Highest sequence number authenticated so far; 0 means none (0 is never sent).
        self.highest = 0

    def check(self, seq: int) -> bool:
        """True if ``seq`` is new and not left of the window (no state change)."""
        if seq > self.highest:
            return True
        if seq <= 0 or self.highest - seq >= self.size:
            return False
        bitmap = self._bitmap
        if bitmap is None:  # nothing recorded yet
            return True
        bit = seq & self._bits_mask
        return not (bitmap[(bit >> 3)] >> (bit & 7)) & 1

    def update(self, seq: int) -> None:
        """Record ``seq`` as received; call only after ``check`` passed and the ICV verified.

        The one definition of the window update (``esp.processing`` and ``esp.ah`` call it).
        In order, 7 packets in 8 stay in the newest block: one compare and one bit set.
        """
        highest = self.highest
        bitmap = self._bitmap
        if bitmap is None:
            bitmap = self._bitmap = bytearray(self._zeros)
        if seq > highest:
            new_block = seq >> 3
            old_block = highest >> 3
            if new_block != old_block:
                # RFC 6479 sec. 2: clear the blocks the window moves into (all of them
                # after a jump longer than the ring).
                mask = self._blocks_mask
                if new_block - old_block > mask:
                    bitmap[:] = self._zeros
                else:
                    for block in range(old_block + 1, new_block + 1):
                        bitmap[block & mask] = 0
            self.highest = seq
        bit = seq & self._bits_mask
        bitmap[bit >> 3] |= 1 << (bit & 7)

    def infer_esn(self, seq_low: int) -> int:
        """Full 64-bit sequence number for a received low half (RFC 4303 App. A2.2).

        Returns -1 when no consistent value exists (the high half would go below 0 or
        past 2**32 - 1); the caller counts that as a replay.
        """
        highest = self.highest
        top_low = highest & 0xFFFFFFFF
        top_high = highest >> 32
        window = self.size
        if top_low >= window - 1:
            # Case A: the window lies within one sequence-number subspace.
            seq_high = top_high if seq_low >= top_low - window + 1 else top_high + 1
        else:
            # Case B: the window spans two subspaces (the low half wrapped recently).
            seq_high = top_high - 1 if seq_low >= top_low - window + 1 & 4294967295 else top_high
        if seq_high < 0 or seq_high > 0xFFFFFFFF:
            return -1
        return (seq_high << 32) | seq_low

    def bitmap_hex(self) -> str:
        """The window as ``ip xfrm state`` would print it: newest packet is bit 0."""
        value = 0
        bitmap = self._bitmap
        if bitmap is None:
            return "0x0"
        for offset in range(min(self.size, self.highest)):
            seq = self.highest - offset
            bit = seq & self._bits_mask
            if (bitmap[bit >> 3] >> (bit & 7)) & 1:
                value |= 1 << offset
        return f"{value:#x}"
