"""tun.fragment: inner IPv4 fragmentation before encryption, checked by scapy's reassembly."""

from __future__ import annotations

from scapy.all import IP, UDP, Raw, defragment

from tun.fragment import fragment_ipv4


def test_fragments_reassemble_to_the_packet() -> None:
    packet = bytes(IP(src="10.1.0.1", dst="10.2.0.1", id=7, flags=0) / UDP() / Raw(b"x" * 1400))
    fragments = fragment_ipv4(packet, 576)
    assert fragments is not None and len(fragments) == 3
    assert all(len(f) <= 576 for f in fragments)
    parsed = [IP(f) for f in fragments]
    assert [p.flags.MF for p in parsed] == [1, 1, 0]
    assert all(p.frag * 8 % 8 == 0 for p in parsed)
    for p in parsed:  # each header checksum is right
        check = p.chksum
        del p.chksum
        assert IP(bytes(p)).chksum == check
    (whole,) = defragment(parsed)
    assert bytes(whole) == packet


def test_options_copied_only_when_flagged_and_fragments_of_fragments() -> None:
    # Security option (130, copied) and record route (7, not copied).
    options = bytes([130, 11]) + bytes(9) + bytes([7, 7, 4]) + bytes(4) + bytes([0, 0])
    packet = bytes(IP(dst="10.2.0.1", options=options) / Raw(b"y" * 300))
    fragments = fragment_ipv4(packet, 200)
    assert fragments is not None
    assert IP(fragments[0]).ihl * 4 == 20 + len(options)
    assert IP(fragments[1]).ihl * 4 == 20 + 12  # 11 octets of the copied option, padded
    # A fragment (MF set, offset 100) cut again keeps its offsets and its MF.
    first = IP(dst="10.2.0.1", flags="MF", frag=100) / Raw(b"z" * 400)
    parts = [IP(f) for f in fragment_ipv4(bytes(first), 200) or []]
    assert parts[0].frag == 100 and all(p.flags.MF for p in parts)


def test_what_may_not_be_cut() -> None:
    df = bytes(IP(dst="10.2.0.1", flags="DF") / Raw(b"x" * 1000))
    assert fragment_ipv4(df, 500) is None
    assert fragment_ipv4(bytes(60), 40) is None  # not IPv4
    small = bytes(IP(dst="10.2.0.1") / Raw(b"x" * 10))
    assert fragment_ipv4(small, 1000) == [small]
    assert fragment_ipv4(bytes(IP(dst="10.2.0.1") / Raw(b"x" * 100)), 24) is None
