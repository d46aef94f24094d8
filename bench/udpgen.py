"""A UDP packet generator that saturates, and its counting receiver.

iperf3's UDP mode paces one ``send`` per datagram from one thread: at small packets it
measures itself, not the tunnel (issue 17). Here the sender hands the kernel up to 64
datagrams per ``sendmsg`` with UDP GSO (``UDP_SEGMENT``), paced per millisecond to the asked
rate, and the receiver counts with UDP GRO on (one read may hold many datagrams: their
count comes from the ``UDP_GRO`` control message). Both print one JSON line::

    python -m bench.udpgen send --dst 10.2.0.1 --src 10.1.0.1 --size 64 --pps 200000 --seconds 2
    -> {"sent": 400000, "seconds": 2.0, "send_errors": 0}
    python -m bench.udpgen receive --bind 10.2.0.1 --idle 0.5 --limit 30
    -> {"received": 399810, "seconds": 2.01}

``--size`` is the IP packet size (IPv4: UDP payload = size - 28). The receiver ends after
``--idle`` seconds without a datagram, once the first one came (or after ``--limit``).
"""

from __future__ import annotations

import argparse
import errno
import json
import select
import socket
import struct
import sys
import time

PORT = 5301
SOL_UDP = 17
UDP_SEGMENT = 103
UDP_GRO = 104
GSO_MAX_SEGMENTS = 64
GSO_MAX_BYTES = 65000
IPV4_UDP_HEADERS = 28
SO_RCVBUFFORCE = 33
BUFFER_BYTES = 8 * 1024 * 1024
_GRO_SIZE = struct.Struct("=i")


def send(dst: str, src: str | None, size: int, pps: float, seconds: float) -> dict[str, float]:
    payload = max(1, size - IPV4_UDP_HEADERS)
    batch = max(1, min(GSO_MAX_SEGMENTS, GSO_MAX_BYTES // payload))
    data = bytes(payload) * batch
    segment = [(SOL_UDP, UDP_SEGMENT, struct.pack("=H", payload))]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, BUFFER_BYTES)
    if src:
        sock.bind((src, 0))
    sock.connect((dst, PORT))
    sent = errors = 0
    started = time.perf_counter()
    end = started + seconds
    while True:
        now = time.perf_counter()
        if now >= end:
            break
        due = int((now - started) * pps) - sent
        if due <= 0:
            time.sleep(0.0005)  # pacing: about 1 ms of datagrams per burst at most
            continue
        count = min(due, batch)
        try:
            if count == 1:
                sock.send(data[:payload])
            else:
                sock.sendmsg([memoryview(data)[: count * payload]], segment)
            sent += count
        except OSError as exc:
            # ENOBUFS/EAGAIN: the queue is full, the datagrams are lost at the sender;
            # they count as sent (offered) and so as lost. ECONNREFUSED: an ICMP port
            # unreachable came back (the receiver gave up after its idle time while a loaded
            # machine stalled this sender): those datagrams are lost too, not a failed run.
            if exc.errno not in (errno.ENOBUFS, errno.EAGAIN, errno.ECONNREFUSED):
                raise
            errors += 1
            sent += count
    elapsed = time.perf_counter() - started
    sock.close()
    return {"sent": sent, "seconds": round(elapsed, 4), "send_errors": errors}


def receive(bind: str, idle: float, limit: float) -> dict[str, float]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, BUFFER_BYTES)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BUFFER_BYTES)
    sock.setsockopt(SOL_UDP, UDP_GRO, 1)
    sock.bind((bind, PORT))
    sock.setblocking(False)
    print(json.dumps({"listening": True}), flush=True)
    buffer = bytearray(65536)
    received = 0
    first = last = 0.0
    deadline = time.perf_counter() + limit
    space = socket.CMSG_SPACE(_GRO_SIZE.size)
    while time.perf_counter() < deadline:
        ready, _, _ = select.select([sock], [], [], idle)
        if not ready:
            if received:
                break
            continue
        while True:
            try:
                length, ancillary, _flags, _addr = sock.recvmsg_into([buffer], space)
            except BlockingIOError:
                break
            segment = length
            for level, kind, data in ancillary:
                if level == SOL_UDP and kind == UDP_GRO:
                    segment = _GRO_SIZE.unpack_from(data)[0]
            received += -(-length // segment) if segment else 1
        last = time.perf_counter()
        if not first:
            first = last
    return {"received": received, "seconds": round(last - first, 4)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    sender = sub.add_parser("send")
    sender.add_argument("--dst", required=True)
    sender.add_argument("--src")
    sender.add_argument("--size", type=int, default=1400)
    sender.add_argument("--pps", type=float, required=True)
    sender.add_argument("--seconds", type=float, default=2.0)
    receiver = sub.add_parser("receive")
    receiver.add_argument("--bind", required=True)
    receiver.add_argument("--idle", type=float, default=0.5)
    receiver.add_argument("--limit", type=float, default=60.0)
    args = parser.parse_args(argv)
    if args.mode == "send":
        result = send(args.dst, args.src, args.size, args.pps, args.seconds)
    else:
        result = receive(args.bind, args.idle, args.limit)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
