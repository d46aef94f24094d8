"""aioipsec.runtime.failclosed: names, selectors, the table text, and (as root, in a
namespace, with the real nft) take-over, learning, terminate/stop, doctor and cleanup.

The end-to-end leak measurements are in tests/e2e/test_fail_closed.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

from aioipsec.runtime import failclosed as fc

REPO = Path(__file__).resolve().parents[1]


def config(name: str, remote_addrs: list[str], children: dict[str, list[str]]) -> object:
    return SimpleNamespace(
        name=name,
        remote_addrs=remote_addrs,
        children=[SimpleNamespace(name=c, remote_ts=ts) for c, ts in children.items()],
    )


@pytest.mark.parametrize(
    "connection, child",
    [("site", "net"), ("a-b", "c"), ("a", "b-c"), ("x y", "é/ü"), ("under_score", '"q"')],
)
def test_chain_names_are_identifiers_and_decode_back(connection: str, child: str) -> None:
    name = fc.chain_name((connection, child))
    assert name.startswith("child/")
    assert all(ch.isascii() and (ch.isalnum() or ch in "/_.-") for ch in name)
    assert fc.key_of_chain(name) == (connection, child)


def test_distinct_keys_give_distinct_chains() -> None:
    assert fc.chain_name(("a-b", "c")) != fc.chain_name(("a", "b-c"))
    assert fc.chain_name(("a/b", "c")) != fc.chain_name(("a", "b/c"))


def test_a_name_too_long_for_nft_says_what_to_do() -> None:
    with pytest.raises(fc.FailClosedError, match="shorten"):
        fc.chain_name(("x" * 200, "y" * 60))


def test_ranges_in_nft_notation_and_back() -> None:
    for text in ("10.2.0.0/24", "10.3.0.1-10.3.0.9", "192.0.2.7", "fd00::/64", "fd00::1-fd00::9"):
        assert fc.range_text(fc.parse_range_text(text)) == text
    assert fc.range_text(fc.address_range("10.0.0.0", "10.0.0.255")) == "10.0.0.0/24"
    with pytest.raises(ValueError):
        fc.address_range("10.0.0.9", "10.0.0.1")


def test_plan_from_the_remote_selectors() -> None:
    plans = fc.plan_for_configs(
        [
            config("site", ["192.0.2.2"], {
                "net": ["10.2.0.0/24", "10.2.0.0/25", "10.3.0.1-10.3.0.9", "fd00::/64[tcp/443]"],
                "host": ["dynamic"],
            }),
            config("rw", ["%any"], {"pool": ["dynamic"], "mixed": ["dynamic, 10.9.0.0/16"]}),
        ]
    )  # fmt: skip
    net = plans[("site", "net")]
    # Addresses only (like the tunnel routes); a range inside another is one rule.
    assert [fc.range_text(r) for r in net.ranges] == [
        "10.2.0.0/24", "10.3.0.1-10.3.0.9", "fd00::/64",
    ]  # fmt: skip
    assert not net.learns
    # dynamic = the peer's address (host-to-host), known from remote_addrs ...
    assert [fc.range_text(r) for r in plans[("site", "host")].ranges] == ["192.0.2.2"]
    # ... or only once a Child SA is up (a responder for any peer): learned then.
    assert plans[("rw", "pool")] == fc.ChildPlan((), learns=True)
    mixed = plans[("rw", "mixed")]
    assert mixed.learns and [fc.range_text(r) for r in mixed.ranges] == ["10.9.0.0/16"]


def test_table_text_and_parsing_it_back() -> None:
    owner = fc.Owner(1234, 5678, "ipsec0", "running")
    script = fc.table_script(
        owner, {("site", "net"): [fc.parse_range_text("10.2.0.0/24")], ("rw", "p"): []}
    )
    # Replaced in one transaction: the delete comes with the new table.
    assert script.startswith("table inet aioipsec\ndelete table inet aioipsec\n")
    assert 'oifname { "lo", "ipsec0" } accept' in script
    assert "meta mark 0x2200 accept" in script
    assert script.count("jump child/site/net") == 1
    listed = textwrap.dedent(
        """\
        table inet aioipsec {
            comment "aioipsec fail-closed pid=1234 start=5678 tun=ipsec0 state=stopped"
            chain postrouting {
                type filter hook postrouting priority filter; policy accept;
                meta mark 0x00002200 accept
                jump child/site/net
            }

            chain child/site/net {
                comment "connection=site child=net"
                ip daddr 10.2.0.0/24 counter packets 7 bytes 588 drop
                ip6 daddr fd00::/64 counter packets 2 bytes 208 drop
            }
        }
        """
    )
    state = fc.parse_table(listed)
    assert state.owner == fc.Owner(1234, 5678, "ipsec0", "stopped")
    assert state.dropped == 9
    assert state.describe() == "site/net: 10.2.0.0/24, fd00::/64 (9 packets dropped)"


def test_owner_running_needs_the_same_process() -> None:
    start = fc.process_start(os.getpid())
    assert start is not None
    assert fc.Owner(os.getpid(), start, "ipsec0", "running").running()
    assert not fc.Owner(os.getpid(), start + 1, "ipsec0", "running").running()  # pid reused
    assert not fc.Owner(os.getpid(), start, "ipsec0", "stopped").running()
    assert fc.Owner.parse(fc.Owner(1, 2, "t", "running").comment()) == fc.Owner(
        1, 2, "t", "running"
    )
    assert fc.Owner.parse("someone else's table") is None


# --------------------------------------------------------------------------- with nft, as root

needs_nft = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("nft") is None or shutil.which("ip") is None,
    reason="needs root, ip and nft (network namespaces, nftables)",
)


@pytest.fixture
def namespace():
    from aioipsec.netns import Lab

    with Lab("fcunit") as lab:
        yield lab.namespace("ns")


def run_in(namespace, code: str) -> dict:
    """Run CODE (which prints one JSON value) with this checkout inside NAMESPACE."""
    script = PRELUDE + textwrap.dedent(code)
    result = namespace.run(sys.executable, "-c", script, check=False, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


PRELUDE = """
import json, os
from types import SimpleNamespace as NS
from aioipsec.runtime import failclosed as fc
def conf(name, addrs, children):
    return NS(name=name, remote_addrs=addrs,
              children=[NS(name=c, remote_ts=ts) for c, ts in children.items()])
