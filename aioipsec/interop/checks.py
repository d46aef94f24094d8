"""Checks on both peers' VICI ``list-sas`` views, and on their logs.

Our daemon's control socket speaks the same vocabulary as ``swanctl --list-sas``, so one
check serves both implementations; the expected algorithm names are strongSwan's own.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aioipsec.interop.charon import child_sas
from aioipsec.interop.peers import CharonPeer, InteropPeer
from aioipsec.interop.scenario import Scenario, ScenarioRun, Side

# strongSwan's display names (list-sas "encr-alg", "integ-alg", "prf-alg", "dh-group") of the
# proposal keywords the matrix uses. This is the harness's own table, written from what
# charon prints, so that our daemon is checked against charon's vocabulary, not against itself.
_AEAD_ICV = {"8": "8", "12": "12", "16": "16", "64": "8", "96": "12", "128": "16"}
_INTEG = {
    "sha1": "HMAC_SHA1_96",
    "sha256": "HMAC_SHA2_256_128",
    "sha384": "HMAC_SHA2_384_192",
    "sha512": "HMAC_SHA2_512_256",
}
_PRF = {
    "prfsha1": "PRF_HMAC_SHA1",
    "prfsha256": "PRF_HMAC_SHA2_256",
    "prfsha384": "PRF_HMAC_SHA2_384",
    "prfsha512": "PRF_HMAC_SHA2_512",
}
_KE = {
    "x25519": "CURVE_25519",
    "curve25519": "CURVE_25519",
    "x448": "CURVE_448",
    "curve448": "CURVE_448",
    "ecp256": "ECP_256",
    "ecp384": "ECP_384",
    "ecp521": "ECP_521",
    "modp2048": "MODP_2048",
    "modp3072": "MODP_3072",
    "modp4096": "MODP_4096",
}


@dataclass(frozen=True)
class ExpectedAlgorithms:
    """What list-sas shows for the first proposal (None: not shown / not checked)."""

    encr: str
    keysize: str | None = None
    integ: str | None = None
    prf: str | None = None
    dh: str | None = None


def expected_display(proposal: str) -> ExpectedAlgorithms:
    """strongSwan's display names for the first algorithm of each kind in PROPOSAL."""
    encr: str | None = None
    keysize = integ = prf = dh = explicit_prf = None
    for keyword in proposal.split("-"):
        if match := re.fullmatch(r"aes(128|192|256)(gcm|ccm)(\d+)", keyword):
            if encr is None:
                mode = match.group(2).upper()
                encr, keysize = f"AES_{mode}_{_AEAD_ICV[match.group(3)]}", match.group(1)
        elif match := re.fullmatch(r"aes(128|192|256)(ctr)?", keyword):
            if encr is None:
                encr = "AES_CTR" if match.group(2) else "AES_CBC"
                keysize = match.group(1)
        elif keyword == "chacha20poly1305":
            encr = encr or "CHACHA20_POLY1305"
        elif keyword in _INTEG:
            integ = integ or _INTEG[keyword]
            # IKE without an explicit PRF: strongSwan derives it from the integrity algorithm.
            prf = prf or _PRF.get(f"prf{keyword}")
        elif keyword in _PRF:
            explicit_prf = explicit_prf or _PRF[keyword]
        elif keyword in _KE:
            dh = dh or _KE[keyword]
    if encr is None:
        raise ValueError(f"no cipher known to the harness in {proposal!r}")
    return ExpectedAlgorithms(encr, keysize, integ, explicit_prf or prf, dh)


