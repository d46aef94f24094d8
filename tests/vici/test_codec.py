"""The VICI codec (aioipsec.vici.codec): the README's example octets, round trips drawn by
hypothesis, the `vici` Python package (strongSwan's own client library for Python) as an
independent encoder/decoder, and every malformed input refused with ViciError."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aioipsec.vici.codec import (
    MAX_DEPTH,
    MAX_SEGMENT,
    FrameBuffer,
    Packet,
    PacketType,
    ViciError,
    decode_message,
    decode_packet,
    encode_message,
    encode_packet,
)

# The "Encoding example" of strongSwan's src/libcharon/plugins/vici/README.md, octet by octet.
README_EXAMPLE = bytes(
    [3, 4, *b"key1", 0, 6, *b"value1",
     1, 8, *b"section1",
     1, 11, *b"sub-section",
     3, 4, *b"key2", 0, 6, *b"value2",
     2,
     4, 5, *b"list1",
     5, 0, 5, *b"item1",
     5, 0, 5, *b"item2",
     6,
     2]
)  # fmt: skip
README_TREE = {
    "key1": b"value1",
    "section1": {"sub-section": {"key2": b"value2"}, "list1": [b"item1", b"item2"]},
}


def test_readme_example_decodes_and_encodes() -> None:
    assert decode_message(README_EXAMPLE) == README_TREE
    assert encode_message(README_TREE) == README_EXAMPLE


names = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=20
)
values = st.binary(max_size=64)
trees = st.recursive(
    st.dictionaries(names, st.one_of(values, st.lists(values, max_size=4)), max_size=4),
    lambda children: st.dictionaries(
        names, st.one_of(values, st.lists(values, max_size=4), children), max_size=4
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(trees)
def test_round_trip(tree: dict) -> None:
    encoded = encode_message(tree)
    assert decode_message(encoded) == tree
    assert encode_message(decode_message(encoded)) == encoded


@settings(max_examples=200, deadline=None)
@given(trees)
def test_vici_package_decodes_ours_and_we_decode_its(tree: dict) -> None:
    """The `vici` package is strongSwan's Python client: an encoder we did not write."""
    from vici.protocol import FiniteStream, Message

    theirs = Message.serialize(tree)
    assert theirs == encode_message(tree)
    assert decode_message(theirs) == tree
    parsed = Message.deserialize(FiniteStream(encode_message(tree)))
    assert _plain(parsed) == tree


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [bytes(v) for v in value]
    return bytes(value)


def test_values_encode_as_charon_does() -> None:
    message = {"a": 5, "b": True, "c": False, "d": "text", "e": None, "f": ["x", 1]}
    assert decode_message(encode_message(message)) == {
        "a": b"5", "b": b"yes", "c": b"no", "d": b"text", "f": [b"x", b"1"]
    }  # fmt: skip


@pytest.mark.parametrize(
    ("octets", "reason"),
    [
        (b"\x02", "SECTION_END without an open section"),
        (b"\x05\x00\x01a", "LIST_ITEM outside a list"),
        (b"\x06", "LIST_END without an open list"),
        (b"\x04\x01l\x03\x01k\x00\x01v\x06", "inside a list"),
        (b"\x04\x01l\x05\x00\x01a", "ends inside a list"),
        (b"\x01\x01s", r"1 section\(s\) open"),
        (b"\x03\x05ab", "runs past the end"),
        (b"\x03\x01k\x00", "inside the length"),
        (b"\x03\x01k\x00\x05ab", "runs past the end"),
        (b"\x07", "unknown element type 7"),
        (b"\x00", "unknown element type 0"),
        (b"\x03\x01k\x00\x00\x03\x01k\x00\x00", "duplicate key"),
        (b"\x03\x02\xff\xfe\x00\x00", "not ASCII/UTF-8"),
        (b"\x01", "ends inside the length of a section name"),
    ],
)
def test_malformed_messages(octets: bytes, reason: str) -> None:
    with pytest.raises(ViciError, match=reason):
        decode_message(octets)


def test_nesting_bound() -> None:
    deep = b"\x01\x01s" * (MAX_DEPTH + 1) + b"\x02" * (MAX_DEPTH + 1)
    with pytest.raises(ViciError, match="nested deeper"):
        decode_message(deep)
    ok = b"\x01\x01s" * MAX_DEPTH + b"\x02" * MAX_DEPTH
    assert decode_message(ok)
    tree: dict = {}
    node = tree
    for _ in range(MAX_DEPTH + 1):
        node["s"] = {}
        node = node["s"]
    with pytest.raises(ViciError, match="nested deeper"):
        encode_message(tree)


def test_packets() -> None:
    segment = encode_packet(PacketType.CMD_REQUEST, "list-sas", {"ike": "x"})
    (length,) = struct.unpack("!I", segment[:4])
    assert length == len(segment) - 4
    assert decode_packet(segment[4:]) == Packet(PacketType.CMD_REQUEST, "list-sas", {"ike": b"x"})
    assert decode_packet(encode_packet(PacketType.EVENT_CONFIRM)[4:]) == Packet(
        PacketType.EVENT_CONFIRM
    )
    assert decode_packet(encode_packet(PacketType.EVENT_REGISTER, "log")[4:]).name == "log"
    with pytest.raises(ViciError, match="unknown packet type 8"):
        decode_packet(b"\x08")
    with pytest.raises(ViciError, match="empty segment"):
        decode_packet(b"")
    with pytest.raises(ViciError, match="unexpected octets"):
        decode_packet(b"\x03\x03log\x01")
    with pytest.raises(ViciError, match="packet name"):
        decode_packet(b"\x00\x09abc")
    with pytest.raises(ViciError, match="needs a name"):
        encode_packet(PacketType.EVENT)


def test_frame_buffer_splits_and_bounds() -> None:
    frames = FrameBuffer()
    stream = encode_packet(PacketType.CMD_REQUEST, "version") + encode_packet(
        PacketType.EVENT_REGISTER, "log"
    )
    for octet in stream[:-1]:
        frames.feed(bytes([octet]))
    segments = list(frames)
    assert [decode_packet(s).name for s in segments] == ["version"]
    frames.feed(stream[-1:])
    assert [decode_packet(s).name for s in frames] == ["log"]
    assert frames.pending == 0
    frames.feed(struct.pack("!I", MAX_SEGMENT + 1))
    with pytest.raises(ViciError, match="exceeds"):
        next(frames)
