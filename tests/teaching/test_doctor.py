"""``aioipsec doctor`` run for real: on this machine, and in fresh network namespaces
where we create the conditions each check is about (a port taken, an nftables drop rule,
forwarding off for a gateway config, a small path MTU, no privileges)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from aioipsec.doctor import FAIL, OK, WARN, iptables_problems, run_checks

pytestmark = pytest.mark.timeout(60)
ROOT = os.geteuid() == 0
REPO = Path(__file__).resolve().parents[2]
_skip_unless_root = pytest.mark.needs("root", "unshare")


def needs_root(test: Callable[..., None]) -> Callable[..., None]:
    """Root + a fresh network namespace (unshare --net): the ``netns`` marker too."""
    return pytest.mark.netns(_skip_unless_root(test))


GATEWAY_TOML = """
[connections.gw]
local_addrs = ["192.0.2.1"]
remote_addrs = ["198.51.100.7"]
[connections.gw.local]
auth = "psk"
id = "gw.example"
[connections.gw.remote]
auth = "psk"
id = "peer.example"
[connections.gw.children.net]
local_ts = ["10.1.0.0/24"]
remote_ts = ["10.2.0.0/24"]
esp_proposals = ["aes256gcm16"]
[secrets.ike-gw]
id = ["gw.example", "peer.example"]
secret = "0sZGVtby1vbmx5LWtleS1kby1ub3QtdXNlLWluLXByb2R1Y3Rpb24="
"""


def _doctor_in_netns(setup: str, *args: str) -> tuple[int, dict[str, dict[str, str]]]:
    """Run ``setup`` (shell) then doctor --json inside a new, empty network namespace
    (it disappears with the process: nothing to clean up)."""
    script = f"set -e; ip link set lo up; {setup}\n{sys.executable} -m aioipsec.doctor --json "
    script += " ".join(args)
    out = subprocess.run(
        ["unshare", "--net", "sh", "-c", script],
        capture_output=True, text=True, timeout=30, cwd=REPO,
    )  # fmt: skip
    assert out.returncode in (0, 1), out.stderr
    return out.returncode, {c["name"]: c for c in json.loads(out.stdout)}


def test_runs_here_every_check_answers() -> None:
    checks = run_checks()
    assert [c.name for c in checks] == [
        "privileges", "tun", "forwarding", "aes-ni", "udp-500", "udp-4500",
        "clock", "mtu", "firewall", "kernel-ipsec", "fail-closed",
    ]  # fmt: skip
    for check in checks:
        assert check.status in (OK, WARN, FAIL)
        assert check.detail
        if check.status != OK:
            assert check.fix, check.name  # every problem says what to do
    out = subprocess.run(
        [sys.executable, "-m", "aioipsec.doctor"], capture_output=True, text=True, timeout=30,
        cwd=REPO,
    )  # fmt: skip
    assert out.stdout.strip().splitlines()[-1].startswith("11 checks:")
    assert out.returncode == (1 if any(c.status == FAIL for c in checks) else 0)
    if ROOT:
        assert checks[0].status == OK


@needs_root
def test_fresh_namespace_has_free_ports_and_no_firewall() -> None:
    _, checks = _doctor_in_netns("true")
    assert checks["udp-500"]["status"] == OK and checks["udp-4500"]["status"] == OK
    assert checks["firewall"]["status"] == OK
    assert checks["kernel-ipsec"]["status"] == OK


@needs_root
def test_port_in_use_fails_and_names_the_holder() -> None:
    # The holder's output goes elsewhere (else subprocess.run waits for it to exit); the
    # doctor runs once the port is bound.
    holder = (
        f"{sys.executable} -c 'import socket,time; s=socket.socket(socket.AF_INET,"
        'socket.SOCK_DGRAM); s.bind(("0.0.0.0",4500)); time.sleep(10)\' >/dev/null 2>&1 & '
        "for i in $(seq 200); do ss -Huln 'sport = :4500' | grep -q . && break; sleep 0.05; done"
    )
    status, checks = _doctor_in_netns(holder)
    assert status == 1
    assert checks["udp-4500"]["status"] == FAIL and "in use" in checks["udp-4500"]["detail"]
    assert "python" in checks["udp-4500"]["detail"]  # ss names the process
    assert checks["udp-500"]["status"] == OK


@needs_root
@pytest.mark.needs("nftables")
def test_nftables_drop_rule_and_drop_policy_are_found() -> None:
    setup = (
        "nft add table inet f; nft add chain inet f input "
        "'{ type filter hook input priority 0; policy drop; }'; "
        "nft add rule inet f input udp dport 500 drop; "
        "nft add rule inet f input udp dport 4500 accept"
    )
    status, checks = _doctor_in_netns(setup)
    assert status == 1
    firewall = checks["firewall"]
    assert firewall["status"] == FAIL
    assert "drop udp/500" in firewall["detail"]
    assert "policy drop; not accepted: esp, udp/500" in firewall["detail"]
    assert "accept" in firewall["fix"]


@needs_root
def test_gateway_config_needs_forwarding_and_checks_path_mtu(tmp_path: Path) -> None:
    config = tmp_path / "gw.toml"
    config.write_text(GATEWAY_TOML)
    config.chmod(0o600)
    route = (
        "ip link add d0 type veth peer name d1; ip link set d1 up; ip link set d0 mtu 1300 up; "
        "ip addr add 192.0.2.1/24 dev d0; ip route add default via 192.0.2.254 dev d0"
    )
    _, checks = _doctor_in_netns(f"{route}; sysctl -qw net.ipv4.ip_forward=0", "-c", str(config))
    assert checks["forwarding"]["status"] == FAIL
    assert "gw/net (10.1.0.0/24)" in checks["forwarding"]["detail"]
    mtu = checks["mtu"]
    assert mtu["status"] == WARN and "d0 MTU 1300" in mtu["detail"], mtu
    # 1300 - (20 IPv4 + 8 UDP + 8 ESP header + 8 IV + 3 pad + 2 trailer + 16 ICV) = 1235
    assert "1235 octets of inner packet" in mtu["detail"]
    on = "sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1"
    _, checks = _doctor_in_netns(f"{route}; {on}", "-c", str(config))
    assert checks["forwarding"]["status"] == OK


@pytest.mark.needs("root", "setpriv")
def test_without_privileges_fails_with_advice() -> None:
    out = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
         sys.executable, "-m", "aioipsec.doctor", "--json"],
        capture_output=True, text=True, timeout=30, cwd="/",
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )  # fmt: skip
    assert out.returncode == 1, out.stderr
    checks = {c["name"]: c for c in json.loads(out.stdout)}
    assert checks["privileges"]["status"] == FAIL
    assert "CAP_NET_ADMIN" in checks["privileges"]["fix"]


def test_iptables_rules_dropping_ike_are_found() -> None:
    saved = "\n".join([
        "*filter",
        ":INPUT ACCEPT [0:0]",
        "-A INPUT -p udp -m udp --dport 4500 -j DROP",
        "-A INPUT -p esp -j REJECT --reject-with icmp-port-unreachable",
        "-A INPUT -p tcp -m tcp --dport 22 -j DROP",
        "-A INPUT -p udp -m multiport --dports 53,500 -j DROP",
        "COMMIT",
    ])  # fmt: skip
    assert len(iptables_problems(saved)) == 3


def test_fresh_machine_without_tools_still_answers_every_check() -> None:
    """No ip, ss, nft or iptables on PATH (a minimal container): every check still gives
    OK/WARN/FAIL with advice instead of a traceback."""
    out = subprocess.run(
        [sys.executable, "-m", "aioipsec.doctor", "--json"], capture_output=True, text=True,
        timeout=30, cwd=REPO, env={"PATH": "/nonexistent", "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert out.returncode in (0, 1), out.stderr
    checks = {c["name"]: c for c in json.loads(out.stdout)}
    assert len(checks) == 11
    assert checks["fail-closed"]["status"] in (OK, WARN)
    assert checks["firewall"]["status"] == WARN and "by hand" in checks["firewall"]["fix"]
