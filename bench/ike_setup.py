"""Benchmark (not a test): CPU time per complete IKE_SA_INIT + IKE_AUTH with one Child SA,
PSK, x25519, aes256gcm16/prfsha256, both engines in one process, in memory.

    python -m bench.ike_setup [--count N] [--proposal STR]

A tool run by people. It lives in ``bench/``, not in ``ikev2``, because it reads a clock
(``time.process_time``) and the engine is sans-I/O: nothing in ``ikev2`` reads one.
"""

from __future__ import annotations

import argparse
import time

from ikev2.config import AuthConfig, ChildConfig, IkeConfig
from ikev2.dispatcher import Dispatcher
from ikev2.events import ChildSaEstablished

PSK = b"benchmark pre-shared key, long enough"
ADDR_I = ("192.0.2.1", 500)
ADDR_R = ("192.0.2.2", 500)


def _config(
    local: tuple[str, int],
    remote: tuple[str, int],
    local_id: str,
    remote_id: str,
    proposal: str,
    local_ts: str,
    remote_ts: str,
) -> IkeConfig:
    return IkeConfig(
        name="bench",
        local_addrs=[local[0]],
        remote_addrs=[remote[0]],
        proposals=[proposal],
        local=AuthConfig(auth="psk", id=local_id),
        remote=AuthConfig(auth="psk", id=remote_id),
        children=[
            ChildConfig(
                name="net",
                local_ts=[local_ts],
                remote_ts=[remote_ts],
                esp_proposals=["aes256gcm16"],
            )
        ],
    )


def run(count: int, proposal: str) -> tuple[float, int]:
    """Set up ``count`` IKE SAs; returns (CPU seconds, datagrams exchanged)."""
    initiator = Dispatcher(
        [_config(ADDR_I, ADDR_R, "i.example", "r.example", proposal, "10.1.0.0/16", "10.2.0.0/16")],
        lambda local, remote: PSK,
    )
    responder = Dispatcher(
        [_config(ADDR_R, ADDR_I, "r.example", "i.example", proposal, "10.2.0.0/16", "10.1.0.0/16")],
        lambda local, remote: PSK,
    )
    datagrams = 0
    established = 0
    start = time.process_time()
    for _ in range(count):
        ike_sa_id = initiator.initiate("bench", "net", now=0.0)
        while True:
            out = initiator.datagrams_to_send(0.0)
            for datagram in out:
                responder.receive_datagram(
                    datagram.data, datagram.local_addr, datagram.remote_addr, 0.0
                )
            back = responder.datagrams_to_send(0.0)
            for datagram in back:
                initiator.receive_datagram(
                    datagram.data, datagram.local_addr, datagram.remote_addr, 0.0
                )
            datagrams += len(out) + len(back)
            if not out and not back:
                break
        while (event := initiator.next_event()) is not None:
            established += isinstance(event, ChildSaEstablished)
        while responder.next_event() is not None:
            pass
        # Drop the state without a Delete exchange so the tables stay small.
        initiator.ike_sa(ike_sa_id).destroy(0.0, "benchmark")
        for info in responder.sas():
            responder.ike_sa(info.ike_sa_id).destroy(0.0, "benchmark")
        initiator.datagrams_to_send(0.0)
        responder.datagrams_to_send(0.0)
    elapsed = time.process_time() - start
    if established != count:
        raise SystemExit(f"only {established} of {count} setups completed")
    return elapsed, datagrams


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--proposal", default="aes256gcm16-prfsha256-x25519")
    args = parser.parse_args(argv)
    run(10, args.proposal)  # warm-up (imports, caches)
    elapsed, datagrams = run(args.count, args.proposal)
    per_setup = elapsed / args.count
    print(
        f"{args.count} IKE_SA_INIT+IKE_AUTH setups ({args.proposal}, PSK, one Child SA), "
        f"both sides in one process: {per_setup * 1e3:.2f} ms CPU per setup "
        f"({datagrams // args.count} datagrams each, {1 / per_setup:.0f} setups/s per core)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
