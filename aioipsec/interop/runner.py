"""One scenario end to end: topology, both peers, initiate, checks, traffic, actions.

Cleanup (namespaces, processes, captures) is the :class:`aioipsec.netns.Lab`'s job.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

from aioipsec.interop import revocation
from aioipsec.interop.charon import child_sas
from aioipsec.interop.checks import (
    _check_expected_failure,
    _fragment_problems,
    check_sa_pair,
    esp_counter_problems,
    full_log,
)
from aioipsec.interop.ours import aioipsec_peer
from aioipsec.interop.peers import InteropPeer, PeerFactory, make_peer, swanctl_conf
from aioipsec.interop.pki import Pki
from aioipsec.interop.scenario import Scenario, ScenarioRun, Side, Topology
from aioipsec.interop.topology import build_topology
from aioipsec.interop.traffic import (
    _count_keepalives,
    _iperf,
    _lost_echoes,
    _rebind,
    _start_background_ping,
    ping_through,
)
from aioipsec.netns import Lab, add_random_loss


def _side(name: str) -> Side:
    """An action's side prefix ("initiator:rekey-ike"), checked instead of trusted."""
    if name not in ("initiator", "responder"):
        raise ValueError(f"action side must be 'initiator' or 'responder', not {name!r}")
    return cast(Side, name)


