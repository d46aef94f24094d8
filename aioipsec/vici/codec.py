"""VICI wire format: transport framing, packets and messages (sans-I/O).

strongSwan's Versatile IKE Control Interface (``src/libcharon/plugins/vici/README.md``):

* **Transport**: a stream of segments, each a 32-bit big-endian length of the data that
  follows (not counting the length field itself). charon limits a segment to 512 KiB.
* **Packet**: the segment's first octet is the packet type; the named types (CMD_REQUEST,
  EVENT_REGISTER, EVENT_UNREGISTER, EVENT) continue with an 8-bit name length and the
  name; the rest of the segment is the message (CMD_REQUEST, CMD_RESPONSE, EVENT).
* **Message**: a sequence of elements building a tree of sections, key-values and lists::

      SECTION_START(1) name | SECTION_END(2) | KEY_VALUE(3) name value
      LIST_START(4) name    | LIST_ITEM(5) value | LIST_END(6)

  names are 8-bit length + ASCII, values are 16-bit big-endian length + blob. Lists hold
  items only and do not nest; key-values and sections do not appear in lists; sections
  and lists must be balanced.

Here a message is a ``dict``: a key-value is ``bytes`` (decoded) or ``str``/``bytes``/
``int``/``bool`` (encoded: numbers in decimal, booleans as ``yes``/``no``, as charon
does), a list is a ``list`` of values, a section is a nested ``dict``. Every malformed
input raises :class:`ViciError` (the only exception the decoder raises) with the reason.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

__all__ = [
    "MAX_DEPTH",
    "MAX_SEGMENT",
    "NAMED_PACKETS",
    "Element",
    "FrameBuffer",
    "Packet",
    "PacketType",
    "ViciError",
    "decode_message",
    "decode_packet",
    "encode_message",
    "encode_packet",
    "to_text",
]

# charon's limit on one transport segment (README: "limited to 512KB"); a client sending
# more is broken or hostile, and charon drops its connection.
MAX_SEGMENT = 512 * 1024
# Sections nest "to arbitrary levels" in the README; charon's own messages use at most 5
# (list-sas: ike -> child-sas -> child; child-rekey: ike -> child-sas -> child -> old/new).
# A bound keeps a hostile message from costing recursion depth in the server or a client.
MAX_DEPTH = 32

_LENGTH = struct.Struct("!I")
_VALUE_LENGTH = struct.Struct("!H")


class PacketType(IntEnum):
    """VICI packet types (README, "Packet layer")."""

    CMD_REQUEST = 0
    CMD_RESPONSE = 1
    CMD_UNKNOWN = 2
    EVENT_REGISTER = 3
    EVENT_UNREGISTER = 4
    EVENT_CONFIRM = 5
    EVENT_UNKNOWN = 6
    EVENT = 7


# Packet types followed by a name (README: "For packets having a named type").
NAMED_PACKETS = frozenset(
    {
        PacketType.CMD_REQUEST,
        PacketType.EVENT_REGISTER,
        PacketType.EVENT_UNREGISTER,
        PacketType.EVENT,
    }
)
# Packet types carrying a message after the type (and name).
_MESSAGE_PACKETS = frozenset({PacketType.CMD_REQUEST, PacketType.CMD_RESPONSE, PacketType.EVENT})


class Element(IntEnum):
    """VICI message element types (README, "Message format")."""

    SECTION_START = 1
    SECTION_END = 2
    KEY_VALUE = 3
    LIST_START = 4
    LIST_ITEM = 5
    LIST_END = 6


class ViciError(ValueError):
    """A malformed VICI segment, packet or message (``str`` is the reason)."""


@dataclass
class Packet:
    """One decoded packet: its type, its name (named types) and its message (types that
    carry one; an empty message is ``{}``)."""

    type: PacketType
    name: str | None = None
    message: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- encoding


def _name(name: str) -> bytes:
    raw = name.encode("utf-8") if isinstance(name, str) else bytes(name)
    if len(raw) > 255:
        raise ViciError(f"name {raw[:20]!r}... longer than 255 octets")
    return bytes([len(raw)]) + raw


def _value(value: Any) -> bytes:
    if isinstance(value, bool):
        raw = b"yes" if value else b"no"
    elif isinstance(value, int):
        raw = str(value).encode()
    elif isinstance(value, str):
        raw = value.encode("utf-8", "surrogateescape")
    elif isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
    else:
        raise ViciError(f"cannot encode a {type(value).__name__} as a VICI value")
    if len(raw) > 0xFFFF:
        raise ViciError(f"value of {len(raw)} octets exceeds VICI's 16-bit length")
    return _VALUE_LENGTH.pack(len(raw)) + raw


def _encode_section(section: Mapping[str, Any], out: list[bytes], depth: int) -> None:
    if depth > MAX_DEPTH:
        raise ViciError(f"sections nested deeper than {MAX_DEPTH}")
    for key, value in section.items():
        if value is None:
            continue  # charon leaves absent keys out rather than sending them empty
        if isinstance(value, Mapping):
            out.append(bytes([Element.SECTION_START]) + _name(key))
            _encode_section(value, out, depth + 1)
            out.append(bytes([Element.SECTION_END]))
        elif isinstance(value, list | tuple):
            out.append(bytes([Element.LIST_START]) + _name(key))
            for item in value:
                out.append(bytes([Element.LIST_ITEM]) + _value(item))
            out.append(bytes([Element.LIST_END]))
        else:
            out.append(bytes([Element.KEY_VALUE]) + _name(key) + _value(value))


def encode_message(message: Mapping[str, Any]) -> bytes:
    """The element sequence for MESSAGE (a dict as described in the module docstring)."""
    out: list[bytes] = []
    _encode_section(message, out, 1)
    return b"".join(out)


def encode_packet(
    packet_type: PacketType, name: str | None = None, message: Mapping[str, Any] | None = None
) -> bytes:
    """One whole transport segment (length prefix included)."""
    body = bytes([packet_type])
    if packet_type in NAMED_PACKETS:
        if name is None:
            raise ViciError(f"{packet_type.name} needs a name")
        body += _name(name)
    if packet_type in _MESSAGE_PACKETS:
        body += encode_message(message or {})
    if len(body) > MAX_SEGMENT:
        raise ViciError(f"packet of {len(body)} octets exceeds the {MAX_SEGMENT} limit")
    return _LENGTH.pack(len(body)) + body


# --------------------------------------------------------------------------- decoding


class _Cursor:
    __slots__ = ("data", "offset")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.offset = 0

    def byte(self, what: str) -> int:
        if self.offset >= len(self.data):
            raise ViciError(f"message ends inside {what}")
        value = self.data[self.offset]
        self.offset += 1
        return value

    def take(self, length: int, what: str) -> bytes:
        end = self.offset + length
        if end > len(self.data):
            raise ViciError(f"{what} of {length} octets runs past the end of the message")
        chunk = self.data[self.offset : end]
        self.offset = end
        return chunk

    def name(self, what: str) -> str:
        raw = self.take(self.byte(f"the length of {what}"), what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ViciError(f"{what} is not ASCII/UTF-8: {raw[:20]!r}") from None

    def value(self, what: str) -> bytes:
        if self.offset + 2 > len(self.data):
            raise ViciError(f"message ends inside the length of {what}")
        (length,) = _VALUE_LENGTH.unpack_from(self.data, self.offset)
        self.offset += 2
        return self.take(length, what)


def decode_message(data: bytes, max_depth: int = MAX_DEPTH) -> dict[str, Any]:
    """Parse a message (the bytes after a packet's type and name) into a dict whose values
    are ``bytes``, lists of ``bytes`` and nested dicts. Raises :class:`ViciError`."""
    cursor = _Cursor(bytes(data))
    root: dict[str, Any] = {}
    stack: list[dict[str, Any]] = [root]
    current_list: list[bytes] | None = None
    while cursor.offset < len(cursor.data):
        element = cursor.byte("an element")
        section = stack[-1]
        if current_list is not None and element not in (Element.LIST_ITEM, Element.LIST_END):
            # README: "After opening a list, only list items may appear before the list
            # closing element."
            raise ViciError(f"element type {element} inside a list")
        if element == Element.SECTION_START:
            name = cursor.name("a section name")
            if name in section:
                raise ViciError(f"duplicate name {name!r} in a section")
            if len(stack) > max_depth:
                raise ViciError(f"sections nested deeper than {max_depth}")
            child: dict[str, Any] = {}
            section[name] = child
            stack.append(child)
        elif element == Element.SECTION_END:
            if len(stack) == 1:
                raise ViciError("SECTION_END without an open section")
            stack.pop()
        elif element == Element.KEY_VALUE:
            name = cursor.name("a key")
            value = cursor.value(f"the value of {name!r}")
            if name in section:
                raise ViciError(f"duplicate key {name!r} in a section")
            section[name] = value
        elif element == Element.LIST_START:
            name = cursor.name("a list name")
            if name in section:
                raise ViciError(f"duplicate name {name!r} in a section")
            current_list = []
            section[name] = current_list
        elif element == Element.LIST_ITEM:
            if current_list is None:
                raise ViciError("LIST_ITEM outside a list")
            current_list.append(cursor.value("a list item"))
        elif element == Element.LIST_END:
            if current_list is None:
                raise ViciError("LIST_END without an open list")
            current_list = None
        else:
            raise ViciError(f"unknown element type {element}")
    if current_list is not None:
        raise ViciError("message ends inside a list")
    if len(stack) != 1:
        raise ViciError(f"message ends with {len(stack) - 1} section(s) open")
    return root


def decode_packet(segment: bytes, max_depth: int = MAX_DEPTH) -> Packet:
    """One transport segment's data (without the length prefix) into a :class:`Packet`."""
    if not segment:
        raise ViciError("empty segment: no packet type")
    try:
        packet_type = PacketType(segment[0])
    except ValueError:
        raise ViciError(f"unknown packet type {segment[0]}") from None
    cursor = _Cursor(bytes(segment))
    cursor.offset = 1
    name = cursor.name("the packet name") if packet_type in NAMED_PACKETS else None
    rest = cursor.data[cursor.offset :]
    if packet_type in _MESSAGE_PACKETS:
        return Packet(packet_type, name, decode_message(rest, max_depth))
    if rest:
        raise ViciError(f"{packet_type.name} carries {len(rest)} unexpected octets")
    return Packet(packet_type, name)


class FrameBuffer:
    """Split a byte stream into transport segments (sans-I/O).

    ``feed(data)`` and iterate: yields each complete segment's data. A segment announcing
    more than ``max_segment`` octets raises :class:`ViciError` at once (before its data
    is buffered): the stream cannot be trusted after that, the caller closes it.
    """

    def __init__(self, max_segment: int = MAX_SEGMENT) -> None:
        self.max_segment = max_segment
        self._buffer = bytearray()

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        if len(self._buffer) < _LENGTH.size:
            raise StopIteration
        (length,) = _LENGTH.unpack_from(self._buffer)
        if length > self.max_segment:
            raise ViciError(f"segment of {length} octets exceeds the {self.max_segment} limit")
        end = _LENGTH.size + length
        if len(self._buffer) < end:
            raise StopIteration
        segment = bytes(self._buffer[_LENGTH.size : end])
        del self._buffer[:end]
        return segment

    @property
    def pending(self) -> int:
        """Octets buffered that do not yet form a whole segment."""
        return len(self._buffer)


def to_text(value: Any) -> Any:
    """A decoded message with its ``bytes`` turned into ``str`` (UTF-8; undecodable octets
    kept as surrogates, so ``str.encode("utf-8", "surrogateescape")`` gives them back)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    if isinstance(value, list):
        return [to_text(item) for item in value]
    if isinstance(value, dict):
        return {key: to_text(item) for key, item in value.items()}
    return value
