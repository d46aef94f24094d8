"""``aioipsec doctor``: the prerequisites to check before anything else.

The checks the field's guides (strongSwan's, libreswan's, the distributions' VPN pages)
list first, each answered with OK / WARN / FAIL and, when not OK, what to do:

* ``privileges``: root or CAP_NET_ADMIN (TUN device, routes, ports below 1024);
* ``tun``: ``/dev/net/tun`` exists and opens (the data plane is a TUN device);
* ``forwarding``: ``net.ipv4.ip_forward`` / IPv6 forwarding, needed when a connection
  protects subnets behind this host (a gateway), not for host-to-host tunnels;
* ``aes-ni``: AES instructions in the CPU flags (AES-GCM speed);
* ``udp-500`` / ``udp-4500``: the IKE and NAT-T ports are free (another IKE daemon, e.g.
  charon or pluto, holding them is the classic start-up failure);
* ``clock``: the kernel clock is synchronised (certificate validity, RFC 5280 sec. 4.1.2.5);
* ``mtu``: for each configured peer, the path MTU minus ESP overhead against the TUN MTU
  the daemon starts with;
* ``firewall``: nftables / iptables rules that would drop UDP 500/4500 or ESP;
* ``kernel-ipsec``: kernel xfrm policies that would take the traffic before our TUN;
* ``fail-closed``: the daemon's fail-closed rules (nftables table ``inet aioipsec``): held
  by the running daemon, or left by one that was killed or stopped (traffic to its remote
  selectors is dropped until a daemon takes them over or ``aioipsec cleanup`` runs).

Read-only: the port checks bind and close a socket, nothing else is changed. Runs on a
fresh machine without a configuration; ``-c`` / ``--swanctl-conf`` add the checks that
depend on the connections. Exit status 1 if any check FAILs.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import errno
import ipaddress
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

OK, WARN, FAIL = "OK", "WARN", "FAIL"
CAP_NET_ADMIN = 12
CAP_NET_BIND_SERVICE = 10
TUN_MTU_AT_START = 1400  # aioipsec.runtime.datapath.DEFAULT_TUN_MTU (strongSwan's default)
TIME_ERROR = 5  # adjtimex(2): "the clock is not synchronized"


@dataclass
class Check:
    name: str
    status: str  # OK / WARN / FAIL
    detail: str
    fix: str = ""


def _run(command: list[str], timeout: float = 5.0) -> subprocess.CompletedProcess[str] | None:
    if shutil.which(command[0]) is None:
        return None
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None


# ----------------------------------------------------------------------------- checks


def effective_capabilities(status_path: str = "/proc/self/status") -> int | None:
    try:
        for line in Path(status_path).read_text().splitlines():
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    except (OSError, ValueError):
        pass
    return None


def check_privileges() -> Check:
    caps = effective_capabilities()
    if os.geteuid() == 0 and (caps is None or caps & (1 << CAP_NET_ADMIN)):
        return Check("privileges", OK, "running as root")
    if caps is not None and caps & (1 << CAP_NET_ADMIN):
        detail = "not root, but CAP_NET_ADMIN is effective"
        if not caps & (1 << CAP_NET_BIND_SERVICE):
            return Check(
                "privileges",
                WARN,
                detail + "; CAP_NET_BIND_SERVICE is missing",
                "ports 500/4500 need CAP_NET_BIND_SERVICE too: "
                "setcap cap_net_admin,cap_net_bind_service+ep, or run as root",
            )
        return Check("privileges", OK, detail)
    return Check(
        "privileges",
        FAIL,
        f"uid {os.geteuid()} without CAP_NET_ADMIN",
        "run as root (sudo aioipsec daemon ...) or grant CAP_NET_ADMIN and "
        "CAP_NET_BIND_SERVICE (systemd: AmbientCapabilities=)",
    )


def check_tun(path: str = "/dev/net/tun") -> Check:
    if not os.path.exists(path):
        return Check(
            "tun",
            FAIL,
            f"{path} does not exist",
            "modprobe tun (and add 'tun' to /etc/modules-load.d/); in a container "
            "pass the device: --device /dev/net/tun",
        )
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError as error:
        fix = "run as root or with CAP_NET_ADMIN"
        if error.errno == errno.ENODEV:
            fix = "the tun module is not loaded: modprobe tun"
        return Check("tun", FAIL, f"{path}: {error.strerror}", fix)
    os.close(fd)
    return Check("tun", OK, f"{path} opens read/write")


def _sysctl(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def protects_subnets(configuration: Any) -> list[str]:
    """Children whose local traffic selectors are more than this host (gateway setups)."""
    found = []
    for connection in configuration.connections.values():
        for child in connection.children.values():
            for ts in child.local_ts:
                text = ts.split("[", 1)[0]
                if text in ("dynamic", "") or text.startswith("%"):
                    continue
                try:
                    network = ipaddress.ip_network(text, strict=False)
                except ValueError:
                    found.append(f"{connection.name}/{child.name} ({ts})")
                    continue
                if network.num_addresses > 1:
                    found.append(f"{connection.name}/{child.name} ({ts})")
    return found


def check_forwarding(configuration: Any | None) -> Check:
    ipv4 = _sysctl("/proc/sys/net/ipv4/ip_forward")
    ipv6 = _sysctl("/proc/sys/net/ipv6/conf/all/forwarding")
    state = f"net.ipv4.ip_forward={ipv4}, net.ipv6.conf.all.forwarding={ipv6}"
    if ipv4 == "1" and ipv6 in ("1", None):
        return Check("forwarding", OK, state)
    gateway = protects_subnets(configuration) if configuration is not None else []
    fix = (
        "sysctl -w net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 (persist in /etc/sysctl.d/)"
    )
    if gateway:
        return Check(
            "forwarding",
            FAIL if ipv4 != "1" else WARN,
            f"{state}; subnets protected by {', '.join(gateway)}",
            fix,
        )
    if configuration is None:
        return Check(
            "forwarding",
            WARN,
            f"{state}: fine for host-to-host tunnels, not for a gateway "
            "(give -c to check your connections)",
            fix,
        )
    return Check("forwarding", OK, f"{state}; no connection protects a subnet")


def check_aes_ni(cpuinfo: str = "/proc/cpuinfo") -> Check:
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return Check("aes-ni", WARN, f"{cpuinfo} not readable", "")
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    if "aes" in flags:
        return Check("aes-ni", OK, "AES instructions available (AES-GCM runs in hardware)")
    return Check(
        "aes-ni",
        WARN,
        "no 'aes' CPU flag: AES-GCM/CCM run in software (slow)",
        "prefer chacha20poly1305 in ike/esp proposals on this machine",
    )


_SS_USER = re.compile(r'\("(?P<name>[^"]*)",pid=(?P<pid>\d+)')


def port_holders(port: int) -> list[tuple[str, int]]:
    """The processes (name, pid) holding UDP ``port``, as ``ss -lunp`` names them (empty
    when ss is missing or shows no owner, e.g. without root)."""
    out = _run(["ss", "-H", "-lunp", f"sport = :{port}"])
    if out is None:
        return []
    holders: list[tuple[str, int]] = []
    for match in _SS_USER.finditer(out.stdout):
        holder = (match["name"], int(match["pid"]))
        if holder not in holders:
            holders.append(holder)
    return holders


def is_aioipsec_daemon(pid: int) -> bool:
    """Whether process ``pid`` is an aioipsec daemon (``aioipsec daemon``, ``python -m
    aioipsec daemon`` or ``python -m aioipsec.daemon``) or a daemon's encrypt worker
    (``python -m aioipsec.runtime.workers``, which holds the daemon's sockets), from its
    command line."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    words = [Path(a.decode(errors="replace")).name for a in argv if a]
    if "aioipsec.daemon" in words or "aioipsec.runtime.workers" in words:
        return True
    return any(w in ("aioipsec", "aioipsec.__main__") for w in words) and "daemon" in words


def describe_port_holders(port: int) -> str:
    """' (held by charon pid 123)', or '' when the holder is unknown: for error messages."""
    holders = port_holders(port)
    if not holders:
        return ""
    names = ", ".join(
        f"{'aioipsec daemon' if is_aioipsec_daemon(pid) else name} pid {pid}"
        for name, pid in holders
    )
    return f" (held by {names})"


def check_udp_port(port: int) -> Check:
    name = f"udp-{port}"
    problems = []
    for family, address in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        try:
            sock = socket.socket(family, socket.SOCK_DGRAM)
        except OSError:
            continue  # no IPv6 on this host: nothing to collide with
        try:
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((address, port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                holders = port_holders(port)
                ours = [pid for _, pid in holders if is_aioipsec_daemon(pid)]
                if holders and len(ours) == len(holders):
                    # Our own running daemon: the port is used as it should be.
                    pids = ", ".join(str(pid) for pid in ours)
                    return Check(name, OK, f"UDP port {port} is held by the aioipsec daemon "
                                 f"(pid {pids})")  # fmt: skip
                return Check(
                    name,
                    FAIL,
                    f"UDP {address} port {port} is in use{describe_port_holders(port)}",
                    "stop the other IKE daemon (systemctl stop strongswan / ipsec / "
                    "charon-systemd) or set ike_port / nat_t_port in [daemon]",
                )
            problems.append(f"{address}: {error.strerror}")
        finally:
            sock.close()
    if problems:
        return Check(
            name,
            WARN,
            "cannot test the bind: " + "; ".join(problems),
            "run doctor as root to check the ports",
        )
    return Check(name, OK, f"UDP port {port} is free (IPv4 and IPv6)")


def clock_state() -> int | None:
    """adjtimex(2) with modes 0 (read only): the clock state, or None if unavailable."""
    library = ctypes.util.find_library("c")
    if library is None:
        return None
    try:
        libc = ctypes.CDLL(library, use_errno=True)
        buffer = ctypes.create_string_buffer(512)  # struct timex is ~208 octets; modes = 0
        return int(libc.adjtimex(buffer))
    except (OSError, AttributeError):
        return None


def check_clock() -> Check:
    state = clock_state()
    if state is None:
        return Check("clock", WARN, "adjtimex(2) not available", "check NTP by hand")
    if state == TIME_ERROR:
        return Check(
            "clock",
            WARN,
            "the kernel says the clock is not synchronised (adjtimex TIME_ERROR)",
            "enable NTP (systemctl enable --now systemd-timesyncd or chrony): "
            "certificates are checked against this clock; a drift of minutes "
            "makes fresh certificates 'not yet valid'",
        )
    return Check("clock", OK, f"the kernel clock is synchronised (adjtimex state {state})")


def route_mtu(host: str) -> tuple[int | None, str]:
    """(MTU towards HOST, device) from ``ip route get``; (None, reason) without a route."""
    out = _run(["ip", "-j", "route", "get", host])
    if out is None:
        return None, "the ip command is missing"
    if out.returncode != 0:
        return None, out.stderr.strip() or "no route"
    try:
        info = json.loads(out.stdout)[0]
        for metric in info.get("metrics", []):
            if isinstance(metric, dict) and "mtu" in metric:
                return int(metric["mtu"]), info.get("dev", "?")
        device = info["dev"]
        # ip(8) rather than /sys: /sys shows the namespace it was mounted in
        link = _run(["ip", "-j", "link", "show", "dev", device])
        if link is None or link.returncode != 0:
            return None, f"cannot read the MTU of {device}"
        return int(json.loads(link.stdout)[0]["mtu"]), device
    except (ValueError, KeyError, IndexError, OSError) as error:
        return None, f"cannot read the route: {error}"


def check_mtu(configuration: Any | None) -> Check:
    from ikev2.enums import EncrId, IntegId, ProtocolId, TransformType
    from ikev2.proposals import parse_proposals
    from tun.mtu import esp_sizes, tunnel_mtu

    if configuration is None:
        return Check("mtu", OK, "no configuration given: nothing to compare (give -c)")
    findings, worst = [], OK
    for connection in configuration.connections.values():
        for remote in connection.remote_addrs:
            try:
                ipaddress.ip_address(remote)
            except ValueError:
                continue  # %any, ranges and names: no single path to look at
            outer, device = route_mtu(remote)
            if outer is None:
                findings.append(f"{connection.name}: no route to {remote} ({device})")
                worst = WARN
                continue
            for child in connection.children.values():
                try:
                    proposal = parse_proposals(child.esp_proposals, ProtocolId.ESP)[0]
                    encr = next(t for t in proposal.transforms if t.type == TransformType.ENCR)
                    integ = next(
                        (t.id for t in proposal.transforms if t.type == TransformType.INTEG),
                        IntegId.NONE,
                    )
                    sizes = esp_sizes(EncrId(encr.id), integ)
                except (ValueError, StopIteration):
                    continue
                inner = tunnel_mtu(outer, sizes, outer_ipv6=":" in remote, udp_encap=True)
                line = (
                    f"{connection.name}/{child.name}: {device} MTU {outer} -> "
                    f"{inner} octets of inner packet with UDP-encapsulated ESP"
                )
                if inner < 1280 and ":" in remote:
                    worst = FAIL
                    line += " (below IPv6's minimum 1280)"
                elif inner < TUN_MTU_AT_START:
                    worst = WARN if worst == OK else worst
                    line += f" (below the TUN MTU {TUN_MTU_AT_START} used before an SA exists)"
                findings.append(line)
    if not findings:
        return Check("mtu", OK, "no connection with a literal remote address to check")
    fix = (
        ""
        if worst == OK
        else "lower the TUN MTU or clamp TCP MSS (nft ... tcp option maxseg size set rt mtu); "
        "fragmentation = yes lets IKE messages through (RFC 7383)"
    )
    return Check("mtu", worst, "; ".join(findings), fix)


_IKE_PORTS = {500, 4500}


def nft_problems(ruleset: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(drops, policies): rules that drop/reject UDP 500/4500 or ESP, and input chains
    with policy drop that accept none of them. Heuristic over ``nft -j list ruleset``."""
    drops: list[str] = []
    chains: dict[tuple[str, str, str], dict[str, Any]] = {}
    accepts: dict[tuple[str, str, str], set[str]] = {}
    for item in ruleset.get("nftables", []):
        if "chain" in item:
            chain = item["chain"]
            chains[(chain.get("family"), chain.get("table"), chain.get("name"))] = chain
        if "rule" not in item:
            continue
        rule = item["rule"]
        key = (rule.get("family"), rule.get("table"), rule.get("chain"))
        matches: set[str] = set()
        verdict = None
        for expression in rule.get("expr", []):
            if "match" in expression:
                match = expression["match"]
                left, right = match.get("left", {}), match.get("right")
                payload = left.get("payload", {}) if isinstance(left, dict) else {}
                meta = left.get("meta", {}) if isinstance(left, dict) else {}
                values = right.get("set", [right]) if isinstance(right, dict) else [right]
                if payload.get("field") == "dport":
                    matches |= {f"udp/{v}" for v in values if v in _IKE_PORTS}
                protocol_match = meta.get("key") == "l4proto" or payload.get("field") == "protocol"
                if protocol_match and ("esp" in values or 50 in values):
                    matches.add("esp")
            for word in ("drop", "reject", "accept"):
                if word in expression:
                    verdict = word
        where = f"{key[0]} {key[1]} {key[2]}"
        if matches and verdict in ("drop", "reject"):
            drops.append(f"{where}: {verdict} {', '.join(sorted(matches))}")
        if matches and verdict == "accept":
            accepts.setdefault(key, set()).update(matches)
    policies = []
    for key, chain in chains.items():
        if chain.get("hook") == "input" and chain.get("policy") == "drop":
            missing = {"udp/500", "udp/4500", "esp"} - accepts.get(key, set())
            if missing:
                policies.append(
                    f"{key[0]} {key[1]} {key[2]} (policy drop; not accepted: "
                    f"{', '.join(sorted(missing))})"
                )
    return drops, policies


def iptables_problems(saved: str) -> list[str]:
    """``-A ... -j DROP/REJECT`` lines of iptables-save that match UDP 500/4500 or ESP."""
    found = []
    for line in saved.splitlines():
        if not line.startswith("-A") or not (" -j DROP" in line or " -j REJECT" in line):
            continue
        words = line.split()
        ports = {words[i + 1] for i, w in enumerate(words[:-1]) if w in ("--dport", "--dports")}
        hit = any(
            p in ("500", "4500") or "500" in p.split(",") or "4500" in p.split(",") for p in ports
        )
        if hit or " -p esp" in line or " -p 50" in line:
            found.append(line)
    return found


def check_firewall() -> Check:
    findings: list[str] = []
    failed = False
    checked = []
    nft = _run(["nft", "-j", "list", "ruleset"])
    if nft is not None and nft.returncode == 0:
        checked.append("nftables")
        try:
            drops, policies = nft_problems(json.loads(nft.stdout or "{}"))
        except ValueError:
            drops, policies = [], []
        failed = failed or bool(drops)
        findings += drops + policies
    for command in ("iptables-save", "ip6tables-save"):
        out = _run([command])
        if out is not None and out.returncode == 0:
            checked.append(command)
            lines = iptables_problems(out.stdout)
            failed = failed or bool(lines)
            findings += lines
    if not checked:
        return Check(
            "firewall",
            WARN,
            "neither nft nor iptables-save could list the rules",
            "run doctor as root, or check by hand that UDP 500/4500 and ESP pass",
        )
    if not findings:
        return Check("firewall", OK, f"no rule drops UDP 500/4500 or ESP ({', '.join(checked)})")
    return Check(
        "firewall",
        FAIL if failed else WARN,
        "; ".join(findings),
        "accept udp dport {500, 4500} and ESP in the input chain, e.g. "
        "nft add rule inet filter input udp dport { 500, 4500 } accept; "
        "nft add rule inet filter input meta l4proto esp accept",
    )


def check_kernel_ipsec() -> Check:
    out = _run(["ip", "xfrm", "policy", "list"])
    if out is None or out.returncode != 0:
        return Check("kernel-ipsec", OK, "no kernel IPsec policies readable")
    policies = [line for line in out.stdout.splitlines() if line.startswith("src ")]
    if not policies:
        return Check("kernel-ipsec", OK, "no kernel xfrm policies")
    return Check(
        "kernel-ipsec",
        WARN,
        f"{len(policies)} kernel xfrm policies (another IPsec stack?): " + "; ".join(policies[:3]),
        "the kernel applies them before our TUN sees the traffic: remove them "
        "(ip xfrm policy flush) if no other IKE daemon needs them",
    )


def check_fail_closed() -> Check:
    from aioipsec.cleanup import owner_state
    from aioipsec.runtime.failclosed import FailClosedError, nft_path, read_state

    if nft_path() is None:
        return Check(
            "fail-closed",
            WARN,
            "nft is not installed: the daemon refuses to start (it cannot fail closed)",
            "apt-get install nftables (or set [daemon] fail_closed = false, and accept that "
            "traffic leaves in clear whenever the daemon is down)",
        )
    try:
        state = read_state()
    except FailClosedError as error:
        return Check("fail-closed", WARN, str(error), "run doctor as root")
    if state is None:
        return Check("fail-closed", OK, "no fail-closed rules here (no daemon ran, or removed)")
    summary = state.describe().replace("\n", "; ") or "no child"
    if state.owner is not None and state.owner.running():
        return Check("fail-closed", OK, f"held by the running daemon: {summary}")
    return Check(
        "fail-closed",
        WARN,
        f"left by a daemon that no longer runs ({owner_state(state.owner)}): traffic to "
        f"these selectors is dropped, not sent in clear: {summary}",
        "start the daemon again (it takes the rules over), or remove them for good with "
        "'aioipsec cleanup' (the traffic then follows the ordinary routes, in clear)",
    )


# ----------------------------------------------------------------------------- runner


def run_checks(
    configuration: Any | None = None, ports: tuple[int, int] = (500, 4500)
) -> list[Check]:
    checks = [check_privileges(), check_tun(), check_forwarding(configuration), check_aes_ni()]
    checks += [check_udp_port(port) for port in ports]
    checks += [check_clock(), check_mtu(configuration), check_firewall(), check_kernel_ipsec()]
    checks += check_tokens(configuration)
    checks.append(check_fail_closed())
    return checks


def check_tokens(configuration: Any | None) -> list[Check]:
    """Each token key: module loads, slot present, PIN accepted, test signature verifies."""
    from aioipsec.tokens.doctor import token_checks

    return [Check(*result) for result in token_checks(configuration)]


def render(checks: list[Check]) -> str:
    lines = []
    for check in checks:
        lines.append(f"{check.status:<5} {check.name:<13} {check.detail}")
        if check.fix and check.status != OK:
            lines.append(f"{'':<5} {'':<13} -> {check.fix}")
    failed = sum(c.status == FAIL for c in checks)
    warned = sum(c.status == WARN for c in checks)
    lines.append(f"{len(checks)} checks: {failed} FAIL, {warned} WARN")
    return "\n".join(lines) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c",
        "--config",
        dest="doctor_config",
        type=Path,
        metavar="FILE",
        help="TOML configuration: adds the forwarding and MTU checks",
    )
    parser.add_argument("--swanctl-conf", dest="doctor_swanctl", type=Path, metavar="FILE")
    parser.add_argument("--json", action="store_true", help="one JSON list of checks")


def run(args: argparse.Namespace) -> int:
    configuration = None
    ports = (500, 4500)
    if args.doctor_config is not None or args.doctor_swanctl is not None:
        from aioipsec.config import ConfigError, load_configuration

        try:
            configuration = load_configuration(args.doctor_config, args.doctor_swanctl)
        except ConfigError as error:
            print(f"aioipsec doctor: configuration error: {error}", file=sys.stderr)
            return 2
        ports = (configuration.daemon.ike_port, configuration.daemon.nat_t_port)
    checks = run_checks(configuration, ports)
    if args.json:
        print(json.dumps([asdict(c) for c in checks], indent=1))
    else:
        sys.stdout.write(render(checks))
    return 1 if any(c.status == FAIL for c in checks) else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="aioipsec doctor",
        description="Check the prerequisites: root or CAP_NET_ADMIN, /dev/net/tun, IP "
        "forwarding (gateways), AES-NI, UDP 500/4500 free, clock synchronised, path MTU, "
        "firewall rules for IKE and ESP, kernel IPsec policies, fail-closed rules left by a "
        "daemon that no longer runs, and with -c each token key "
        "(module, slot, PIN, a test signature). Each check prints OK, WARN "
        "or FAIL and what to do; exit status 1 if any FAILs.",
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
