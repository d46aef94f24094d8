"""A packet flood from a raw socket, run as its own process inside a namespace (so the test
process keeps its CPU for driving and measuring).

    python -m tests.hardening.flood_sender ike-init TEMPLATE_HEX DST SECONDS MAX_PACKETS RATE
    python -m tests.hardening.flood_sender esp PACKET_HEX DST SECONDS MAX_PACKETS RATE
    python -m tests.hardening.flood_sender esp-spoofed PACKET_HEX DST SECONDS MAX_PACKETS RATE

``ike-init``: TEMPLATE is an IKE_SA_INIT request; every packet gets a fresh initiator SPI
and a spoofed source address from 198.18.0.0/15 (IP_HDRINCL), UDP 500 -> 500.
``esp``: PACKET (SPI onwards) is sent as raw ESP with its sequence number incremented.
``esp-spoofed``: the same from a new spoofed source in 198.18.0.0/15 for every packet
(raw ESP needs no handshake: a per-source log limiter sees each as new, issue 13 F3).
Bounded by SECONDS and MAX_PACKETS; RATE packets per second (0: as fast as it can, in
batches of 100 with a sleep to keep the average); prints ``sent N in S s`` at the end.
"""

from __future__ import annotations

import os
import socket
import struct
import sys
import time


def _spoofed(source: int, destination: bytes, payload: bytes, protocol: int = 17) -> bytes:
    if protocol == 17:
        payload = struct.pack("!HHHH", 500, 500, 8 + len(payload), 0) + payload
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0, 64, protocol, 0,
        struct.pack("!I", source), destination,
    )  # fmt: skip
    return header + payload


def _pace(started: float, sent: int, rate: float) -> None:
    if rate > 0:
        ahead = sent / rate - (time.monotonic() - started)
        if ahead > 0:
            time.sleep(ahead)


def main(argv: list[str]) -> int:
    kind, template_hex, destination, seconds_text, max_text, rate_text = argv
    rate = float(rate_text)
    template = bytes.fromhex(template_hex)
    seconds, max_packets = float(seconds_text), int(max_text)
    sent = 0
    started = time.monotonic()
    deadline = started + seconds
    if kind == "ike-init":
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
        base = struct.unpack("!I", socket.inet_aton("198.18.0.0"))[0]
        dst = socket.inet_aton(destination)
        # Pre-built batches: 4096 sources, each with its own SPI (a new half-open SA each).
        packets = [_spoofed(base + 1 + i, dst, os.urandom(8) + template[8:]) for i in range(4096)]
        while sent < max_packets and time.monotonic() < deadline:
            for packet in packets[sent % 4096 :][:100]:
                try:
                    sock.sendto(packet, (destination, 0))
                except OSError:
                    pass
                sent += 1
            _pace(started, sent, rate)
    elif kind == "esp-spoofed":
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
        base = struct.unpack("!I", socket.inet_aton("198.18.0.0"))[0]
        dst = socket.inet_aton(destination)
        spi, body = template[:4], template[8:]
        while sent < max_packets and time.monotonic() < deadline:
            for _ in range(min(100, max_packets - sent)):
                sent += 1
                esp = spi + struct.pack("!I", sent) + body
                try:
                    sock.sendto(_spoofed(base + sent, dst, esp, 50), (destination, 0))
                except OSError:
                    pass
            _pace(started, sent, rate)
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ESP)
        spi = template[:4]
        body = template[8:]
        while sent < max_packets and time.monotonic() < deadline:
            for _ in range(min(100, max_packets - sent)):
                sent += 1
                try:
                    sock.sendto(spi + struct.pack("!I", sent) + body, (destination, 0))
                except OSError:
                    pass
            _pace(started, sent, rate)
    elapsed = time.monotonic() - started
    print(f"sent {sent} in {elapsed:.2f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
