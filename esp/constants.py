"""The numbers of the ESP/AH data plane, in one place.

``IpProto`` holds the IANA "Assigned Internet Protocol Numbers" the data plane reads or
writes: the ESP Next Header field (RFC 4303 sec. 2.6), the IPv4 Protocol and IPv6 Next
Header fields, the AH Next Header (RFC 4302 sec. 2.1). The other constants are the ESP
packet layout (RFC 4303 sec. 2) and the padding it prescribes (sec. 2.4).
"""

from __future__ import annotations

from enum import IntEnum


class IpProto(IntEnum):
    """IANA protocol numbers (https://www.iana.org/assignments/protocol-numbers)."""

    HOPOPT = 0  # IPv6 hop-by-hop options (RFC 8200 sec. 4.3)
    ICMP = 1
    IPV4 = 4  # IP in IP: an ESP tunnel-mode payload that is an IPv4 packet
    TCP = 6
    UDP = 17  # also RFC 3948 ESP-in-UDP
    IPV6 = 41  # an ESP tunnel-mode payload that is an IPv6 packet
    IPV6_ROUTE = 43
    IPV6_FRAG = 44
    ESP = 50
    AH = 51
    ICMPV6 = 58
    NONE = 59  # "No Next Header": an ESP dummy packet (RFC 4303 sec. 2.6)
    IPV6_OPTS = 60
    SCTP = 132
    UDPLITE = 136


# RFC 4303 sec. 2: SPI (4) || Sequence Number (4) start every ESP packet.
ESP_HEADER_LEN = 8
# The counter-mode AEADs carry an 8-octet IV (RFC 4106 sec. 3.1, RFC 4309 sec. 3.1,
# RFC 7634 sec. 2): SPI || Seq || IV is 16 octets.
AEAD_IV_LEN = 8
# Pad Length and Next Header close the ESP trailer (RFC 4303 sec. 2.4-2.6).
TRAILER_FIXED_LEN = 2
# The longest inner packet: the IPv4/IPv6 total length field is 16 bits.
MAX_INNER = 65535
# RFC 4303 sec. 2.4: padding bytes are 1, 2, 3, ... (a monotonically increasing series);
# PADDING[:n] is the padding of length n (at most 255).
PADDING = bytes(range(1, 256))
