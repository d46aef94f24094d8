"""The kernel batching the benchmark measured (UDP GSO on send, UDP GRO on receive) keeps every
datagram intact and in order: checked through the real kernel on loopback, with the plain
one-datagram-per-call path as the reference.
"""

from __future__ import annotations

import os
import select
import socket

import pytest

from aioipsec.runtime.sockets import DrainingSocket


def _pair() -> tuple[socket.socket, socket.socket]:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.bind(("127.0.0.1", 0))
    return sender, receiver


def _receive_all(draining: DrainingSocket, expected: int) -> list[tuple[bytes, tuple]]:
    received: list[tuple[bytes, tuple]] = []
    draining._handler = lambda view, addr: received.append((bytes(view), addr))
    drain = draining._drain_gro if draining.gro else draining._drain
    for _ in range(50):
        if len(received) >= expected:
            break
        select.select([draining.sock], [], [], 0.1)
        drain()
    return received


def _datagrams(count: int, size: int, last: int) -> list[bytes]:
    sizes = [size] * (count - 1) + [last]
    return [bytes([index]) * 4 + os.urandom(length - 4) for index, length in enumerate(sizes)]


@pytest.mark.parametrize("gro", [True, False])
@pytest.mark.parametrize("gso", [True, False])
def test_segments_arrive_whole_and_in_order(gso: bool, gro: bool) -> None:
    sender_sock, receiver_sock = _pair()
    sender = DrainingSocket(sender_sock, lambda view, addr: None, "sender")
    receiver = DrainingSocket(receiver_sock, lambda view, addr: None, "receiver")
    try:
        sender.gso = gso and sender.gso
        if not gro and receiver.gro:
            receiver_sock.setsockopt(17, 104, 0)
            receiver.gro = False
        datagrams = _datagrams(20, 1400, 900)
        sender.send_segments(memoryview(b"".join(datagrams)), 1400, len(datagrams),
                             receiver_sock.getsockname())  # fmt: skip
        received = _receive_all(receiver, len(datagrams))
        assert [data for data, _ in received] == datagrams
        assert {addr for _, addr in received} == {sender_sock.getsockname()}
        assert sender.send_errors == 0
        assert receiver.datagrams_in == len(datagrams)
    finally:
        sender_sock.close()
        receiver_sock.close()


def test_single_datagram_and_interleaved_sizes() -> None:
    sender_sock, receiver_sock = _pair()
    sender = DrainingSocket(sender_sock, lambda view, addr: None, "sender")
    receiver = DrainingSocket(receiver_sock, lambda view, addr: None, "receiver")
    try:
        address = receiver_sock.getsockname()
        first = _datagrams(3, 200, 200)
        second = _datagrams(1, 1000, 1000)
        third = _datagrams(2, 64, 10)
        sender.send_segments(memoryview(b"".join(first)), 200, 3, address)
        sender.send_segments(memoryview(second[0]), 1000, 1, address)
        sender.send_segments(memoryview(b"".join(third)), 64, 2, address)
        received = _receive_all(receiver, 6)
        assert [data for data, _ in received] == first + second + third
    finally:
        sender_sock.close()
        receiver_sock.close()