"""


@needs_nft
def test_take_over_replaces_without_duplicates_and_drops_unloaded(namespace) -> None:
    # What a killed daemon left: a dead owner, two children, one learned address.
    dead = fc.Owner(999999, 1, "ipsec0", "running")
    namespace.nft(
        fc.table_script(dead, {
            ("site", "net"): [fc.parse_range_text("10.2.0.0/24")],
            ("gone", "net"): [fc.parse_range_text("10.7.0.0/24")],
            ("rw", "pool"): [fc.parse_range_text("10.9.0.5")],
        })
    )  # fmt: skip
    result = run_in(
        namespace,
        """
        f = fc.FailClosed("ipsec0")
        plans = fc.plan_for_configs([conf("site", ["192.0.2.2"], {"net": ["10.2.0.0/24"]}),
                                     conf("rw", ["%any"], {"pool": ["dynamic"]})])
        adoption = f.adopt(plans)
        # A Child SA of the road-warrior child with a new address: one rule added.
        added = f.close(("rw", "pool"), plans[("rw", "pool")], [fc.parse_range_text("10.9.0.6")])
        again = f.close(("rw", "pool"), plans[("rw", "pool")], [fc.parse_range_text("10.9.0.6")])
        state = fc.read_state()
        print(json.dumps({
            "previous_pid": adoption.previous.owner.pid,
            "adopted": sorted("/".join(k) for k in adoption.adopted),
            "stale": {"/".join(k): [fc.range_text(r) for r in v]
                      for k, v in adoption.stale.items()},
            "added": added, "again": again,
            "owner": state.owner.pid == os.getpid() and state.owner.running(),
            "now": state.describe(),
        }))
        """,
    )
    assert result["previous_pid"] == 999999
    assert result["adopted"] == ["rw/pool", "site/net"]
    assert result["stale"] == {"gone/net": ["10.7.0.0/24"]}
    assert result["added"] is True and result["again"] is False
    assert result["owner"] is True
    assert result["now"].splitlines() == [
        "rw/pool: 10.9.0.5, 10.9.0.6 (0 packets dropped)",
        "site/net: 10.2.0.0/24 (0 packets dropped)",
    ]
    listed = namespace.run("nft", "list", "ruleset").stdout
    assert listed.count("table inet aioipsec") == 1
    assert listed.count("jump child/site/net") == 1
    assert listed.count("10.2.0.0/24") == 1


@needs_nft
def test_a_live_owner_is_not_taken_over(namespace) -> None:
    # This test process is alive: its table belongs to a "running daemon".
    me = fc.Owner(os.getpid(), fc.process_start(os.getpid()) or 0, "ipsec0", "running")
    namespace.nft(fc.table_script(me, {("site", "net"): [fc.parse_range_text("10.2.0.0/24")]}))
    result = namespace.run(
        sys.executable, "-c",
        PRELUDE + "fc.FailClosed('ipsec0').adopt({})", check=False, timeout=60,
    )  # fmt: skip
    assert result.returncode != 0
    assert f"another aioipsec daemon (pid {os.getpid()})" in result.stderr
    assert "10.2.0.0/24" in namespace.run("nft", "list", "table", "inet", "aioipsec").stdout


@needs_nft
def test_open_reload_and_stop(namespace) -> None:
    result = run_in(
        namespace,
        """
        f = fc.FailClosed("ipsec0")
        a = fc.plan_for_configs([conf("a", ["192.0.2.2"], {"net": ["10.2.0.0/24"]})])
        b = fc.plan_for_configs([conf("b", ["192.0.2.3"], {"net": ["10.3.0.0/24"]})])
        f.adopt({**a, **b})
        opened = f.open([("a", "net"), ("nope", "x")])
        after_open = sorted(f.listing())
        # An unchanged reload keeps "a" open; "b" unloaded goes.
        removed = f.reload(a, changed=set())
        after_reload = sorted(fc.read_state().describe().splitlines())
        f.stop(keep=True)
        stopped = fc.read_state().owner.state
        f.stop(keep=False)
        print(json.dumps({"opened": opened, "after_open": after_open, "removed": removed,
                          "after_reload": after_reload, "stopped": stopped,
                          "gone": fc.read_state() is None}))
        """,
    )
    assert result["opened"] == [["a", "net"]]
    assert result["after_open"] == ["b/net"]
    assert result["removed"] == [["b", "net"]]
    assert result["after_reload"] == []
    assert result["stopped"] == "stopped"
    assert result["gone"] is True


@needs_nft
def test_doctor_and_cleanup_on_what_a_dead_daemon_left(namespace) -> None:
    dead = fc.Owner(999999, 1, "ipsec0", "running")
    namespace.nft(fc.table_script(dead, {("site", "net"): [fc.parse_range_text("10.2.0.0/24")]}))
    namespace.run("ip", "rule", "add", "pref", "220", "not", "fwmark", "0x2200", "table", "220")

    def aioipsec(*args: str) -> subprocess.CompletedProcess[str]:
        return namespace.run(sys.executable, "-m", "aioipsec", *args, check=False, timeout=60)

    doctor = aioipsec("doctor", "--json")
    check = {c["name"]: c for c in json.loads(doctor.stdout)}["fail-closed"]
    assert check["status"] == "WARN"
    assert "daemon pid 999999 gone (killed or crashed)" in check["detail"]
    assert "site/net: 10.2.0.0/24" in check["detail"]
    assert "aioipsec cleanup" in check["fix"]

    listed = aioipsec("cleanup", "--list", "--json")
    report = json.loads(listed.stdout)
    assert report["fail_closed"]["children"] == {
        "site/net": {"selectors": ["10.2.0.0/24"], "dropped": 0}
    }
    assert len(report["routing_rules"]) == 1
    removed = aioipsec("cleanup")
    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert "removed" in removed.stdout
    assert namespace.run("nft", "list", "tables").stdout.strip() == ""
    assert "lookup 220" not in namespace.run("ip", "rule").stdout
    doctor = aioipsec("doctor", "--json")
    check = {c["name"]: c for c in json.loads(doctor.stdout)}["fail-closed"]
    assert check["status"] == "OK"


def test_cleanup_help_names_the_rules() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "aioipsec", "cleanup", "--help"], capture_output=True,
        text=True, timeout=30, cwd=REPO, check=False,
    )  # fmt: skip
    assert out.returncode == 0
    assert "inet aioipsec" in out.stdout and "--force" in out.stdout and "--list" in out.stdout