def _wait_established(peer: InteropPeer, name: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    sas: dict[str, Any] = {}
    while time.monotonic() < deadline:
        sas = peer.list_sas()
        ike = sas.get(name, {})
        if ike.get("state") == "ESTABLISHED" and any(
            c.get("state") == "INSTALLED" for c in child_sas(ike)
        ):
            return sas
        time.sleep(0.05)
    return sas


def _sa_keys(sas: Mapping[str, Any], name: str) -> tuple[Any, ...]:
    """What changes when an SA is rekeyed: IKE SPIs and the Child SAs' SPIs."""
    ike = sas.get(name, {})
    children = tuple(sorted((c.get("spi-in"), c.get("spi-out")) for c in child_sas(ike)))
    return ike.get("initiator-spi"), ike.get("responder-spi"), children


def _installed(sas: Mapping[str, Any], name: str) -> bool:
    ike = sas.get(name, {})
    children = child_sas(ike)
    return (
        ike.get("state") == "ESTABLISHED"
        and len(children) == 1
        and children[0].get("state") == "INSTALLED"
    )


def _run_action(
    run: ScenarioRun, topology: Topology, peers: Mapping[Side, InteropPeer], action: str
) -> None:
    scenario = run.scenario
    name = scenario.connection_name
    side, _, verb = action.partition(":")
    actor = peers[_side(side)]
    before = {s: _sa_keys(p.list_sas(), name) for s, p in peers.items()}
    started = time.monotonic()
    if verb.startswith("expire-") or verb == "vanish":
        _run_passive_action(run, topology, peers, action, before, started)
        return
    try:
        if verb == "terminate":
            actor.terminate(name)
        else:
            actor.rekey(ike=name, child=name if verb == "rekey-child" else None)
    except Exception as exc:
        run.problems.append(f"{action}: {exc}")
        return
    deadline = started + scenario.establish_timeout
    views: dict[Side, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        views = {s: p.list_sas() for s, p in peers.items()}
        if verb == "terminate":
            if all(name not in v for v in views.values()):
                run.action_seconds[action] = time.monotonic() - started
                return
        elif all(_installed(v, name) and _sa_keys(v, name) != before[s] for s, v in views.items()):
            break
        time.sleep(0.05)
    else:
        run.problems.append(
            f"{action}: not done on both sides after {scenario.establish_timeout} s: "
            + "; ".join(f"{s}: {_brief(v, name)}" for s, v in views.items())
        )
        return
    run.action_seconds[action] = time.monotonic() - started
    problems = check_sa_pair(scenario, views["initiator"], views["responder"])
    run.problems += [f"after {action}: {p}" for p in problems]
    keys = {s: _sa_keys(v, name) for s, v in views.items()}
    if verb == "rekey-child" and any(k[:2] != before[s][:2] for s, k in keys.items()):
        run.problems.append(f"{action}: the IKE SPIs changed too")
    if verb == "rekey-ike" and any(k[2] != before[s][2] for s, k in keys.items()):
        run.problems.append(f"{action}: the Child SA changed too (it must move to the new IKE SA)")
    ping = ping_through(topology, scenario.ping_count)
    run.pings_after_actions[action] = ping
    if ping.received == 0 or (not scenario.loss_percent and ping.received != ping.transmitted):
        run.problems.append(f"ping after {action}: {ping.received}/{ping.transmitted}")


def _installed_spis(sas: Mapping[str, Any], name: str) -> set[tuple[Any, Any]]:
    ike = sas.get(name, {})
    return {
        (c.get("spi-in"), c.get("spi-out")) for c in child_sas(ike) if c.get("state") == "INSTALLED"
    }


def _run_passive_action(
    run: ScenarioRun,
    topology: Topology,
    peers: Mapping[Side, InteropPeer],
    action: str,
    before: Mapping[Side, tuple[Any, ...]],
    started: float,
) -> None:
    """Wait for what a lifetime or a dead peer makes the peers do by themselves."""
    scenario = run.scenario
    name = scenario.connection_name
    side, _, verb = action.partition(":")
    survivor: Side = "responder" if side == "initiator" else "initiator"
    if verb == "vanish":
        gone = topology.namespace(_side(side))
        for hook in ("input", "output"):
            add_random_loss(gone, 100, udp_ports=(500, 4500), hook=hook, table=f"gone_{hook}")
    # Lifetimes are 4 s (+ jitter); DPD: 1 s delay plus the retransmissions (~7 s).
    deadline = started + scenario.establish_timeout + 10
    views: dict[Side, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        if verb == "vanish":
            view = peers[survivor].list_sas()
            if name not in view:
                run.action_seconds[action] = time.monotonic() - started
                return
            views = {survivor: view}
        else:
            views = {s: p.list_sas() for s, p in peers.items()}
            done = True
            for s, v in views.items():
                ike = v.get(name, {})
                new_children = _installed_spis(v, name) - set(before[s][2])
                if ike.get("state") != "ESTABLISHED" or not _installed_spis(v, name):
                    done = False
                if verb != "expire-ike" and not new_children:
                    done = False
                if verb != "expire-child" and (
                    (ike.get("initiator-spi"), ike.get("responder-spi")) == before[s][:2]
                ):
                    done = False
            if done:
                break
        time.sleep(0.1)
    else:
        run.problems.append(
            f"{action}: not done after {deadline - started:.0f} s: "
            + "; ".join(f"{s}: {_brief(v, name)}" for s, v in views.items())
        )
        return
    run.action_seconds[action] = time.monotonic() - started
    # The new Child SA must be the same on both sides (crosswise SPIs).
    spis_i = _installed_spis(views["initiator"], name)
    spis_r = {(out, in_) for in_, out in _installed_spis(views["responder"], name)}
    if not spis_i & spis_r:
        run.problems.append(f"after {action}: no Child SA with crosswise SPIs: {spis_i} {spis_r}")
    ping = ping_through(topology, scenario.ping_count)
    run.pings_after_actions[action] = ping
    if ping.received != ping.transmitted:
        run.problems.append(f"ping after {action}: {ping.received}/{ping.transmitted}")


def _brief(sas: Mapping[str, Any], name: str) -> str:
    ike = sas.get(name)
    if ike is None:
        return "no IKE SA"
    children = [f"{c.get('state')} {c.get('spi-in')}/{c.get('spi-out')}" for c in child_sas(ike)]
    return f"IKE {ike.get('state')} {ike.get('initiator-spi')}, children {children}"


def run_scenario(
    lab: Lab,
    scenario: Scenario,
    workdir: Path,
    *,
    key_debug: bool = False,
    aioipsec_factory: PeerFactory | None = None,
) -> ScenarioRun:
    """Build, configure, start, initiate, ping, check. Cleanup is the Lab's job.

    ``key_debug``: charon peers log the keys they derive (to debug a key mismatch; the logs
    then hold secrets). ``aioipsec_factory``: how to make our daemon's peer (see
    :func:`make_peer`; None: the default)."""
    run = ScenarioRun(scenario)
    topology = build_topology(lab, scenario)
    peers: dict[Side, InteropPeer] = {}
    pki = Pki(workdir / "pki", scenario.key_type) if scenario.auth == "pubkey" else None
    if pki is not None and scenario.revocation:
        revocation.prepare_certificate(scenario, topology, pki)
        run.notes.append(
            f"revocation source: {revocation.serve(lab, scenario, topology, pki, workdir)}"
        )
    for side in ("initiator", "responder"):
        peer = make_peer(
            lab,
            topology.namespace(side),
            workdir / side,
            scenario,
            side,
            key_debug=key_debug,
            aioipsec_factory=aioipsec_factory or aioipsec_peer,
        )
        cert_file = pki.install(scenario.identity(side), workdir / side) if pki else None
        peer.start()
        peer.load(swanctl_conf(scenario, topology, side, cert_file))
        peers[side] = peer
    name = scenario.connection_name
    # Every row records the responder's outer link (IKE and ESP); kept with the logs and our
    # daemon's key tables when the row fails (wire.pcap + */keys/ open in Wireshark).
    wire = lab.capture(
        topology.responder, topology.interfaces["responder"], workdir / "wire.pcap",
        "udp or esp or icmp or icmp6",
    )  # fmt: skip
    capture = None
    if scenario.nat_rebind:
        capture = lab.capture(
            topology.responder, topology.interfaces["responder"], workdir / "rebind.pcap",
            "udp port 4500",
        )  # fmt: skip
    started = time.monotonic()
    initiators: list[Side] = ["initiator", "responder"] if scenario.collision else ["initiator"]
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        outcomes = {side: pool.submit(peers[side].initiate, name, name) for side in initiators}
    for side, outcome in outcomes.items():
        try:
            outcome.result()
        except Exception as exc:  # the failure goes into the report, with both logs
            if scenario.expect_failure is None and not scenario.collision:
                run.problems.append(f"initiate failed: {exc}")
            elif scenario.collision:
                run.notes.append(f"{side} initiate: {str(exc)[:200]}")
    if scenario.expect_failure is not None:
        _check_expected_failure(run, peers)
        for side, peer in peers.items():
            run.logs[side] = peer.log_tail(60)
        wire.stop()
        return run
    run.initiator_sas = _wait_established(peers["initiator"], name, scenario.establish_timeout)
    run.establish_seconds = time.monotonic() - started
    run.responder_sas = _wait_established(peers["responder"], name, 5.0)
    if scenario.collision:
        # Two IKE SAs of one name may exist (RFC 7296 sec. 2.8 allows duplicates); list-sas
        # views merge by name, so the check is: a Child SA with crosswise SPIs, and traffic.
        time.sleep(1.0)  # let the peers settle the duplicates they delete
        run.initiator_sas = peers["initiator"].list_sas()
        run.responder_sas = peers["responder"].list_sas()
        spis_i = _installed_spis(run.initiator_sas, name)
        spis_r = {(o, i) for i, o in _installed_spis(run.responder_sas, name)}
        run.notes.append(f"after the collision: initiator {spis_i}, responder (out/in) {spis_r}")
        if not spis_i or not spis_r:
            run.problems.append("collision: no installed Child SA on one side")
    else:
        run.problems += check_sa_pair(scenario, run.initiator_sas, run.responder_sas)
    if scenario.expect_ike_fragments:
        run.problems += _fragment_problems(peers)
    if not run.problems:
        run.ping = ping_through(topology, scenario.ping_count)
        if scenario.loss_percent == 0 and run.ping.received != run.ping.transmitted:
            run.problems.append(f"ping: {run.ping.received}/{run.ping.transmitted} received")
        elif run.ping.received == 0:
            run.problems.append("ping: nothing came back through the tunnel")
        if capture is not None and not run.problems:
            _rebind(run, topology, peers, capture)
        if scenario.keep_alive is not None and scenario.nat and not run.problems:
            _count_keepalives(run, lab, topology, workdir)
        if scenario.iperf_seconds > 0 and not run.problems:
            _iperf(run, lab, topology, workdir)
        # The views after the pings (counters), before any action changes or deletes the SAs.
        run.initiator_sas = peers["initiator"].list_sas()
        run.responder_sas = peers["responder"].list_sas()
        if run.ping is not None and not run.problems and not scenario.collision:
            run.problems += esp_counter_problems(
                scenario, run.initiator_sas, run.responder_sas, run.ping.received
            )
        background = None
        if scenario.ping_during_actions and not run.problems:
            background = _start_background_ping(lab, topology, workdir / "ping-during.log")
        for action in scenario.actions:
            if run.problems:
                break
            _run_action(run, topology, peers, action)
        if background is not None:
            replies, lost = _lost_echoes(background, workdir / "ping-during.log")
            run.notes.append(f"ping during the actions: {replies} replies, lost {lost}")
            if lost or not replies:
                run.problems.append(
                    f"echoes lost during the actions: icmp_seq {lost} ({replies} replies)"
                )
    if scenario.revocation and not scenario.revoked and not run.problems:
        ours = peers["initiator" if scenario.initiator == "aioipsec" else "responder"]
        url = revocation.source_url(scenario, topology)
        if not any(
            "revocation checked" in line and "good" in line and url in line
            for line in full_log(ours).splitlines()
        ):
            run.problems.append(f"our daemon did not log a good status from {url}")
    for side, peer in peers.items():
        run.logs[side] = peer.log_tail(60)
    wire.stop()
    return run
