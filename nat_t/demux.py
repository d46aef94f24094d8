"""Port 4500 demultiplexing (RFC 3948 sec. 2, RFC 7296 sec. 2.23).

One UDP socket on port 4500 carries three kinds of datagram::

    IKE:        0                   1                   2                   3
                0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
               +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
               |                      Non-ESP Marker (0)                       |
               +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
               |                      IKE header, payloads ...                 ~

    keepalive: a single octet 0xFF (RFC 3948 sec. 2.3)

    ESP:       +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
               |                 SPI (never 0, RFC 4303 sec. 2.1)              |
               +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
               |                       Sequence Number ...                     ~

The ESP SPI sits where the IKE marker would be, and an SPI of zero is reserved, so the first four
octets decide. Anything else (empty, 1-3 octets other than the keepalive, a marker with nothing
behind it, ESP shorter than SPI + sequence number) is dropped silently: there is no one to tell.
On port 500 there is no marker: every datagram is IKE.
"""

from __future__ import annotations

from enum import Enum

NAT_T_PORT = 4500
IKE_PORT = 500
NON_ESP_MARKER = b"\x00\x00\x00\x00"
NAT_KEEPALIVE = b"\xff"
ESP_MIN_LENGTH = 8  # SPI + Sequence Number; the ESP layer checks the rest


class Udp4500Kind(Enum):
    IKE = "ike"
    ESP = "esp"
    KEEPALIVE = "keepalive"
    INVALID = "invalid"


def classify(datagram: bytes | bytearray | memoryview) -> Udp4500Kind:
    """The kind of a datagram received on port 4500 (cheap: looks at four octets at most)."""
    length = len(datagram)
    if (
        length >= 4
        and datagram[0] == 0
        and datagram[1] == 0
        and datagram[2] == 0
        and (datagram[3] == 0)
    ):
        return Udp4500Kind.IKE if length > 4 else Udp4500Kind.INVALID
    if length >= ESP_MIN_LENGTH:
        return Udp4500Kind.ESP
    if length == 1 and datagram[0] == 0xFF:
        return Udp4500Kind.KEEPALIVE
    return Udp4500Kind.INVALID


def demux(
    datagram: bytes | bytearray | memoryview,
) -> tuple[Udp4500Kind, memoryview]:
    """Classify and return the payload for the next layer without copying.

    IKE: the IKE message (marker stripped); ESP: the ESP packet (SPI onwards, RFC 3948 sec. 2.1
    leaves it unchanged); keepalive and invalid: an empty view.
    """
    view = memoryview(datagram)
    kind = classify(view)
    if kind is Udp4500Kind.IKE:
        return kind, view[4:]
    if kind is Udp4500Kind.ESP:
        return kind, view
    return kind, view[:0]


def add_non_esp_marker(ike_message: bytes | bytearray | memoryview) -> bytes:
    """The datagram to send an IKE message on port 4500 (RFC 7296 sec. 2.23)."""
    return NON_ESP_MARKER + bytes(ike_message)


def ike_datagram(ike_message: bytes | bytearray | memoryview, on_nat_t_port: bool) -> bytes:
    """The UDP payload for an IKE message: with the marker on the NAT-T port, bare on port 500."""
    return add_non_esp_marker(ike_message) if on_nat_t_port else bytes(ike_message)


def esp_spi(esp_packet: bytes | bytearray | memoryview) -> int:
    """The SPI of an ESP packet (classify() has checked the length)."""
    return int.from_bytes(esp_packet[:4], "big")
