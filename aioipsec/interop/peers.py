"""The two implementations as interop peers, and each side's configuration.

:func:`swanctl_conf` writes strongSwan's swanctl.conf for one side; charon loads it over
VICI, our daemon reads the very same text through ``--swanctl-conf``. :func:`make_peer`
returns charon (:class:`CharonPeer`) or our daemon; which daemon peer is the caller's
choice (``aioipsec_factory``, default :func:`aioipsec.interop.ours.aioipsec_peer`), passed
in rather than set in a module global.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from aioipsec.interop.charon import Charon, swanctl_section
from aioipsec.interop.ours import aioipsec_peer
from aioipsec.interop.scenario import (
    DPD_DELAY,
    LIFETIME,
    OVER_TIME,
    RAND_TIME,
    Scenario,
    Side,
    Topology,
)
from aioipsec.interop.tokens import token_peer
from aioipsec.netns import Lab, Namespace


def swanctl_conf(
    scenario: Scenario, topology: Topology, side: Side, cert_file: str | None = None
) -> str:
    """strongSwan swanctl.conf for SIDE of SCENARIO (also the input of our daemon's hook).

    With ``auth = pubkey``, CERT_FILE is SIDE's certificate in ``x509/`` (see
    :func:`install_credentials`); the CA in ``x509ca/`` is trusted as swanctl does.
    """
    initiating = side == "initiator"
    local_addr = topology.initiator_outer if initiating else topology.responder_outer
    remote_addr = topology.responder_outer if initiating else "%any"
    if scenario.collision and not initiating:
        remote_addr = topology.initiator_outer
    local_subnet = scenario.initiator_subnet if initiating else scenario.responder_subnet
    remote_subnet = (
        (scenario.initiator_remote_ts or scenario.responder_subnet)
        if initiating
        else scenario.initiator_subnet
    )
    proposals = scenario.ike_proposals
    if not initiating and scenario.responder_ike_proposals is not None:
        proposals = scenario.responder_ike_proposals
    other: Side = "responder" if initiating else "initiator"
    name = scenario.connection_name
    verbs = {a.partition(":")[2] for a in scenario.actions if a.startswith(f"{side}:")}
    other_verbs = {a.partition(":")[2] for a in scenario.actions if a.startswith(f"{other}:")}
    connection: dict[str, Any] = {
        "version": 2,
        "local_addrs": local_addr,
        "remote_addrs": remote_addr,
        "proposals": list(proposals),
        "encap": scenario.encap,
        "local": {"auth": scenario.auth, "id": scenario.identity(side)},
        "remote": {"auth": scenario.auth, "id": scenario.identity(other)},
        "children": {
            name: {
                "local_ts": local_subnet,
                "remote_ts": remote_subnet,
                "esp_proposals": list(scenario.esp_proposals),
                "mode": scenario.mode,
            }
        },
    }
    if "expire-ike" in verbs:
        connection["rekey_time"] = LIFETIME
    if "expire-reauth" in verbs:
        connection["reauth_time"] = LIFETIME
        connection["rekey_time"] = "0"
    if verbs & {"expire-ike", "expire-reauth"}:
        # Explicit, because charon's default (10 % of 4 s) rounds down to 0 s: its hard
        # lifetime then fires together with the rekey and deletes the new IKE SA.
        connection["over_time"] = OVER_TIME
        connection["rand_time"] = RAND_TIME
    if "expire-child" in verbs:
        connection["children"][name]["rekey_time"] = LIFETIME
    if "vanish" in other_verbs:
        connection["dpd_delay"] = DPD_DELAY
    if scenario.auth == "pubkey":
        if cert_file is None:
            raise ValueError("auth = pubkey needs the certificate file name")
        connection["local"]["certs"] = cert_file
        if scenario.revocation and scenario.implementation(side) == "aioipsec":
            # The strongSwan peer's certificate names its CRL or OCSP responder: a good
            # status is required (aioipsec/interop/revocation.py serves them).
            connection["remote"]["revocation"] = "strict"
        secrets_text = ""
    else:
        secrets = {
            "ike-interop": {
                "id-1": scenario.initiator_id,
                "id-2": scenario.responder_id,
                "secret": f'"{scenario.psk}"',
            }
        }
        secrets_text = swanctl_section("secrets", secrets) + "\n"
    return (
        "# written by aioipsec.interop.peers for scenario "
        f"{scenario.name} ({side})\n"
        + swanctl_section("connections", {name: connection})
        + "\n"
        + secrets_text
    )


class InteropPeer(Protocol):
    """What the harness needs from either implementation."""

    implementation: str

    def start(self) -> None: ...

    def load(self, swanctl_conf_text: str) -> None: ...

    def initiate(self, child: str, ike: str) -> None: ...

    def list_sas(self) -> dict[str, dict[str, Any]]: ...

    def rekey(self, *, ike: str, child: str | None = None) -> None: ...

    def terminate(self, ike: str) -> None: ...

    def log_tail(self, lines: int = 40) -> str: ...

    def stop(self) -> None: ...


class CharonPeer:
    """strongSwan charon (kernel-libipsec) as an interop peer."""

    implementation = "charon"

    def __init__(
        self,
        lab: Lab,
        namespace: Namespace,
        workdir: Path,
        *,
        key_debug: bool = False,
        keep_alive: float | None = None,
    ):
        extra = f"    keep_alive = {keep_alive:g}s\n" if keep_alive is not None else ""
        self.charon = Charon(
            lab, namespace, workdir, key_debug=key_debug, extra_charon_settings=extra
        )

    def start(self) -> None:
        self.charon.start()

    def load(self, swanctl_conf_text: str) -> None:
        self.charon.load(swanctl_conf_text)

    def initiate(self, child: str, ike: str) -> None:
        self.charon.initiate(child, ike)

    def list_sas(self) -> dict[str, dict[str, Any]]:
        return self.charon.list_sas()

    def rekey(self, *, ike: str, child: str | None = None) -> None:
        if child is not None:
            self.charon.swanctl("--rekey", "--child", child)
        else:
            self.charon.swanctl("--rekey", "--ike", ike)

    def terminate(self, ike: str) -> None:
        self.charon.swanctl("--terminate", "--ike", ike, "--timeout", "10", timeout=15)

    def log_tail(self, lines: int = 40) -> str:
        return self.charon.log_tail(lines)

    def stop(self) -> None:
        self.charon.stop()


PeerFactory = Callable[[Lab, Namespace, Path, Scenario, Side], InteropPeer]


class PeerUnavailable(RuntimeError):
    pass


def make_peer(
    lab: Lab,
    namespace: Namespace,
    workdir: Path,
    scenario: Scenario,
    side: Side,
    *,
    key_debug: bool = False,
    aioipsec_factory: PeerFactory = aioipsec_peer,
) -> InteropPeer:
    """The peer for SIDE; ``key_debug`` makes charon log derived keys (ike/enc level 4).

    ``aioipsec_factory`` makes the peer of an ``"aioipsec"`` side (docs/interop-harness.md,
    "Our daemon as a peer"): the default runs ``python -m aioipsec.daemon -c daemon.toml
    --swanctl-conf swanctl.conf`` in the namespace, driven over its control socket; pass
    another to run the daemon differently (other options, a wrapper, a profiler).
    """
    implementation = scenario.implementation(side)
    if implementation == "charon":
        return CharonPeer(
            lab, namespace, workdir, key_debug=key_debug, keep_alive=scenario.keep_alive
        )
    if implementation != "aioipsec":
        raise PeerUnavailable(f"unknown implementation {implementation!r}")
    if scenario.token and aioipsec_factory is aioipsec_peer:
        aioipsec_factory = token_peer  # our key in a SoftHSM2 token or an swtpm
    return aioipsec_factory(lab, namespace, workdir, scenario, side)