def esp_counter_problems(
    scenario: Scenario,
    initiator_sas: Mapping[str, Mapping[str, Any]],
    responder_sas: Mapping[str, Mapping[str, Any]],
    echo_replies: int,
) -> list[str]:
    """The ESP counters moved on both sides: each echo reply that came back was one packet
    out and in on the initiator's Child SA and one in and out on the responder's (issue 6:
    traffic passes "with the ESP counters moving on both sides")."""
    problems: list[str] = []
    name = scenario.connection_name
    for side, sas in (("initiator", initiator_sas), ("responder", responder_sas)):
        children = child_sas(sas.get(name, {}))
        if len(children) != 1:
            continue  # check_sa_pair already reported it
        for key in ("packets-in", "packets-out"):
            try:
                value = int(children[0].get(key, 0))
            except (TypeError, ValueError):
                value = 0
            if value < echo_replies:
                problems.append(f"{side}: ESP {key} {value} after {echo_replies} echo replies")
    return problems


def check_sa_pair(
    scenario: Scenario,
    initiator_sas: Mapping[str, Mapping[str, Any]],
    responder_sas: Mapping[str, Mapping[str, Any]],
) -> list[str]:
    """Problems found comparing both peers' list-sas views (empty list: all good)."""
    problems: list[str] = []
    name = scenario.connection_name
    ike_i = initiator_sas.get(name)
    ike_r = responder_sas.get(name)
    if ike_i is None or ike_r is None:
        return [
            f"IKE SA {name} missing: initiator {list(initiator_sas)}, "
            f"responder {list(responder_sas)}"
        ]
    for side, ike in (("initiator", ike_i), ("responder", ike_r)):
        if ike.get("state") != "ESTABLISHED":
            problems.append(f"{side}: IKE SA state {ike.get('state')}")
        keys = ["local-port"]
        if side == "initiator" or not scenario.nat:
            keys.append("remote-port")  # the responder sees whatever port the NAT picked
        port = "4500" if scenario.expects_udp_encap else "500"
        for key in keys:
            if ike.get(key) != port:
                problems.append(f"{side}: IKE {key} {ike.get(key)} (expected {port})")
    if (ike_i.get("initiator-spi"), ike_i.get("responder-spi")) != (
        ike_r.get("initiator-spi"),
        ike_r.get("responder-spi"),
    ):
        problems.append("IKE SPIs differ between the peers")
    children_i, children_r = child_sas(ike_i), child_sas(ike_r)
    if len(children_i) != 1 or len(children_r) != 1:
        problems.append(f"expected one Child SA each, got {len(children_i)}/{len(children_r)}")
        return problems
    child_i, child_r = children_i[0], children_r[0]
    ike_expected = expected_display(scenario.ike_proposals[0])
    for side, ike in (("initiator", ike_i), ("responder", ike_r)):
        problems += _algorithm_problems(f"{side} IKE", ike, ike_expected, with_prf=True)
    # The first Child SA is keyed from IKE_AUTH without a key exchange: no dh-group to show.
    esp_expected = dataclasses.replace(expected_display(scenario.esp_proposals[0]), dh=None)
    for side, child in (("initiator", child_i), ("responder", child_r)):
        if child.get("state") != "INSTALLED":
            problems.append(f"{side}: Child SA state {child.get('state')}")
        encap = "yes" if scenario.expects_udp_encap else "no"
        if child.get("encap", "no") != encap:
            problems.append(f"{side}: Child SA encap={child.get('encap')}, expected {encap}")
        if child.get("protocol") != "ESP" or child.get("mode") != scenario.mode.upper():
            problems.append(f"{side}: {child.get('protocol')}/{child.get('mode')}")
        problems += _algorithm_problems(f"{side} ESP", child, esp_expected, with_prf=False)
    if child_i.get("spi-in") != child_r.get("spi-out") or child_i.get("spi-out") != child_r.get(
        "spi-in"
    ):
        problems.append(
            f"SPIs not crosswise: initiator in/out {child_i.get('spi-in')}/"
            f"{child_i.get('spi-out')}, responder in/out {child_r.get('spi-in')}/"
            f"{child_r.get('spi-out')}"
        )
    for side, child, local, remote in (
        ("initiator", child_i, scenario.initiator_subnet, scenario.responder_subnet),
        ("responder", child_r, scenario.responder_subnet, scenario.initiator_subnet),
    ):
        # Compared as networks: charon prints a host as 10.1.0.1/32, our daemon as 10.1.0.1.
        if _networks(child.get("local-ts")) != [ipaddress.ip_network(local)] or _networks(
            child.get("remote-ts")
        ) != [ipaddress.ip_network(remote)]:
            problems.append(f"{side} TS {child.get('local-ts')} === {child.get('remote-ts')}")
    return problems


