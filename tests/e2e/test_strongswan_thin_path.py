"""The thin path: our daemon <-> a real strongSwan charon (kernel-libipsec), ping through.

moon (aioipsec, 10.1.0.0/24) === 192.168.50.0/24 veth === sun (charon 5.9.8, 10.2.0.0/24).
PSK, IKE aes256gcm16-prfsha256-x25519, ESP aes256gcm16, tunnel mode. kernel-libipsec always
uses UDP encapsulation on 4500 (it acts as if a NAT were present), so this exercises NAT
detection, the switch to 4500, the port-4500 demultiplexing and ESP-in-UDP on our side.

Both roles: we initiate, and charon initiates. Checked on both sides: the SAs (ours through
the control socket with VICI key names, charon's over VICI), crosswise SPIs, ping through
our TUN device, our ESP counters, and a capture of the veth that holds only IKE and
ESP-in-UDP (no ICMP in clear).
"""

from __future__ import annotations

import subprocess

import pytest

from aioipsec.interop.charon import Charon, swanctl_section

from .helpers import PSK, OurDaemon, Side, assert_ping, child_of, requirements_or_skip, toml_config

pytestmark = [
    pytest.mark.netns,
    pytest.mark.interop,
    pytest.mark.timeout(120),
    pytest.mark.needs("charon"),
]

MOON = Side(
    name="thin",
    outer="192.168.50.1",
    inner="10.1.0.1",
    subnet="10.1.0.0/24",
    peer_outer="192.168.50.2",
    peer_subnet="10.2.0.0/24",
    local_id="moon.example",
    remote_id="sun.example",
)


def charon_conf(child_rekey: str | None = None, ike_rekey: str | None = None) -> str:
    connection = {
        "local_addrs": MOON.peer_outer,
        "remote_addrs": MOON.outer,
        "proposals": "aes256gcm16-prfsha256-x25519",
        "local": {"auth": "psk", "id": MOON.remote_id},
        "remote": {"auth": "psk", "id": MOON.local_id},
        "children": {
            "net": {
                "local_ts": MOON.peer_subnet,
                "remote_ts": MOON.subnet,
                "esp_proposals": "aes256gcm16",
            }
        },
    }
    # With short lifetimes strongSwan's defaults (life = 1.1 x rekey, over_time = 10 %)
    # leave no room for a rekey exchange: give explicit margins, no jitter.
    if child_rekey is not None:
        connection["children"]["net"].update(
            {"rekey_time": child_rekey, "life_time": "20s", "rand_time": "0s"}
        )
    if ike_rekey is not None:
        connection.update({"rekey_time": ike_rekey, "over_time": "20s", "rand_time": "0s"})
    secrets = {"ike-thin": {"id-1": MOON.local_id, "id-2": MOON.remote_id, "secret": PSK}}
    return (
        swanctl_section("connections", {"thin": connection}) + "\n"
        + swanctl_section("secrets", secrets) + "\n"
    )  # fmt: skip


