"""IPv4 fragmentation of an inner packet before it is encrypted (RFC 791 sec. 3.2).

The outer ESP packets carry DF (``copy_df``, path MTU discovery), so an inner IPv4 packet
without DF that does not fit the tunnel MTU is fragmented *before* encryption, each
fragment in its own ESP packet (RFC 4301 sec. 8.1 leaves the choice to the implementation;
fragmenting the inner packet means no router has to fragment, or drop, the outer one). The
receiver's kernel reassembles what comes out of its tunnel. IPv6 is never fragmented on the
way (RFC 8200 sec. 5): too big IPv6 gets Packet Too Big instead (:mod:`tun.icmp`).
"""

from __future__ import annotations

import struct

from tun.icmp import internet_checksum

_DF = 0x4000
_MF = 0x2000
_OFFSET_MASK = 0x1FFF


def _copied_options(options: bytes) -> bytes:
    """The options every fragment repeats: those with the "copied" flag (RFC 791 sec. 3.1)."""
    out = bytearray()
    index = 0
    while index < len(options):
        kind = options[index]
        if kind == 0:  # end of option list
            break
        if kind == 1:  # no-operation
            index += 1
            continue
        if index + 1 >= len(options) or options[index + 1] < 2:
            break  # malformed: copy nothing more
        length = options[index + 1]
        if kind & 0x80:
            out += options[index : index + length]
        index += length
    out += bytes(-len(out) % 4)  # pad to a 32-bit boundary
    return bytes(out)


def fragment_ipv4(packet: bytes | bytearray | memoryview, mtu: int) -> list[bytes] | None:
    """PACKET cut into fragments of at most MTU octets, or None when it may not be cut (DF
    set, not IPv4, malformed, or an MTU too small for 8 octets of payload)."""
    data = bytes(packet)
    if len(data) < 20 or data[0] >> 4 != 4:
        return None
    header_length = (data[0] & 0x0F) * 4
    total_length, flags_offset = struct.unpack_from("!H2xH", data, 2)
    if flags_offset & _DF or header_length < 20 or total_length != len(data):
        return None
    if len(data) <= mtu:
        return [data]
    header = bytearray(data[:header_length])
    later_header = bytearray(data[:20] + _copied_options(data[20:header_length]))
    later_header[0] = 0x40 | len(later_header) // 4
    payload = data[header_length:]
    base_offset = flags_offset & _OFFSET_MASK  # the packet may itself be a fragment
    last_more = flags_offset & _MF
    fragments = []
    position = 0
    while position < len(payload):
        head = header if position == 0 else later_header
        room = (mtu - len(head)) // 8 * 8
        if room <= 0:
            return None
        chunk = payload[position : position + room]
        more = _MF if position + len(chunk) < len(payload) else last_more
        fragment = bytearray(head) + chunk
        struct.pack_into("!H", fragment, 2, len(fragment))
        struct.pack_into("!H", fragment, 6, more | (base_offset + position // 8))
        struct.pack_into("!H", fragment, 10, 0)
        struct.pack_into("!H", fragment, 10, internet_checksum(bytes(fragment[: len(head)])))
        fragments.append(bytes(fragment))
        position += len(chunk)
    return fragments
