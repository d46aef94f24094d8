"""updown scripts: the PLUTO_* environment (aioipsec.updown_env) and the runner
(aioipsec.runtime.updown) with real /bin/sh scripts."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import pytest
import structlog

from aioipsec.runtime.updown import UpdownRunner
from aioipsec.updown_env import UpdownCall, build_environment, policy_pairs, subnet_of, verb
from ikev2.ts_range import TrafficSelectorRange as Ts

ANY4 = Ts("10.1.0.0", "10.1.0.255")
PEER4 = Ts("10.2.0.0", "10.2.0.255")


def call(**changes: object) -> UpdownCall:
    base = {
        "up": True,
        "connection": "net",
        "interface": "ipsec0",
        "reqid": 3,
        "protocol": "esp",
        "unique_id": 7,
        "me": "10.200.0.1",
        "my_id": "moon.strongswan.org",
        "peer": "10.200.0.2",
        "peer_id": "C=CH, O=strongSwan, CN=sun",
        "my_ts": ANY4,
        "peer_ts": PEER4,
    }
    base.update(changes)
    return UpdownCall(**base)  # type: ignore[arg-type]  # test data built from a dict


def test_environment_of_a_subnet_to_subnet_child() -> None:
    env = build_environment(call(), "/usr/bin")
    assert env == {
        "PATH": "/usr/bin",
        "PLUTO_VERSION": "1.1",
        "PLUTO_VERB": "up-client",
        "PLUTO_CONNECTION": "net",
        "PLUTO_INTERFACE": "ipsec0",
        "PLUTO_REQID": "3",
        "PLUTO_PROTO": "esp",
        "PLUTO_UNIQUEID": "7",
        "PLUTO_ME": "10.200.0.1",
        "PLUTO_MY_ID": "moon.strongswan.org",
        "PLUTO_MY_CLIENT": "10.1.0.0/24",
        "PLUTO_MY_PORT": "0",
        "PLUTO_MY_PROTOCOL": "0",
        "PLUTO_PEER": "10.200.0.2",
        "PLUTO_PEER_ID": "C=CH, O=strongSwan, CN=sun",
        "PLUTO_PEER_CLIENT": "10.2.0.0/24",
        "PLUTO_PEER_PORT": "0",
        "PLUTO_PEER_PROTOCOL": "0",
    }


def test_optional_variables() -> None:
    env = build_environment(
        call(
            up=False,
            udp_encap_port=4500,
            ipcomp=True,
            host_access=True,
            dns=("192.0.2.53", "2001:db8::53", "198.51.100.53"),
            my_source_ips=("10.3.0.1", "fd00:3::1"),
            peer_source_ips=("fd00:4::1",),
            xauth_id="carol",
            mark_in=(42, 0xFFFFFFFF),
            if_id_out=9,
            protocol="ah",
        ),
        "/bin",
    )
    assert env["PLUTO_VERB"] == "down-client"
    assert env["PLUTO_UDP_ENC"] == "4500" and env["PLUTO_IPCOMP"] == "1"
    assert env["PLUTO_HOST_ACCESS"] == "1" and env["PLUTO_PROTO"] == "ah"
    assert (env["PLUTO_DNS4_1"], env["PLUTO_DNS4_2"], env["PLUTO_DNS6_1"]) == (
        "192.0.2.53",
        "198.51.100.53",
        "2001:db8::53",
    )
    assert env["PLUTO_MY_SOURCEIP"] == "10.3.0.1" and env["PLUTO_MY_SOURCEIP6_1"] == "fd00:3::1"
    assert env["PLUTO_PEER_SOURCEIP"] == env["PLUTO_PEER_SOURCEIP6_1"] == "fd00:4::1"
    assert env["PLUTO_XAUTH_ID"] == "carol"
    assert env["PLUTO_MARK_IN"] == "42/0xffffffff" and env["PLUTO_IF_ID_OUT"] == "9"
    assert "PLUTO_MARK_OUT" not in env and "PLUTO_IF_ID_IN" not in env


def test_verbs_host_client_and_v6() -> None:
    host = Ts("10.200.0.1", "10.200.0.1")
    assert verb(call(my_ts=host)) == "up-host"
    assert verb(call(my_ts=host, up=False)) == "down-host"
    six = Ts("fd00:1::", "fd00:1::ffff")
    assert verb(call(my_ts=six, peer_ts=six)) == "up-client-v6"
    assert verb(call(me="fd00::1", my_ts=Ts("fd00::1", "fd00::1"))) == "up-host-v6"
    # An IPv6 selector over IPv4 outer addresses is still a -v6 client.
    assert verb(call(my_ts=six, up=False)) == "down-client-v6"


def test_ports_and_icmp_type_code() -> None:
    web = Ts("10.1.0.0", "10.1.0.255", 6, 80, 80)
    peer = Ts("10.2.0.1", "10.2.0.1", 6, 1024, 2047)
    env = build_environment(call(my_ts=web, peer_ts=peer), "/bin")
    assert (env["PLUTO_MY_PORT"], env["PLUTO_PEER_PORT"]) == ("80", "1024:2047")
    assert env["PLUTO_MY_PROTOCOL"] == env["PLUTO_PEER_PROTOCOL"] == "6"
    assert env["PLUTO_PEER_CLIENT"] == "10.2.0.1/32"
    # ICMP echo request (type 8, code 0) travels in the port fields (RFC 4301 4.4.1.3).
    echo = Ts("10.1.0.0", "10.1.0.255", 1, 0x0800, 0x0800)
    env = build_environment(call(my_ts=echo, peer_ts=Ts("10.2.0.0", "10.2.0.255", 1)), "/bin")
    assert (env["PLUTO_MY_PORT"], env["PLUTO_PEER_PORT"]) == ("8", "0")


def test_a_range_becomes_the_smallest_subnet_holding_it() -> None:
    assert subnet_of(Ts("10.0.0.1", "10.0.0.9")) == "10.0.0.0/28"
    assert subnet_of(Ts("0.0.0.0", "255.255.255.255")) == "0.0.0.0/0"
    assert subnet_of(Ts("::1", "::1")) == "::1/128"
    assert subnet_of(Ts("fd00::", "fd00::ffff")) == "fd00::/112"
    with pytest.raises(ValueError, match="not a range"):
        subnet_of(Ts("10.0.0.9", "10.0.0.1"))


def test_policies_pair_selectors_of_one_ip_version() -> None:
    six = Ts("fd00:2::", "fd00:2::ff")
    pairs = policy_pairs((ANY4, Ts("fd00:1::", "fd00:1::ff")), (PEER4, six))
    assert pairs == [(ANY4, PEER4), (Ts("fd00:1::", "fd00:1::ff"), six)]


def test_identities_from_the_peer_are_printable() -> None:
    env = build_environment(call(peer_id="CN=evil\nPLUTO_VERB=x\x1b[0m"), "/bin")
    assert env["PLUTO_PEER_ID"] == "CN=evil?PLUTO_VERB=x?[0m"


# ---------------------------------------------------------------------- the runner


def _script(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "updown.sh"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


async def _run(runner: UpdownRunner, actions: list[object]) -> None:
    runner.start(asyncio.get_running_loop())
    for action in actions:
        action()  # type: ignore[operator]  # the callables below
    await runner.close()


def test_up_rekey_down_in_order_with_arguments(tmp_path: Path) -> None:
    out = tmp_path / "calls"
    script = _script(tmp_path, f'echo "$PLUTO_VERB $PLUTO_REQID $1 $*" >> {out}\necho said "$1"\n')
    runner = UpdownRunner()
    two = [call(), call(my_ts=Ts("10.5.0.0", "10.5.255.255"))]
    with structlog.testing.capture_logs() as logs:
        asyncio.run(
            _run(
                runner,
                [
                    lambda: runner.child_up(1, f"{script} iptables", two),
                    lambda: runner.child_rekeyed(1, 2),  # no call for a rekey
                    lambda: runner.child_down(1),  # the old SA of the rekey: nothing
                    lambda: runner.child_down(2),
                    lambda: runner.child_down(2),  # once only
                ],
            )
        )
    assert out.read_text().splitlines() == [
        "up-client 3 iptables iptables",
        "up-client 3 iptables iptables",
        "down-client 3 iptables iptables",
        "down-client 3 iptables iptables",
    ]
    assert runner.calls == 4 and runner.failures == 0
    said = [e for e in logs if e["event"] == "updown: said iptables"]
    assert len(said) == 4 and said[0]["verb"] == "up-client" and said[0]["connection"] == "net"
    assert sum(e["event"] == "updown script done" for e in logs) == 4


def test_failure_and_timeout_are_logged_and_the_loop_keeps_running(tmp_path: Path) -> None:
    failing = _script(tmp_path, "echo broken >&2\nexit 3\n")
    slow = tmp_path / "slow.sh"
    slow.write_text("#!/bin/sh\nsleep 30 &\nsleep 30\n")
    slow.chmod(0o755)
    runner = UpdownRunner(timeout=0.5)
    ticks = 0

    async def main() -> None:
        nonlocal ticks
        runner.start(asyncio.get_running_loop())
        runner.child_up(1, str(failing), [call()])
        runner.child_up(2, str(slow), [call()])
        started = asyncio.get_running_loop().time()
        while asyncio.get_running_loop().time() - started < 0.8:
            await asyncio.sleep(0.05)
            ticks += 1
        await runner.close()

    with structlog.testing.capture_logs() as logs:
        asyncio.run(main())
    assert ticks >= 10  # the loop ran while the scripts did
    failed = next(e for e in logs if e["event"] == "updown script failed")
    assert failed["status"] == 3 and failed["log_level"] == "warning"
    assert any(e["event"] == "updown: broken" for e in logs)  # stderr joined to stdout
    killed = next(e for e in logs if e["event"].startswith("updown script killed"))
    assert killed["log_level"] == "error" and "0.5 s" in killed["event"]
    assert runner.failures == 2


def test_a_missing_script_is_a_logged_failure(tmp_path: Path) -> None:
    runner = UpdownRunner()
    with structlog.testing.capture_logs() as logs:
        asyncio.run(_run(runner, [lambda: runner.child_up(1, str(tmp_path / "nope"), [call()])]))
    failed = next(e for e in logs if e["event"] == "updown script failed")
    assert failed["status"] == 127
    assert any("not found" in e["event"] for e in logs if e["event"].startswith("updown: "))
