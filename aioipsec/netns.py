"""Network namespaces for tests, the demo and the interop harness (Linux, root).

One :class:`Lab` owns everything it creates and removes it on exit, also when the body raises
or is interrupted::

    with Lab("t") as lab:
        left, right = lab.namespace("left"), lab.namespace("right")
        lab.veth(left, "10.0.0.1/24", right, "10.0.0.2/24")
        left.run("ping", "-c1", "10.0.0.2")
        proc = lab.start(right, ["iperf3", "-s"], log="/tmp/x/iperf.log")
        with left.entered():           # this thread now lives in 'left' (TUN devices, sockets)
            ...

Names are ``<prefix>-<pid>-<role>`` so that concurrent runs never collide, and so that
:func:`cleanup_leftovers` can remove what a killed run left behind (its pid is gone) without
touching the namespaces of runs that are still alive.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import shlex
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal, Self

DEFAULT_PREFIX = "aioipsec"
NETNS_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(None, use_errno=True)


class NetnsError(RuntimeError):
    """A namespace operation failed; the message carries the command and its stderr."""


def _run(
    argv: Sequence[str],
    *,
    check: bool = True,
    timeout: float = 30.0,
    input_text: str | None = None,
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        list(argv), capture_output=True, text=True, timeout=timeout, input=input_text, check=False
    )
    if check and result.returncode != 0:
        raise NetnsError(
            f"{shlex.join(argv)} exited {result.returncode}: "
            f"{(result.stderr or result.stdout).strip()}"
        )
    return result


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def list_namespaces() -> list[str]:
    result = _run(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in result.stdout.splitlines() if line.strip()]


def cleanup_leftovers(prefix: str = DEFAULT_PREFIX) -> list[str]:
    """Delete ``<prefix>-<pid>-*`` namespaces whose creating process is gone; returns them.

    Processes still running inside such a namespace are killed first (a killed test run may
    leave a charon or daemon behind). Namespaces of live runs are left alone.
    """
    pattern = re.compile(rf"^{re.escape(prefix)}-(\d+)-")
    removed = []
    for name in list_namespaces():
        match = pattern.match(name)
        if not match or _pid_alive(int(match.group(1))):
            continue
        _kill_namespace_processes(name)
        _run(["ip", "netns", "delete", name], check=False)
        removed.append(name)
    return removed


def _kill_namespace_processes(name: str) -> None:
    result = _run(["ip", "netns", "pids", name], check=False)
    for token in result.stdout.split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(token), signal.SIGKILL)


@dataclass
class Namespace:
    """A named network namespace (``/run/netns/NAME``)."""

    name: str

    def exec_argv(self, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def run(
        self,
        *argv: str,
        check: bool = True,
        timeout: float = 30.0,
        input_text: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ARGV inside the namespace and wait for it (stdout/stderr captured as text)."""
        return _run(self.exec_argv(argv), check=check, timeout=timeout, input_text=input_text)

    def sh(self, script: str, *, check: bool = True, timeout: float = 30.0) -> str:
        """Run a shell snippet inside the namespace; returns its stdout."""
        return self.run("sh", "-c", script, check=check, timeout=timeout).stdout

    def ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _run(["ip", "-n", self.name, *args], check=check)

    def add_address(self, device: str, cidr: str) -> None:
        self.ip("address", "add", cidr, "dev", device)

    def link_up(self, device: str = "lo") -> None:
        self.ip("link", "set", device, "up")

    def enable_forwarding(self) -> None:
        self.run("sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        self.run("sysctl", "-q", "-w", "net.ipv6.conf.all.forwarding=1")

    def wait_reachable(self, address: str, timeout: float = 5.0) -> bool:
        """Ping ADDRESS until it answers (True) or TIMEOUT passes. Right after a veth comes up,
        IPv6 neighbour discovery can leave the first packets unanswered for about a second;
        waiting here keeps that second out of the measurements that follow."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = self.run("ping", "-c", "1", "-W", "1", address, check=False, timeout=5)
            if result.returncode == 0:
                return True
        return False

    def nft(self, script: str) -> None:
        """Load an nftables script (``nft -f -``) inside the namespace."""
        self.run("nft", "-f", "-", input_text=script)

    @contextlib.contextmanager
    def entered(self) -> Iterator[Self]:
        """Move the calling thread into this namespace for the ``with`` body.

        Sockets and TUN devices created inside belong to this namespace for their whole life;
        child processes started inside (``subprocess``) start in it too.
        """
        with open("/proc/thread-self/ns/net", "rb") as original:
            with open(NETNS_DIR / self.name, "rb") as target:
                _setns(target.fileno())
            try:
                yield self
            finally:
                _setns(original.fileno())

    def delete(self) -> None:
        _kill_namespace_processes(self.name)
        _run(["ip", "netns", "delete", self.name], check=False)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@dataclass
class BackgroundProcess:
    """A process started in a namespace; its stdout and stderr go to ``log_path``."""

    argv: list[str]
    log_path: Path
    popen: subprocess.Popen[bytes]
    _log_file: IO[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for_log(self, needle: str | re.Pattern[str], timeout: float = 10.0) -> bool:
        """Poll the log until NEEDLE appears (True) or the process dies / time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log_text()
            if needle.search(text) if isinstance(needle, re.Pattern) else needle in text:
                return True
            if not self.running():
                return False
            time.sleep(0.02)
        return False

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 5.0) -> int | None:
        """Signal the process group we started, escalate to SIGKILL, reap; returns the code."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        return self.popen.returncode


def start_process(
    namespace: Namespace | None,
    argv: Sequence[str],
    log_path: str | os.PathLike[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> BackgroundProcess:
    """Start ARGV in NAMESPACE (None: here) in its own process group, logging to LOG_PATH."""
    log = Path(log_path)
    log.parent.mkdir(parents=True, exist_ok=True)
    log_file = open(log, "ab")  # noqa: SIM115 - closed by BackgroundProcess.stop
    full_argv = namespace.exec_argv(argv) if namespace is not None else list(argv)
    environment = dict(os.environ)
    if env:
        environment.update(env)
    popen = subprocess.Popen(
        full_argv,
        stdin=subprocess.DEVNULL,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        env=environment,
        cwd=cwd,
        start_new_session=True,
    )
    return BackgroundProcess(list(full_argv), log, popen, log_file)


class Capture:
    """A tcpdump capture on one interface of a namespace, written as pcap to ``path``."""

    def __init__(
        self,
        lab: Lab,
        namespace: Namespace,
        interface: str,
        path: str | os.PathLike[str],
        bpf_filter: str = "",
    ) -> None:
        self.path = Path(path)
        argv = ["tcpdump", "-n", "-U", "--immediate-mode", "-i", interface, "-w", str(self.path)]
        if bpf_filter:
            argv += shlex.split(bpf_filter)
        self.process = lab.start(namespace, argv, log=self.path.with_suffix(".tcpdump.log"))
        if not self.process.wait_for_log("listening on", timeout=10):
            self.process.stop()
            raise NetnsError(f"tcpdump did not start: {self.process.log_text().strip()}")

    def packets_written(self) -> int:
        """Packets tcpdump has written so far (pcap records, read from the file's headers)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return 0
        count, offset = 0, _PCAP_GLOBAL_HEADER
        while offset + _PCAP_RECORD_HEADER <= len(data):
            captured = int.from_bytes(data[offset + 8 : offset + 12], _pcap_byte_order(data))
            offset += _PCAP_RECORD_HEADER + captured
            count += 1 if offset <= len(data) else 0
        return count

    def wait_for_packets(self, count: int, timeout: float = 5.0) -> int:
        """Wait until ``count`` packets are in the file (or ``timeout``); the number seen.

        A packet on the wire reaches the file only when tcpdump is next scheduled; on a
        loaded machine that can be after the traffic's command has returned, and SIGINT
        ends tcpdump without reading what is still in its socket."""
        deadline = time.monotonic() + timeout
        seen = self.packets_written()
        while seen < count and time.monotonic() < deadline:
            time.sleep(0.02)
            seen = self.packets_written()
        return seen

    def stop(self) -> Path:
        # SIGINT makes tcpdump flush and write its statistics.
        self.process.stop(signal.SIGINT)
        return self.path


_PCAP_GLOBAL_HEADER = 24
_PCAP_RECORD_HEADER = 16


def _pcap_byte_order(data: bytes) -> Literal["little", "big"]:
    """The pcap file's byte order, from its magic number (tcpdump writes the host's)."""
    return "little" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else "big"


class Lab:
    """Namespaces, veth pairs, processes and captures with guaranteed cleanup.

    ``Lab(tag)`` names its namespaces ``aioipsec-<pid>-<tag><role>``; entering the lab first
    removes leftovers of dead runs (:func:`cleanup_leftovers`).
    """

    def __init__(self, tag: str = "", prefix: str = DEFAULT_PREFIX) -> None:
        self.prefix = prefix
        self.tag = tag
        self.namespaces: list[Namespace] = []
        self.processes: list[BackgroundProcess] = []
        self._closed = False

    def __enter__(self) -> Self:
        cleanup_leftovers(self.prefix)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def namespace(self, role: str) -> Namespace:
        name = f"{self.prefix}-{os.getpid()}-{self.tag}{role}"
        if len(name.encode()) > 200:
            raise NetnsError(f"namespace name too long: {name}")
        if (NETNS_DIR / name).exists():
            Namespace(name).delete()
        _run(["ip", "netns", "add", name])
        namespace = Namespace(name)
        self.namespaces.append(namespace)
        namespace.link_up("lo")
        return namespace

    def veth(
        self,
        left: Namespace,
        left_cidr: str | Sequence[str] | None,
        right: Namespace,
        right_cidr: str | Sequence[str] | None,
        *,
        left_name: str | None = None,
        right_name: str | None = None,
        mtu: int | None = None,
    ) -> tuple[str, str]:
        """Join LEFT and RIGHT with a veth pair, set addresses, bring both ends up.

        The default interface names are ``<peer role>`` shortened, e.g. ``to-right``; they only
        need to be unique inside each namespace. Returns (left name, right name).
        """
        left_name = left_name or _short(f"v-{_role(right)}")
        right_name = right_name or _short(f"v-{_role(left)}")
        argv = [
            "ip",
            "link",
            "add",
            left_name,
            "netns",
            left.name,
            "type",
            "veth",
            "peer",
            "name",
            right_name,
            "netns",
            right.name,
        ]
        _run(argv)
        ends = ((left, left_name, left_cidr), (right, right_name, right_cidr))
        for namespace, device, cidrs in ends:
            for cidr in [cidrs] if isinstance(cidrs, str) else (cidrs or []):
                # IPv6 DAD would delay the address by ~1 s; the lab has no duplicates.
                extra = ["nodad"] if ":" in cidr else []
                namespace.ip("address", "add", cidr, "dev", device, *extra)
            if mtu is not None:
                namespace.ip("link", "set", device, "mtu", str(mtu))
            namespace.link_up(device)
        return left_name, right_name

    def start(
        self,
        namespace: Namespace | None,
        argv: Sequence[str],
        *,
        log: str | os.PathLike[str],
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
    ) -> BackgroundProcess:
        process = start_process(namespace, argv, log, env=env, cwd=cwd)
        self.processes.append(process)
        return process

    def capture(
        self,
        namespace: Namespace,
        interface: str,
        path: str | os.PathLike[str],
        bpf_filter: str = "",
    ) -> Capture:
        return Capture(self, namespace, interface, path, bpf_filter)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        errors = []
        for process in reversed(self.processes):
            try:
                process.stop()
            except Exception as exc:  # keep cleaning up; report at the end
                errors.append(exc)
        for namespace in reversed(self.namespaces):
            namespace.delete()
        if errors:
            raise NetnsError(f"cleanup: {errors}")


def _role(namespace: Namespace) -> str:
    return namespace.name.rsplit("-", 1)[-1]


def _short(name: str) -> str:
    return name[:15]  # IFNAMSIZ - 1


# --- nftables helpers -----------------------------------------------------------------------


def add_masquerade(
    namespace: Namespace,
    out_interface: str,
    table: str = "aioipsec_nat",
    *,
    random_ports: bool = False,
) -> None:
    """Source NAT (masquerade) of everything leaving OUT_INTERFACE: a NAT box in the middle.

    ``random_ports``: every new mapping gets a random source port (``masquerade random``), as
    carrier-grade NATs do; together with :func:`set_udp_mapping_timeout` a pause in the traffic
    then moves the peer to a new public port (a NAT rebinding).
    """
    namespace.enable_forwarding()
    flags = " random" if random_ports else ""
    namespace.nft(
        f"""table ip {table} {{
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        oifname "{out_interface}" masquerade{flags}
    }}
}}
"""
    )


def set_udp_mapping_timeout(namespace: Namespace, seconds: int) -> None:
    """Make the namespace's conntrack forget idle UDP flows (and so NAT mappings) after SECONDS
    (both the one-way and the "stream" timeout; the defaults are 30 s and 120 s)."""
    for name in ("nf_conntrack_udp_timeout", "nf_conntrack_udp_timeout_stream"):
        namespace.run("sysctl", "-q", "-w", f"net.netfilter.{name}={seconds}")


LOSS_MARK = 0x5EC


def add_random_loss(
    namespace: Namespace,
    percent: int,
    *,
    udp_ports: Sequence[int] = (500, 4500),
    hook: str = "forward",
    table: str = "aioipsec_loss",
) -> None:
    """Drop PERCENT % of UDP packets to or from UDP_PORTS at HOOK (forward/input/output).

    ``numgen random mod 100 < N`` draws per packet (there is no netem on these kernels).
    """
    if not 0 <= percent <= 100:
        raise ValueError("percent must be 0..100")
    if hook not in {"forward", "input", "output", "prerouting", "postrouting"}:
        raise ValueError(f"unsupported hook {hook}")
    ports = ", ".join(str(p) for p in udp_ports)
    # numgen draws 0..99; nft refuses "< 100", so total loss drops without a draw.
    draw = "" if percent == 100 else f"numgen random mod 100 < {percent} "
    # One draw per packet, whichever side carries the port: the first two rules only mark.
    namespace.nft(
        f"""table inet {table} {{
    chain {hook} {{
        type filter hook {hook} priority filter; policy accept;
        udp dport {{ {ports} }} meta mark set {LOSS_MARK:#x}
        udp sport {{ {ports} }} meta mark set {LOSS_MARK:#x}
        meta mark {LOSS_MARK:#x} {draw}counter drop
    }}
}}
"""
    )


def nft_counters(namespace: Namespace, table: str, family: str = "inet") -> list[int]:
    """Packet counts of the ``counter`` rules of TABLE, in rule order."""
    text = namespace.run("nft", "list", "table", family, table).stdout
    return [int(m) for m in re.findall(r"counter packets (\d+)", text)]


def ensure_root() -> None:
    if os.geteuid() != 0:
        raise PermissionError(errno.EPERM, "network namespaces need root")