def wire_protocols(pcap) -> list[str]:
    out = subprocess.run(
        ["tshark", "-n", "-r", str(pcap), "-Y", "ip", "-T", "fields", "-e", "frame.protocols"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    return [line for line in out.splitlines() if line.strip()]


@pytest.mark.parametrize("initiator", ["aioipsec", "charon"])
def test_thin_path_with_strongswan(lab, workdir, initiator):
    requirements_or_skip("tcpdump", "tshark")
    moon, sun = lab.namespace("moon"), lab.namespace("sun")
    moon_dev, _ = lab.veth(moon, f"{MOON.outer}/24", sun, f"{MOON.peer_outer}/24")
    moon.add_address("lo", f"{MOON.inner}/32")
    sun.add_address("lo", "10.2.0.1/32")

    charon = Charon(lab, sun, workdir / "charon")
    charon.start()
    charon.load(charon_conf())
    ours = OurDaemon(lab, moon, toml_config(MOON, workdir), workdir)
    ours.start()

    capture = lab.capture(moon, moon_dev, workdir / "wire.pcap", "ip")
    try:
        if initiator == "aioipsec":
            result = ours.call("initiate", child="net", timeout=30)
            assert result["ike"] == "thin"
        else:
            charon.initiate("net", "thin")
        ike = ours.wait_for_child("thin")
        theirs = charon.wait_for_sa("thin")
        assert_ping(moon, MOON.inner, "10.2.0.1", count=4)
    except BaseException:
        print("--- our log ---\n" + ours.log_tail(80))
        print("--- charon log ---\n" + charon.log_tail(80))
        raise
    finally:
        capture.stop()

    # Our view, in VICI key names.
    assert ike["state"] == "ESTABLISHED"
    assert ike["remote-host"] == MOON.peer_outer
    assert ike["remote-port"] == "4500"
    assert ike.get("initiator", "no") == ("yes" if initiator == "aioipsec" else "no")
    assert ike["encr-alg"] == "AES_GCM_16" and ike["encr-keysize"] == "256"
    assert ike["prf-alg"] == "PRF_HMAC_SHA2_256" and ike["dh-group"] == "CURVE_25519"
    child = child_of(ours.sas()["thin"])
    assert child["encap"] == "yes" and child["mode"] == "TUNNEL"
    assert int(child["packets-out"]) >= 4 and int(child["packets-in"]) >= 4

    # charon's view agrees: same IKE SPIs, crosswise Child SPIs, our packets counted.
    theirs = charon.list_sas("thin")["thin"]
    assert theirs["initiator-spi"] == ike["initiator-spi"]
    assert theirs["responder-spi"] == ike["responder-spi"]
    their_child = next(iter(theirs["child-sas"].values()))
    assert their_child["spi-in"] == child["spi-out"]
    assert their_child["spi-out"] == child["spi-in"]
    assert their_child["encap"] == "yes"
    assert int(their_child["packets-in"]) >= 4

    # Our listing speaks VICI: every key we use, charon uses for the same SA (same names,
    # same value styles: SPIs in hex, numbers as decimal strings).
    ours_now = ours.sas()["thin"]
    # (VICI adds these only when true, so charon's listing of this SA may lack them.)
    conditional = {"initiator", "nat-local", "nat-remote", "nat-fake", "nat-any"}
    assert set(ours_now) - {"child-sas"} <= set(theirs) | conditional, set(ours_now) - set(theirs)
    assert set(child) <= set(their_child) | {"local-ts", "remote-ts"}, set(child) - set(their_child)
    for key in ("encr-alg", "encr-keysize", "prf-alg", "dh-group", "state", "version"):
        assert ours_now[key] == theirs[key], (key, ours_now[key], theirs[key])
    for key in ("encr-alg", "encr-keysize", "mode", "protocol", "encap", "state"):
        assert child[key] == their_child[key], (key, child[key], their_child[key])
    assert child["local-ts"] == their_child["remote-ts"]
    assert child["remote-ts"] == their_child["local-ts"]

    # The wire: IKE and ESP-in-UDP only.
    frames = wire_protocols(workdir / "wire.pcap")
    assert any(":udp:udpencap:esp" in f for f in frames), frames
    for frame in frames:
        assert frame.endswith((":isakmp", ":esp")), f"unexpected frame on the wire: {frame}"

    # SIGTERM: we delete the IKE SA, charon sees it go, we exit 0.
    assert ours.stop() == 0
    assert "ipsec0" not in moon.run("ip", "-o", "link").stdout
    assert charon.list_sas() == {}, "charon still has the SA: our DELETE did not arrive"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("rekeyer", ["charon", "aioipsec"])
def test_rekeys_under_ping_with_strongswan(lab, workdir, rekeyer):
    """One side rekeys the Child SA every 2 s and the IKE SA every 5 s while 80 pings run
    through the tunnel (8 s); the other side answers. No packet may be lost, whichever side
    initiates the rekeys (the responder must not send on the new SA too early)."""
    requirements_or_skip()
    moon, sun = lab.namespace("moon"), lab.namespace("sun")
    lab.veth(moon, f"{MOON.outer}/24", sun, f"{MOON.peer_outer}/24")
    moon.add_address("lo", f"{MOON.inner}/32")
    sun.add_address("lo", "10.2.0.1/32")
    charon = Charon(lab, sun, workdir / "charon")
    charon.start()
    fast = rekeyer == "charon"
    charon.load(charon_conf(child_rekey="2s" if fast else None, ike_rekey="5s" if fast else None))
    options = {}
    if rekeyer == "aioipsec":
        options = {
            "child_options": {"rekey_time": "2s", "life_time": "20s", "rand_time": "0s"},
            "connection_options": {"rekey_time": "5s", "over_time": "20s", "rand_time": "0s"},
        }
    ours = OurDaemon(lab, moon, toml_config(MOON, workdir, **options), workdir)
    ours.start()
    try:
        charon.initiate("net", "thin")
        ours.wait_for_child("thin")
        result = moon.run(
            "ping", "-n", "-c", "80", "-i", "0.1", "-W", "2", "-I", MOON.inner, "10.2.0.1",
            check=False, timeout=60,
        )  # fmt: skip
        assert " 0% packet loss" in result.stdout, result.stdout
        events = [e.get("event") for e in ours.log_events()]
        assert events.count("CHILD SA rekeyed") >= 2, events
        assert events.count("IKE SA rekeyed") >= 1, events
        assert_ping(moon, MOON.inner, "10.2.0.1", count=2)
        # Both sides agree on the current pair (charon may still list a rekeyed SA that
        # is being deleted next to it).
        child = child_of(ours.sas()["thin"])
        theirs = charon.list_sas("thin")["thin"]
        installed = [c for c in theirs["child-sas"].values() if c["state"] == "INSTALLED"]
        assert any(
            c["spi-in"] == child["spi-out"] and c["spi-out"] == child["spi-in"] for c in installed
        ), (child, installed)
    except BaseException:
        print("--- our log ---\n" + ours.log_tail(80))
        print("--- charon log ---\n" + charon.log_tail(80))
        raise
    assert ours.stop() == 0
