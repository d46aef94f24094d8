"""``aioipsec cleanup``: remove what a daemon that no longer runs left in the kernel.

A daemon fails closed (:mod:`aioipsec.runtime.failclosed`): after SIGKILL, a crash, or a
clean stop with the default ``fail_closed_after_stop = true``, its nftables table
``inet aioipsec`` keeps dropping traffic to the remote selectors. Starting the daemon again
takes it over; this command removes it when the tunnel is gone for good, together with the
policy-routing rule a killed daemon leaves (``not fwmark 0x2200 lookup 220``).

It refuses while the daemon that owns the table runs (``--force`` overrides: that daemon's
tunnels then leak when it stops), and acts on the current network namespace, like the
daemon (``ip netns exec NS aioipsec cleanup``).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

EXIT_OK, EXIT_FAILED = 0, 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--list",
        dest="cleanup_list",
        action="store_true",
        help="only show what is left (the rules, their selectors, the packets they dropped)",
    )
    parser.add_argument(
        "--force",
        dest="cleanup_force",
        action="store_true",
        help="remove the rules even if the daemon that installed them still runs",
    )
    parser.add_argument("--json", dest="cleanup_json", action="store_true", help="print JSON")


def leftover_rules() -> list[tuple[str, str]]:
    """The tunnel routing rules (family, rule text) present in this namespace."""
    from aioipsec.runtime.routes import RULE_PRIORITY, TUNNEL_ROUTE_TABLE
    from tun.device import run_ip

    found = []
    for family in ("-4", "-6"):
        result = run_ip(family, "rule", "show", "pref", str(RULE_PRIORITY), check=False)
        for line in result.stdout.splitlines():
            if f"lookup {TUNNEL_ROUTE_TABLE}" in line:
                found.append((family, line.strip()))
    return found


def tun_devices() -> list[str]:
    """Names of the TUN devices in this namespace."""
    from tun.device import is_tun_device, run_ip

    result = run_ip("-d", "-j", "link", "show", check=False)
    try:
        links = json.loads(result.stdout or "[]")
    except ValueError:
        return []
    return [link.get("ifname", "?") for link in links if is_tun_device(link)]


def _remove_rules(rules: list[tuple[str, str]]) -> None:
    from aioipsec.runtime.routes import RULE_PRIORITY, TUNNEL_ROUTE_TABLE
    from aioipsec.runtime.sockets import BYPASS_MARK
    from tun.device import run_ip

    for family in {family for family, _ in rules}:
        rule = ("pref", str(RULE_PRIORITY), "not", "fwmark", hex(BYPASS_MARK))
        while run_ip(family, "rule", "del", *rule, "table", str(TUNNEL_ROUTE_TABLE),
                     check=False).returncode == 0:  # fmt: skip
            pass


def report(state: Any, rules: list[tuple[str, str]]) -> dict[str, Any]:
    from aioipsec.runtime.failclosed import range_text

    owner = state.owner if state is not None else None
    return {
        "fail_closed": None
        if state is None
        else {
            "owner_pid": owner.pid if owner else None,
            "owner_state": owner_state(owner),
            "dropped": state.dropped,
            "children": {
                f"{connection}/{child}": {
                    "selectors": [range_text(r) for r in child_state.ranges],
                    "dropped": child_state.dropped,
                }
                for (connection, child), child_state in sorted(state.children.items())
            },
        },
        "routing_rules": [text for _, text in rules],
    }


def owner_state(owner: Any) -> str:
    """How the owning daemon is doing, in words."""
    if owner is None:
        return "unknown owner"
    if owner.running():
        return f"daemon pid {owner.pid} running"
    if owner.state == "stopped":
        return f"daemon pid {owner.pid} stopped cleanly"
    return f"daemon pid {owner.pid} gone (killed or crashed)"


def run(args: argparse.Namespace) -> int:
    from aioipsec.runtime import shunts
    from aioipsec.runtime.failclosed import FailClosedError, read_state, remove_table

    try:
        state = read_state()
    except FailClosedError as error:
        print(f"aioipsec cleanup: {error}", file=sys.stderr)
        return EXIT_FAILED
    rules = leftover_rules()
    from aioipsec.runtime.farp import ProxyNeighbours

    # Proxy ARP/NDP entries of [daemon] proxy_arp_interface (runtime/farp.py), tagged.
    proxies = ProxyNeighbours.leftovers()
    if state is not None and state.owner is not None:
        running = state.owner.running()
    else:  # no owner to ask: a TUN device means a daemon (its device is not persistent)
        running = bool(rules) and bool(tun_devices())
    if getattr(args, "cleanup_json", False):
        data = report(state, rules)
        data["proxy_entries"] = [f"{address} dev {device}" for address, device in proxies]
        print(json.dumps(data, indent=2))
    elif state is None and not rules and not proxies:
        print("nothing to clean up: no fail-closed rules and no tunnel routing rule here")
    else:
        if state is not None:
            print(f"fail-closed rules (nft table inet aioipsec, {owner_state(state.owner)}):")
            for line in (state.describe() or "(no child)").splitlines():
                print(f"  {line}")
        for _, text in rules:
            print(f"tunnel routing rule: {text}")
        for address, device in proxies:
            print(f"proxy ARP/NDP entry: {address} dev {device}")
    if getattr(args, "cleanup_list", False) or (state is None and not rules and not proxies):
        return EXIT_OK
    if running and not getattr(args, "cleanup_force", False):
        who = (
            f"the daemon that installed these rules (pid {state.owner.pid})"
            if state is not None and state.owner is not None
            else f"a daemon (TUN device {', '.join(tun_devices())})"
        )
        print(
            f"aioipsec cleanup: {who} is running: stop it first (it keeps or removes its "
            "rules as fail_closed_after_stop says), or use terminate/reload to open single "
            "connections; --force removes them anyway",
            file=sys.stderr,
        )
        return EXIT_FAILED
    try:
        if state is not None:
            remove_table()
        _remove_rules(rules)
        shunts.remove()  # pass/drop children's table (kept with the fail-closed rules)
        for address, device in proxies:
            ProxyNeighbours.remove(address, device)
    except (FailClosedError, shunts.ShuntError) as error:
        print(f"aioipsec cleanup: {error}", file=sys.stderr)
        return EXIT_FAILED
    if not getattr(args, "cleanup_json", False):
        print(
            "removed: traffic to these selectors now follows the ordinary routing table "
            "(in clear) until a daemon loads the connections again"
        )
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aioipsec cleanup", description=DESCRIPTION)
    add_arguments(parser)
    return run(parser.parse_args(argv))


DESCRIPTION = (
    "Remove the fail-closed rules (nftables table inet aioipsec) and the tunnel routing "
    "rule that a daemon which no longer runs left in this network namespace; until then "
    "traffic to its connections' remote selectors is dropped, never sent in clear. "
    "Refuses while that daemon runs (--force). --list only shows them."
)


if __name__ == "__main__":
    raise SystemExit(main())
