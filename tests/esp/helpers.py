"""Inner packets for the ESP tests, built by scapy (a stack we did not write)."""

from __future__ import annotations

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6


def ipv4_packet(size: int = 84, src: str = "10.1.0.1", dst: str = "10.2.0.1") -> bytes:
    payload = bytes(range(256)) * (size // 256 + 1)
    pkt = IP(src=src, dst=dst, id=7) / ICMP(id=0x1234, seq=1) / payload[: max(0, size - 28)]
    return bytes(pkt)


def ipv6_packet(size: int = 104, src: str = "2001:db8:1::1", dst: str = "2001:db8:2::1") -> bytes:
    payload = bytes(range(256)) * (size // 256 + 1)
    pkt = IPv6(src=src, dst=dst) / UDP(sport=1000, dport=2000) / payload[: max(0, size - 48)]
    return bytes(pkt)


def tcp_packet(src: str, dst: str, sport: int, dport: int) -> bytes:
    return bytes(IP(src=src, dst=dst) / TCP(sport=sport, dport=dport) / b"data")
