"""NAT traversal, socket side (RFC 3948, RFC 7296 sec. 2.23). Never imports ``aioipsec``."""

from nat_t.demux import (
    IKE_PORT,
    NAT_KEEPALIVE,
    NAT_T_PORT,
    NON_ESP_MARKER,
    Udp4500Kind,
    add_non_esp_marker,
    classify,
    demux,
    esp_spi,
    ike_datagram,
)
from nat_t.keepalive import DEFAULT_KEEPALIVE_INTERVAL, KeepaliveTimer
from nat_t.natd import NatDetection, detect_nat, natd_hash
from nat_t.peer import PeerAddressTracker

__all__ = [
    "DEFAULT_KEEPALIVE_INTERVAL",
    "IKE_PORT",
    "NAT_KEEPALIVE",
    "NAT_T_PORT",
    "NON_ESP_MARKER",
    "KeepaliveTimer",
    "NatDetection",
    "PeerAddressTracker",
    "Udp4500Kind",
    "add_non_esp_marker",
    "classify",
    "demux",
    "detect_nat",
    "esp_spi",
    "ike_datagram",
    "natd_hash",
]
