"""A data path with fixed keys, no IKE: ``python -m tests.e2e.static_tunnel SIDE ...``.

Used by test_datapath_static.py to exercise the runtime's ESP data path (TUN, routes,
UDP-encapsulated and raw ESP, PMTU) on its own, with the kernel's ping as the traffic
source, before and independently of the IKE engine. Both sides get the same key table,
mirrored, like a manually keyed SA pair (``ip xfrm state add`` style).
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import signal
import socket

from aioipsec.runtime.children import ChildSpec
from aioipsec.runtime.datapath import DataPath
from aioipsec.runtime.routes import RouteManager
from aioipsec.runtime.sockets import DrainingSocket, RawEspSocket, open_udp_socket
from esp.events import Lifetime
from ikev2.enums import EncrId, IntegId
from ikev2.events import TrafficSelectorRange
from nat_t.demux import Udp4500Kind, classify
from tun.device import TunDevice

KEY_I_TO_R = bytes(range(36))
KEY_R_TO_I = bytes(range(100, 136))
SPI_I_TO_R = 0xC0DE0001
SPI_R_TO_I = 0xC0DE0002


def child_spec(args: argparse.Namespace) -> ChildSpec:
    initiator = args.side == "left"
    local_net, remote_net = args.local_ts, args.remote_ts

    def ts(network: str) -> TrafficSelectorRange:
        net = ipaddress.ip_network(network)
        return TrafficSelectorRange(str(net.network_address), str(net.broadcast_address))

    return ChildSpec(
        child_sa_id=1,
        ike_sa_id=1,
        connection="static",
        child="net",
        mode="tunnel",
        spi_in=SPI_R_TO_I if initiator else SPI_I_TO_R,
        spi_out=SPI_I_TO_R if initiator else SPI_R_TO_I,
        encr=EncrId.ENCR_AES_GCM_16,
        integ=IntegId.NONE,
        esn=False,
        encr_key_in=KEY_R_TO_I if initiator else KEY_I_TO_R,
        encr_key_out=KEY_I_TO_R if initiator else KEY_R_TO_I,
        integ_key_in=b"",
        integ_key_out=b"",
        local_ts=(ts(local_net),),
        remote_ts=(ts(remote_net),),
        udp_encap=args.encap,
        local_addr=(args.local, 4500 if args.encap else 500),
        remote_addr=(args.remote, 4500 if args.encap else 500),
        replay_window=1024,
        lifetime=Lifetime(),
    )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("side", choices=["left", "right"])
    parser.add_argument("--local", required=True)
    parser.add_argument("--remote", required=True)
    parser.add_argument("--local-ts", required=True)
    parser.add_argument("--remote-ts", required=True)
    parser.add_argument("--encap", action="store_true")
    args = parser.parse_args()
    loop = asyncio.get_running_loop()
    tun = TunDevice.create("ipsec0", mtu=1400)
    routes = RouteManager(tun)
    routes.install_rules()
    datapath = DataPath(tun, routes, on_acquire=lambda c, n: None, on_limit=lambda s, c, h: None)

    def on_4500(view: memoryview, remote: tuple[str, int]) -> None:
        if classify(view) is Udp4500Kind.ESP:
            datapath.esp_received_udp(view, remote)

    udp = DrainingSocket(open_udp_socket("0.0.0.0", 4500), on_4500, "nat-t")
    raw = RawEspSocket(socket.AF_INET, datapath.esp_received_raw)
    udp.start(loop)
    raw.start(loop)
    datapath.set_sockets([udp], [raw])
    datapath.start(loop)
    routes_text = datapath.install_child(child_spec(args))
    print("static tunnel up", routes_text, "mtu", datapath.tun_mtu, flush=True)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    print("stats", datapath.stats(), flush=True)
    datapath.close()
    udp.close()
    raw.close()
    routes.close()
    tun.close()


if __name__ == "__main__":
    asyncio.run(main())
