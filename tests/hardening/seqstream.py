"""A UDP stream with sequence numbers, to count every datagram lost across rekeys.

    python -m tests.hardening.seqstream send --bind ADDR --to ADDR:PORT --rate 1000 --seconds 30
    python -m tests.hardening.seqstream recv --bind ADDR:PORT --seconds 60 --out FILE

Each datagram carries its sequence number and the sender's CLOCK_MONOTONIC (one clock for
every namespace of the machine), so the receiver can say not only how many were lost but
when they were sent: a loss is then matched with the rekey around it. The sender ends with
END markers (several copies, so one lost marker does not hang the receiver); the receiver
writes a JSON report: sent, received, lost (count and the first sequence numbers with their
send times), duplicates, out of order.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import struct
import sys
import time

HEADER = struct.Struct("!QQ")
END = 2**64 - 1
SIZE = 200


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def send(
    bind: str, to: tuple[str, int], rate: float, seconds: float, stop_file: str | None = None
) -> int:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((bind, 0))
    padding = b"\0" * (SIZE - HEADER.size)
    started = time.monotonic()
    sent = 0
    next_look = started
    while True:
        now = time.monotonic()
        if now - started >= seconds:
            break
        if stop_file is not None and now >= next_look:
            if os.path.exists(stop_file):
                break
            next_look = now + 0.1
        due = int((now - started) * rate) + 1
        while sent < due:
            payload = HEADER.pack(sent, time.monotonic_ns()) + padding
            try:
                sock.sendto(payload, to)
            except OSError:
                # ENOBUFS, or no route while the TUN route is replaced: still a lost
                # datagram, which the receiver counts; the sender goes on.
                pass
            sent += 1
        time.sleep(min(0.001, 1 / rate))
    for _ in range(20):
        sock.sendto(HEADER.pack(END, sent) + padding, to)
        time.sleep(0.05)
    return sent


def receive(bind: tuple[str, int], seconds: float) -> dict[str, object]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.bind(bind)
    seen: dict[int, int] = {}
    duplicates = out_of_order = 0
    highest = -1
    sent: int | None = None
    deadline = time.monotonic() + seconds
    end_grace: float | None = None
    while True:
        limit = deadline if end_grace is None else min(deadline, end_grace)
        remaining = limit - time.monotonic()
        if remaining <= 0:
            break
        sock.settimeout(remaining)
        try:
            data = sock.recv(2048)
        except TimeoutError:
            break
        if len(data) < HEADER.size:
            continue
        seq, stamp = HEADER.unpack_from(data)
        if seq == END:
            sent = stamp
            if end_grace is None:  # stragglers still in the tunnel: one more second
                end_grace = time.monotonic() + 1.0
            continue
        if seq in seen:
            duplicates += 1
            continue
        if seq < highest:
            out_of_order += 1
        highest = max(highest, seq)
        seen[seq] = stamp
    total = sent if sent is not None else highest + 1
    lost = [seq for seq in range(total) if seq not in seen]
    return {
        "sent": total,
        "end_marker_seen": sent is not None,
        "received": len(seen),
        "lost": len(lost),
        "lost_first": lost[:50],
        "duplicates": duplicates,
        "out_of_order": out_of_order,
        # When the lost ones would have been sent: neighbours' stamps (ns, CLOCK_MONOTONIC).
        "lost_near_ns": [seen.get(seq - 1) or seen.get(seq + 1) for seq in lost[:50]],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.hardening.seqstream")
    sub = parser.add_subparsers(dest="role", required=True)
    sender = sub.add_parser("send", help="send numbered datagrams at a fixed rate")
    sender.add_argument("--bind", required=True, help="source address")
    sender.add_argument("--to", required=True, help="ADDR:PORT")
    sender.add_argument("--rate", type=float, default=1000.0, help="datagrams per second")
    sender.add_argument("--seconds", type=float, required=True, help="at most this long")
    sender.add_argument("--stop-file", help="stop early once this file exists")
    receiver = sub.add_parser("recv", help="receive and report (JSON on stdout or --out)")
    receiver.add_argument("--bind", required=True, help="ADDR:PORT")
    receiver.add_argument("--seconds", type=float, required=True, help="longest wait")
    receiver.add_argument("--out", help="write the JSON report here")
    args = parser.parse_args(argv)
    if args.role == "send":
        count = send(args.bind, _address(args.to), args.rate, args.seconds, args.stop_file)
        print(json.dumps({"sent": count}))
        return 0
    report = receive(_address(args.bind), args.seconds)
    text = json.dumps(report)
    if args.out:
        with open(args.out, "w") as out:
            out.write(text + "\n")
    print(text)
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
