"""``make demo-rw`` (``python -m aioipsec.demo_rw``): a road warrior and a gateway, as root.

What it does, step by step, printing each step:

1. creates three network namespaces: *carol* (the road warrior), *gateway* and *lan* (a
   host behind the gateway, 10.1.0.10, which routes the pool 10.3.0.0/24 back through the
   gateway); the gateway forwards between its TUN device and the LAN;
2. starts ``aioipsec daemon`` in *gateway* and *carol* from the shipped examples
   (``aioipsec/examples/rw-gateway.toml``: a pool with DNS server and domain, EAP-MSCHAPv2
   for the clients; ``rw-client.toml``: ``vips = 0.0.0.0``, EAP identity ``carol``);
3. initiates from carol: IKE_AUTH with EAP-MSCHAPv2, a CFG_REQUEST answered from the pool;
4. shows carol's TUN device with the virtual IP, the DNS servers and domain it received,
   and pings the LAN host from the virtual IP through the tunnel;
5. ends with ``aioipsec pools`` on the gateway (``swanctl --list-pools --leases``);
6. stops both daemons and removes everything, also when interrupted or when a step fails.

Exit status 0 when carol got an address from the pool and the ping went through.
"""

from __future__ import annotations

import json
import shutil
import signal
import sys
from pathlib import Path

from aioipsec.demo import (
    EXAMPLES,
    DemoFailed,
    aioipsec_cli,
    demo_main,
    guarded,
    prepare_config,
    say,
    show,
    wait_for_socket,
)
from aioipsec.netns import Lab, ensure_root

GATEWAY_OUTER, CAROL_OUTER = "192.168.100.1", "192.168.100.2"
GATEWAY_LAN, LAN_HOST = "10.1.0.1", "10.1.0.10"
POOL = "10.3.0.0/24"


def _log_records(log: Path, event: str) -> list[dict[str, object]]:
    records = []
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{") and f'"{event}"' in line:
            records.append(json.loads(line))
    return records


def run_demo(keep_logs: bool = False) -> int:
    ensure_root()
    for tool in ("ip", "ping"):
        if shutil.which(tool) is None:
            raise DemoFailed(f"{tool} is not installed (make demo-rw installs the Debian packages)")

    def steps(workdir: Path) -> None:
        with Lab("rw") as lab:
            say("Three namespaces: carol (road warrior), gateway, lan (a host behind it)")
            carol, gateway, lan = lab.namespace("carol"), lab.namespace("gw"), lab.namespace("lan")
            lab.veth(gateway, f"{GATEWAY_OUTER}/24", carol, f"{CAROL_OUTER}/24")
            lab.veth(gateway, f"{GATEWAY_LAN}/24", lan, f"{LAN_HOST}/24")
            gateway.enable_forwarding()
            lan.ip("route", "add", POOL, "via", GATEWAY_LAN)
            show(
                f"carol {CAROL_OUTER} ---- {GATEWAY_OUTER} gateway {GATEWAY_LAN} ---- "
                f"{LAN_HOST} lan (route to the pool {POOL} via the gateway)"
            )

            say("Starting aioipsec in gateway and carol (examples/rw-gateway.toml, rw-client.toml)")
            daemons = {}
            for side, namespace, example in (
                ("gateway", gateway, "rw-gateway.toml"),
                ("carol", carol, "rw-client.toml"),
            ):
                config, socket_path = prepare_config(EXAMPLES / example, workdir, side)
                log = workdir / f"{side}.log"
                process = lab.start(
                    namespace,
                    [sys.executable, "-m", "aioipsec", "daemon", "-c", str(config),
                     "--foreground", "--log-format", "json"],
                    log=log,
                )  # fmt: skip
                daemons[side] = (socket_path, log, process)
            for side, (socket_path, log, process) in daemons.items():
                wait_for_socket(socket_path, process, log)
                show(f"{side}: daemon running, control socket {socket_path}")
            gateway_socket, _, _ = daemons["gateway"]
            carol_socket, carol_log, _ = daemons["carol"]

            say("carol connects: EAP-MSCHAPv2 as 'carol', asking for a virtual IP")
            show(aioipsec_cli(carol, carol_socket, "initiate", "--child", "home"))

            say("carol's TUN device carries the address from the gateway's pool")
            show(carol.sh("ip -4 -brief address show dev ipsec0"))
            assigned = _log_records(carol_log, "virtual IP assigned")
            if not assigned:
                raise DemoFailed("carol got no virtual IP")
            vip = str(assigned[0]["addresses"][0])  # type: ignore[index]  # a JSON list
            show(
                f"virtual IP {vip}, DNS servers {assigned[0]['dns']}, "
                f"domains {assigned[0]['domains']} (dns_hook = log: shown, not applied)"
            )

            say(f"Pinging the LAN host {LAN_HOST} from {vip} through the tunnel")
            ping = carol.run(
                "ping", "-n", "-c", "4", "-i", "0.3", "-W", "2", "-I", vip, LAN_HOST,
                check=False, timeout=30,
            )  # fmt: skip
            show(ping.stdout)

            say("aioipsec sas (carol)")
            show(aioipsec_cli(None, carol_socket, "sas"))
            say("aioipsec pools (gateway), like swanctl --list-pools --leases")
            show(aioipsec_cli(None, gateway_socket, "pools"))

            say("Stopping the daemons")
            for side, (_, _, process) in daemons.items():
                show(f"{side}: exit status {process.stop(signal.SIGTERM, timeout=10)}")
            if ping.returncode != 0:
                raise DemoFailed("the ping from the virtual IP did not go through")
            say("Demo finished: carol got an address and DNS from the pool and reached the LAN")

    return guarded(steps, keep_logs)


def main(argv: list[str] | None = None) -> int:
    return demo_main(
        argv,
        "python -m aioipsec.demo_rw",
        "A road warrior getting a virtual IP and DNS from an aioipsec gateway over "
        "EAP-MSCHAPv2, pinging a LAN host, then aioipsec pools (needs root).",
        lambda keep_logs: run_demo(keep_logs=keep_logs),
    )


if __name__ == "__main__":
    raise SystemExit(main())
