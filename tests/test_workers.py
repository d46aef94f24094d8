"""aioipsec.runtime.workers without processes: the sequence-number reservation that keeps
a restarted encrypt worker from reusing an AES-GCM nonce, and the socketpair framing;
aioipsec.runtime.steering's SPI layout and its BPF programs, run by the real kernel.
(The worker processes themselves: tests/hardening/test_workers.py.)"""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

import pytest

from aioipsec.netns import Lab
from aioipsec.runtime import steering
from aioipsec.runtime.sockets import DrainingSocket, open_udp_socket
from aioipsec.runtime.workers import (
    SEQUENCE_BLOCK,
    WORKERS_ENV,
    FrameReader,
    SequenceGuard,
    frame,
    restore_inbound,
    worker_count,
)
from esp.errors import EspDrop
from esp.events import Lifetime, SaExpired
from esp.sa import EspSa
from ikev2.enums import EncrId

KEY = bytes(range(36))  # AES-256-GCM key and salt
INNER = bytes.fromhex("4500001c0000400040010000") + bytes([10, 1, 0, 1, 10, 2, 0, 1]) + bytes(8)


def sealed_sequence(packet: bytes) -> int:
    return int.from_bytes(packet[4:8], "big")


def guarded(**extra: object) -> tuple[EspSa, EspSa, list[tuple[int, int]]]:
    out = EspSa(0x1234, "out", EncrId.ENCR_AES_GCM_16, KEY, **extra)  # type: ignore[arg-type]  # the keyword options of EspSa
    inbound = EspSa(0x1234, "in", EncrId.ENCR_AES_GCM_16, KEY)
    reserved: list[tuple[int, int]] = []
    SequenceGuard(out, lambda spi, limit: reserved.append((spi, limit)))
    return out, inbound, reserved


def test_every_sequence_number_is_reserved_before_it_is_sealed() -> None:
    out, inbound, reserved = guarded()
    buffer = bytearray(2048)
    length = out.encrypt_into(INNER, buffer)
    # The first packet reserved a block first; nothing is sealed beyond a reservation.
    assert reserved == [(0x1234, 1 + SEQUENCE_BLOCK)]
    assert sealed_sequence(buffer[:length]) == 1
    assert inbound.decrypt(bytes(buffer[:length])) == INNER
    # Just below the reservation: no new message...
    out.seq = SEQUENCE_BLOCK - 1
    out.encrypt_into(INNER, buffer)
    assert len(reserved) == 1 and out.seq == SEQUENCE_BLOCK
    # ...at it, a new block is reserved before the packet is sealed.
    length = out.encrypt_into(INNER, buffer)
    assert reserved[-1] == (0x1234, 1 + 2 * SEQUENCE_BLOCK)
    assert sealed_sequence(buffer[:length]) == 1 + SEQUENCE_BLOCK


def test_a_restart_starts_past_the_reservation() -> None:
    """What the daemon does for a new worker: the SA starts at the dead one's reservation
    (every number it may have used is below it)."""
    first, inbound, reserved = guarded()
    buffer = bytearray(2048)
    used = [sealed_sequence(buffer[: first.encrypt_into(INNER, buffer)]) for _ in range(5)]
    limit = reserved[-1][1]
    second = EspSa(0x1234, "out", EncrId.ENCR_AES_GCM_16, KEY)
    second.seq = limit - 1
    SequenceGuard(second, lambda spi, new: reserved.append((spi, new)))
    after = sealed_sequence(buffer[: second.encrypt_into(INNER, buffer)])
    assert after == limit and after > max(used)
    assert reserved[-1] == (0x1234, limit + SEQUENCE_BLOCK)
    assert inbound.decrypt(bytes(buffer[: second.encrypt_into(INNER, buffer)])) == INNER


def test_lifetimes_still_work_under_the_guard() -> None:
    out, _inbound, reserved = guarded(lifetime=Lifetime(soft_packets=3, hard_packets=5))
    buffer = bytearray(2048)
    for _ in range(5):
        out.encrypt_into(INNER, buffer)
    with pytest.raises(EspDrop):
        out.encrypt_into(INNER, buffer)
    kinds = [(e.hard, e.reason) for e in out.events if isinstance(e, SaExpired)]
    assert kinds == [(False, "packets"), (True, "packets")]
    # A recomputation of the limits (here after the expiry) never lifts the cap.
    assert out.seq_check <= reserved[-1][1]


def test_frames_survive_any_cut() -> None:
    messages = [("reserve", 7, 1 << 40), ("counters", {1: (2, 3, 0)}, {"held": 1}), ("x",)]
    stream = b"".join(frame(m) for m in messages)
    for cut in range(len(stream)):
        reader = FrameReader()
        got = reader.feed(stream[:cut]) + reader.feed(stream[cut:])
        assert got == messages


def test_worker_count_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(WORKERS_ENV, raising=False)
    assert worker_count(1) == 1 and worker_count(2) == 2
    monkeypatch.setenv(WORKERS_ENV, "2")
    assert worker_count(1) == 2
    monkeypatch.setenv(WORKERS_ENV, "4")
    with pytest.raises(ValueError, match="worker_steering = sa"):
        worker_count(1)
    assert worker_count(1, "sa") == 4
    monkeypatch.setenv(WORKERS_ENV, "65")
    with pytest.raises(ValueError, match=r"1 \(one process\) to 64"):
        worker_count(1, "sa")
    monkeypatch.setenv(WORKERS_ENV, "two")
    with pytest.raises(ValueError, match="AIOIPSEC_WORKERS"):
        worker_count(1)
    assert os.environ[WORKERS_ENV] == "two"


