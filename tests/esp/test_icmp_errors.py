"""strongSwan's ``icmp = yes`` in our data path: an ICMP error from a router outside the
traffic selectors passes when the packet it quotes, reversed, matches the SA's selectors
(outbound: the SPD's icmp policy; inbound: the SA's policy check). Without it, dropped."""

from __future__ import annotations

import os

import pytest
from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.inet6 import ICMPv6PacketTooBig, IPv6

from esp.errors import EspDrop
from esp.sa import EspSa
from esp.sad import Sad
from esp.selectors import Selector, icmp_error_fields
from esp.spd import Action, Policy, Spd
from ikev2.enums import EncrId

GCM = EncrId.ENCR_AES_GCM_16
LOCAL, REMOTE = "10.1.0.0/24", "10.2.0.0/24"


def frag_needed(router: str, sender: str, quoted_src: str, quoted_dst: str) -> bytes:
    """A router's ICMP "fragmentation needed" to ``sender`` about a UDP packet it sent."""
    quoted = IP(src=quoted_src, dst=quoted_dst) / UDP(sport=4444, dport=53) / (b"x" * 40)
    return bytes(IP(src=router, dst=sender) / ICMP(type=3, code=4, nexthopmtu=1200) / quoted)


def test_quoted_fields_are_reversed() -> None:
    error = frag_needed("192.168.5.1", "10.2.0.7", "10.2.0.7", "10.1.0.5")
    fields = icmp_error_fields(error)
    assert fields is not None
    assert (fields.src_text(), fields.dst_text()) == ("10.1.0.5", "10.2.0.7")
    assert (fields.src_port, fields.dst_port) == (53, 4444)
    v6 = IPv6(src="2001:db8:ff::1", dst="2001:db8:2::7") / ICMPv6PacketTooBig(mtu=1280)
    v6 /= IPv6(src="2001:db8:2::7", dst="2001:db8:1::5") / UDP(sport=1, dport=2)
    fields6 = icmp_error_fields(bytes(v6))
    assert fields6 is not None and fields6.src_text() == "2001:db8:1::5"
    # Not an error (an echo request), and not ICMP: no quoted packet.
    assert icmp_error_fields(bytes(IP(src="10.1.0.1", dst="10.2.0.1") / ICMP(type=8))) is None
    assert icmp_error_fields(bytes(IP(dst="10.2.0.1") / UDP())) is None


@pytest.mark.parametrize("icmp", [True, False])
def test_outbound_error_from_outside_the_selectors(icmp: bool) -> None:
    """A router on our side (192.168.5.1, not in 10.1.0.0/24) tells a remote sender its
    packet to 10.1.0.5 was too big: with icmp the error goes through the SA."""
    key = os.urandom(20)
    sa_out = EspSa(0x1001, "out", GCM, key, reqid=1, src="192.0.2.1", dst="192.0.2.2")
    sad = Sad()
    sad.add(sa_out)
    spd = Spd(sad)
    spd.add(Policy(Selector.make(LOCAL, REMOTE), Action.PROTECT, reqid=1, icmp=icmp))
    error = frag_needed("192.168.5.1", "10.2.0.7", "10.2.0.7", "10.1.0.5")
    decided = spd.outbound(error, now=0.0)
    assert (decided is sa_out) == icmp
    if not icmp:
        assert decided is None and spd.no_policy == 1
    # An error about a packet outside the selectors is dropped either way.
    stray = frag_needed("192.168.5.1", "10.9.0.7", "10.9.0.7", "10.1.0.5")
    assert spd.outbound(stray, now=0.0) is None


@pytest.mark.parametrize("icmp", [True, False])
def test_inbound_error_from_outside_the_selectors(icmp: bool) -> None:
    """A router on the peer's side (172.16.0.1, not in 10.2.0.0/24) reports that our
    packet 10.1.0.5 -> 10.2.0.7 could not be delivered: with icmp it is let in."""
    key = os.urandom(20)
    inbound_selectors = [Selector.make(REMOTE, LOCAL)]
    sa_out = EspSa(0x2002, "out", GCM, key, src="192.0.2.2", dst="192.0.2.1")
    sa_in = EspSa(0x2002, "in", GCM, key, src="192.0.2.2", dst="192.0.2.1",
                  selectors=inbound_selectors, icmp=icmp)  # fmt: skip
    error = frag_needed("172.16.0.1", "10.1.0.5", "10.1.0.5", "10.2.0.7")
    packet = sa_out.encrypt(error)
    if icmp:
        assert sa_in.decrypt(packet) == error
    else:
        with pytest.raises(EspDrop):
            sa_in.decrypt(packet)
    # Ordinary traffic still has to match, with or without icmp.
    stray = bytes(IP(src="172.16.0.1", dst="10.1.0.5") / UDP(sport=1, dport=2))
    with pytest.raises(EspDrop):
        sa_in.decrypt(sa_out.encrypt(stray))