def _networks(selectors: Any) -> list[Any]:
    try:
        return [ipaddress.ip_network(s) for s in selectors or ()]
    except ValueError:  # a port or protocol part: not what these rows configure
        return list(selectors or ())


def _algorithm_problems(
    what: str, sa: Mapping[str, Any], expected: ExpectedAlgorithms, *, with_prf: bool
) -> list[str]:
    pairs = [("encr-alg", expected.encr), ("encr-keysize", expected.keysize)]
    pairs += [("integ-alg", expected.integ), ("dh-group", expected.dh)]
    if with_prf:
        pairs.append(("prf-alg", expected.prf))
    return [
        f"{what}: {key} {sa.get(key)!r}, expected {value!r}"
        for key, value in pairs
        if value is not None and sa.get(key) != value
    ]


def _fragment_problems(peers: Mapping[Side, InteropPeer]) -> list[str]:
    problems = []
    for side, peer in peers.items():
        if not isinstance(peer, CharonPeer):
            continue
        log = peer.charon.log_text()
        if "splitting IKE message" not in log:
            problems.append(f"{side} (charon) sent no IKE fragments")
        if "reassembled fragmented IKE message" not in log:
            problems.append(f"{side} (charon) received no IKE fragments")
    return problems


def full_log(peer: InteropPeer) -> str:
    """The whole log of PEER (charon's file log, or our daemon's JSON log)."""
    if isinstance(peer, CharonPeer):
        return peer.charon.log_text()
    path = getattr(peer, "log_path", None)
    return Path(path).read_text(errors="replace") if path and Path(path).exists() else ""


_CHARON_NOTIFY_NAMES = {
    "NO_PROPOSAL_CHOSEN": "N(NO_PROP)",
    "TS_UNACCEPTABLE": "N(TS_UNACCEPT)",
    "AUTHENTICATION_FAILED": "N(AUTH_FAILED)",
}


def _check_expected_failure(run: ScenarioRun, peers: Mapping[Side, InteropPeer]) -> None:
    """The exchange must have failed with scenario.expect_failure, visibly on both sides."""
    scenario = run.scenario
    notify = scenario.expect_failure
    assert notify is not None
    name = scenario.connection_name
    deadline = time.monotonic() + 5.0
    while True:
        logs = {side: full_log(peer) for side, peer in peers.items()}
        seen = [
            notify in text or _CHARON_NOTIFY_NAMES.get(notify, notify) in text
            for text in logs.values()
        ]
        if all(seen) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    for side, text in logs.items():
        # charon's message dumps abbreviate the notify: N(NO_PROP), N(TS_UNACCEPT).
        short = _CHARON_NOTIFY_NAMES.get(notify, notify)
        notify_seen = short if short in text and notify not in text else notify
        if notify_seen not in text:
            run.problems.append(f"{side} ({peers[side].implementation}): no {notify} in its log")
        else:
            line = next(x for x in text.splitlines() if notify_seen in x)
            run.notes.append(f"{side} ({peers[side].implementation}): {line.strip()[:300]}")
    for side, peer in peers.items():
        ike = peer.list_sas().get(name)
        if ike is None:
            continue
        if notify == "NO_PROPOSAL_CHOSEN" and ike.get("state") == "ESTABLISHED":
            run.problems.append(f"{side}: IKE SA established despite {notify}")
        installed = [c for c in child_sas(ike) if c.get("state") == "INSTALLED"]
        if installed:
            run.problems.append(f"{side}: Child SA installed despite {notify}")