def test_spis_carry_the_owner_round_robin() -> None:
    hook = steering.SpiSteering(3).hook
    spis = [int.from_bytes(hook(bytes.fromhex("ffabcdef")), "big") for _ in range(6)]
    assert [steering.owner_of(spi, 3) for spi in spis] == [0, 1, 2, 0, 1, 2]
    assert all(spi & 0xFFFFFF == 0xABCDEF for spi in spis)  # the rest stays random
    with pytest.raises(ValueError):
        steering.SpiSteering(256)
    assert steering.steering_mode("direction") == "direction"
    with pytest.raises(ValueError, match="worker_steering"):
        steering.steering_mode("flows")


def test_a_restarted_worker_does_not_accept_what_its_predecessor_reported() -> None:
    sa = EspSa(0x1234, "in", EncrId.ENCR_AES_GCM_16, KEY)
    restore_inbound(sa, 500, 64000, 500)
    assert (sa.packets_in, sa.bytes_in) == (500, 64000)
    replay = sa.replay
    assert replay is not None
    assert not any(replay.check(seq) for seq in range(1, 501))  # all taken or left behind
    assert replay.check(501)


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _received(sock: socket.socket) -> list[str]:
    sock.setblocking(False)
    got = []
    while True:
        try:
            got.append(sock.recv(64)[:4].hex())
        except BlockingIOError:
            return got


def test_the_reuseport_program_steers_by_spi() -> None:
    """The daemon's port-4500 socket, its twin and three workers' sockets in one group:
    IKE, a keepalive and an SPI of no worker reach the daemon, ESP its owner."""
    port = _free_udp_port()
    daemon = open_udp_socket("127.0.0.1", port)
    twin = DrainingSocket(daemon, lambda data, remote: None, "d").open_no_df()
    workers = steering.open_worker_sockets(3, [-1, -1, -1], [(daemon, True)], [])
    try:
        datagrams = [b"\0\0\0\0ike", b"\xff", bytes.fromhex("0102030400000001"),
                     bytes.fromhex("0002030400000001"), bytes.fromhex("0202030400000001"),
                     bytes.fromhex("0702030400000001")]  # fmt: skip
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            for datagram in datagrams:
                sender.sendto(datagram, ("127.0.0.1", port))
        time.sleep(0.05)  # loopback delivers within the send; a margin for a loaded host
        assert _received(daemon) == ["00000000", "ff", "07020304"]
        assert _received(twin.sock) == []
        assert [_received(w.udp[0]) for w in workers] == [["00020304"], ["01020304"],
                                                          ["02020304"]]  # fmt: skip
    finally:
        steering.close_worker_sockets(workers)
        twin.sock.close()
        daemon.close()


RAW_SCRIPT = """
import socket, time
from aioipsec.runtime import steering
daemon = socket.socket(socket.AF_INET, socket.SOCK_RAW, 50)
steering.restrict_raw(daemon, 3)
workers = [steering.filtered_raw_socket(socket.AF_INET, 3, i) for i in range(3)]
with socket.socket(socket.AF_INET, socket.SOCK_RAW, 50) as sender:
    for spi in ("01020304", "00020304", "02020304", "07020304"):
        sender.sendto(bytes.fromhex(spi + "00000001") + bytes(16), ("127.0.0.1", 0))
time.sleep(0.05)
def got(sock):
    sock.setblocking(False)
    out = []
    while True:
        try:
            data = sock.recv(256)
        except BlockingIOError:
            return out
        out.append(data[(data[0] & 15) * 4:][:4].hex())
print([got(daemon)] + [got(w) for w in workers])
"""


@pytest.mark.netns
def test_raw_esp_filters_steer_by_spi() -> None:
    """Every raw ESP socket gets a copy of every packet: each worker's filter keeps its
    SPIs, the daemon's those of no worker (in a namespace of its own: its loopback)."""
    if os.geteuid() != 0:
        pytest.skip("raw sockets and network namespaces need root")
    with Lab("rawf") as lab:
        namespace = lab.namespace("steer")
        namespace.link_up("lo")
        env_path = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        result = namespace.run(
            "env", f"PYTHONPATH={env_path}", sys.executable, "-c", RAW_SCRIPT, check=False
        )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str([["07020304"], ["00020304"], ["01020304"], ["02020304"]]), (
        result.stdout
    )


def test_the_configuration_refuses_more_workers_than_the_direction_split_has(
    tmp_path: Path,
) -> None:
    from aioipsec.config import ConfigError, load_configuration

    path = tmp_path / "w.toml"
    path.write_text("[daemon]\nworkers = 3\n")
    path.chmod(0o600)
    with pytest.raises(ConfigError, match="worker_steering") as info:
        load_configuration(path)
    assert "sa" in str(info.value.hint)
    path.write_text('[daemon]\nworkers = 3\nworker_steering = "sa"\n')
    settings = load_configuration(path).daemon
    assert (settings.workers, settings.worker_steering) == (3, "sa")
