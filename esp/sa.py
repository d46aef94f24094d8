"""ESP Security Association (RFC 4303): one direction of one Child SA.

``EspSa`` holds the keys (in its transform), the state (``esp.state.SaBase``: sequence
numbers, replay window, lifetimes, counters) and the four per-packet functions, which
are built once per SA, on its first packet, by ``esp.processing`` (the one definition of
RFC 4303 processing):

* ``encrypt_into(inner, out, offset=0, next_header=0) -> int``: writes
  ``SPI || Seq || IV || ciphertext || ICV`` into a caller-owned buffer at an offset (so the
  caller can reserve room for outer headers) and returns its length;
* ``encrypt_parts(inner, next_header=0) -> (header, body)``: the same without a caller
  buffer, for ``sendmsg([header, body])``;
* ``decrypt_into(packet, out, offset=0) -> int``: verifies and decrypts a packet (SPI ..
  ICV) and writes the inner packet into a caller-owned buffer;
* ``decrypt_view(packet, out=None, offset=0) -> memoryview``: the same, returning a view
  (of the AEAD's output on the direct path, of ``out`` or a new buffer otherwise).

``encrypt``/``decrypt`` are the bytes-in/bytes-out wrappers; ``protect_transport``,
``encapsulate`` and their inverses add the outer headers.
"""

from __future__ import annotations

import collections
from typing import Any, NoReturn

from esp import ip, udp_encap
from esp.constants import ESP_HEADER_LEN, MAX_INNER, TRAILER_FIXED_LEN, IpProto
from esp.errors import DropReason, EspDrop
from esp.events import Lifetime
from esp.processing import (
    DecryptInto,
    DecryptView,
    EncryptInto,
    EncryptParts,
    build_inbound,
    build_outbound,
    plaintext_size,
)
from esp.selectors import Selector
from esp.state import Direction, Mode, SaBase
from esp.transforms import (
    ENCR_INFO,
    INTEG_INFO,
    Buffer,
    Transform,
    encr_info,
    make_transform,
    transform_layout,
)
from ikev2.enums import EncrId, IntegId

__all__ = ["Direction", "EspSa", "Mode", "SaBase"]


class EspSa(SaBase):
    """One direction of an ESP SA.

    ``encr_key`` is the key material as IKE derives it (salt included for AEADs);
    ``integ``/``integ_key`` only for non-AEAD transforms. ``replay_window`` (inbound) is in
    packets. ``selectors`` (inbound, tunnel mode) are the traffic selectors decrypted
    packets must match (source = the peer's side): packets outside them are dropped
    (RFC 4301 sec. 5.2, step 4). ``tfc_pad_to`` pads tunnel-mode inner packets up to that
    length (RFC 4303 sec. 2.7). ``now`` is the installation time for time lifetimes (any
    clock, the caller's; the data plane never reads one). ``src``/``dst`` are the outer
    addresses (listings, tunnel headers); ``udp_encap`` the (sport, dport) of RFC 3948.

    The per-packet functions are attributes set from ``esp.processing`` (see its
    docstring for the order of the steps and the two ways the cipher is called), on the
    first packet together with the cipher objects: installing an SA checks the algorithms
    and keys and keeps only the key bytes until then:
    """

    protocol = "esp"

    # See SaBase.__slots__. Until the first packet the transform slot is unset and the
    # direction's two per-packet functions are its ``_first_*`` methods (``_build``).
    __slots__ = (
        "_align",
        "_built",
        "_icv_size",
        "_keys",
        "_overhead",
        "decrypt_into",
        "decrypt_view",
        "encr",
        "encrypt_into",
        "encrypt_parts",
        "integ",
        "key_bits",
        "tfc_pad_to",
    )  # fmt: skip

    _built: Transform

    encrypt_into: EncryptInto
    """Encrypt ``inner`` into ``out[offset:]``; return the ESP packet length. Tunnel mode:
    ``inner`` is an IPv4/IPv6 packet (next header 4/41 from its version nibble); transport
    mode: the upper-layer payload, ``next_header`` its protocol. ``EspDrop(EXPIRED)`` once
    the SA hit a hard limit (lifetime or sequence number). Outbound SAs only."""

    encrypt_parts: EncryptParts
    """``encrypt_into`` without a caller buffer: ``(header, body)`` with header = SPI ||
    Seq || IV and body = ciphertext || ICV, for ``sock.sendmsg([header, body], [], 0,
    peer)``. ``header`` is a view into a per-SA buffer: valid until the next call."""

    decrypt_into: DecryptInto
    """Verify and decrypt ``packet`` (SPI .. ICV); write the inner packet (tunnel) or
    upper-layer payload (transport) at ``out[offset:]`` and return its length. The next
    header is left in ``last_next_header``; ``out`` needs ``len(packet)`` bytes. Raises
    ``EspDrop`` (already counted) on any drop. Inbound SAs only."""

    decrypt_view: DecryptView
    """Like ``decrypt_into`` but returns a view of the inner packet in a buffer of its own
    (``os.write(tun_fd, view)`` needs no buffer of the caller's)."""

    def __init__(
        self, spi: int, direction: Direction | str, encr: EncrId | int, encr_key: bytes,
        integ: IntegId | int = IntegId.NONE, integ_key: bytes = b"", *,
        esn: bool = False, replay_window: int = 1024, mode: Mode | str = Mode.TUNNEL,
        src: str | None = None, dst: str | None = None,
        selectors: tuple[Selector, ...] | list[Selector] = (),
        lifetime: Lifetime | None = None, tfc_pad_to: int = 0,
        udp_encap: tuple[int, int] | None = None, reqid: int = 0,
        allow_null: bool = False, allow_no_integrity: bool = False,
        seq_soft_limit: int | None = None, now: float = 0.0,
        events: collections.deque[Any] | None = None, icmp: bool = False,
    ) -> None:  # fmt: skip
        super().__init__(
            spi, direction, esn=esn, replay_window=replay_window, mode=mode, src=src,
            dst=dst, selectors=selectors, lifetime=lifetime, udp_encap=udp_encap,
            reqid=reqid, seq_soft_limit=seq_soft_limit, now=now, events=events, icmp=icmp,
        )  # fmt: skip
        self.encr = EncrId(encr)
        self.integ = IntegId(integ)
        self.key_bits = 8 * (len(encr_key) - encr_info(encr).salt_size)
        if not 0 <= tfc_pad_to <= MAX_INNER:
            raise ValueError("tfc_pad_to out of range")
        self.tfc_pad_to = tfc_pad_to if self.mode is Mode.TUNNEL else 0

        iv_size, icv_size, block_size = transform_layout(
            encr, encr_key, integ, integ_key,
            allow_null=allow_null, allow_no_integrity=allow_no_integrity,
        )  # fmt: skip
        # The cipher objects (an AEAD's OpenSSL context is ~2.7 KiB) and the per-packet
        # closures of esp.processing are built on first use (``_build``): an idle tunnel
        # holds only its key bytes (issue 17: memory per tunnel). The checks above already
        # raised whatever make_transform would.
        self._keys: tuple[bytes, bytes] | None = (bytes(encr_key), bytes(integ_key))
        self._icv_size = icv_size
        self._align = max(4, block_size)
        # All but the payload: SPI || Seq || IV and ICV.
        self._overhead = ESP_HEADER_LEN + iv_size + icv_size
        # Until the first packet the per-packet functions are the _first_* methods below,
        # which build the real ones and hand the packet on. Not a __getattr__: a class with
        # one makes every attribute look-up on its instances slower (CPython 3.11 does not
        # specialise LOAD_ATTR for it: 0.13 us more per 1400-octet packet, bench.esp_micro).
        if self.direction is Direction.OUT:
            self.encrypt_into = self._first_encrypt_into
            self.encrypt_parts = self._first_encrypt_parts
            self.decrypt_into = self.decrypt_view = _not_inbound
        else:
            self.decrypt_into = self._first_decrypt_into
            self.decrypt_view = self._first_decrypt_view
            self.encrypt_into = self.encrypt_parts = _not_outbound

    def _first_encrypt_into(
        self, inner: Buffer, out: bytearray | memoryview, offset: int = 0, next_header: int = 0
    ) -> int:
        self._build()
        return self.encrypt_into(inner, out, offset, next_header)

    def _first_encrypt_parts(self, inner: Buffer, next_header: int = 0) -> tuple[memoryview, bytes]:
        self._build()
        return self.encrypt_parts(inner, next_header)

    def _first_decrypt_into(
        self, packet: Buffer, out: bytearray | memoryview, offset: int = 0
    ) -> int:
        self._build()
        return self.decrypt_into(packet, out, offset)

    def _first_decrypt_view(
        self, packet: Buffer, out: bytearray | memoryview | None = None, offset: int = 0
    ) -> memoryview:
        self._build()
        return self.decrypt_view(packet, out, offset)

    @property
    def _transform(self) -> Transform:
        """The cipher objects, built now if no packet has needed them yet."""
        if self._keys is not None:
            self._build()
        return self._built

    def _build(self) -> None:
        """Create the transform (cipher objects) and the per-packet functions."""
        keys = self._keys
        if keys is None:
            return  # built already
        # allow_*: __init__ checked the combination with the caller's flags already.
        transform = make_transform(
            self.encr, keys[0], self.integ, keys[1], allow_null=True, allow_no_integrity=True
        )
        self._built = transform
        if self.direction is Direction.OUT:
            self.encrypt_into, self.encrypt_parts = build_outbound(self, transform, self.tfc_pad_to)
            self.decrypt_into = _not_inbound
            self.decrypt_view = _not_inbound
        else:
            self.decrypt_into, self.decrypt_view = build_inbound(self, transform)
            self.encrypt_into = _not_outbound
            self.encrypt_parts = _not_outbound
        self._keys = None  # the transform holds them now

    # ---------------------------------------------------------------- sizes
    def encrypted_size(self, inner_len: int) -> int:
        """Length of the ESP packet (SPI .. ICV) ``encrypt_into`` writes for this input."""
        return self._overhead + plaintext_size(inner_len, self.tfc_pad_to, self._align)

    @property
    def overhead(self) -> int:
        """Worst-case bytes added to an inner packet (for MTU computations)."""
        return self._overhead + TRAILER_FIXED_LEN + self._align - 1

    # ---------------------------------------------------------------- outbound
    def encrypt(self, inner: Buffer, next_header: int = 0) -> bytes:
        """Bytes-in/bytes-out form of ``encrypt_into``."""
        out = bytearray(self.encrypted_size(len(inner)))
        n = self.encrypt_into(inner, out, 0, next_header)
        return bytes(out[:n])

    def encrypt_dummy(self, size: int = 0) -> bytes:
        """A dummy packet (next header 59, RFC 4303 sec. 2.6) with ``size`` zero bytes,
        encrypted like any other; the peer drops it silently (traffic flow confidentiality).
        """
        return self.encrypt(bytes(size), next_header=IpProto.NONE)

    # ---------------------------------------------------------------- whole IP packets
    def protect_transport(self, packet: Buffer) -> bytes:
        """Transport mode (RFC 4303 sec. 3.1.1): the full IP packet in, the full IP packet
        out with ESP (protocol 50) after the IP header (after the hop-by-hop, routing and
        fragment headers for IPv6), lengths and IPv4 checksum fixed. With ``udp_encap``
        the ESP is carried in UDP (RFC 3948 sec. 2.1)."""
        if self.mode is not Mode.TRANSPORT:
            raise ValueError("protect_transport on a tunnel-mode SA")
        offset, field = ip.transport_split(packet)
        header = bytearray(packet[:offset])
        esp = self.encrypt(memoryview(packet)[offset:], next_header=packet[field])
        return self._with_header(header, field, esp)

    def _with_header(self, header: bytearray, field: int, esp: bytes) -> bytes:
        if self.udp_encap:
            v6 = header[0] >> 4 == 6
            addresses = (ip.address_text(header, 8), ip.address_text(header, 24)) if v6 else None
            esp = udp_encap.wrap(esp, *self.udp_encap, ipv6_addresses=addresses)
            header[field] = IpProto.UDP
        else:
            header[field] = IpProto.ESP
        packet = header + esp
        ip.set_lengths(packet)
        return bytes(packet)

    def unprotect_transport(self, packet: Buffer) -> bytes:
        """Inverse of ``protect_transport``: the original IP packet (lengths and checksum
        fixed). Raises ``EspDrop`` (counted) for anything that does not decrypt."""
        offset, field = self._locate_esp(packet)
        payload = self.decrypt(memoryview(packet)[offset:])
        header = bytearray(packet[: offset - (8 if self.udp_encap else 0)])
        header[field] = self.last_next_header
        result = header + payload
        ip.set_lengths(result)
        return bytes(result)

    def _locate_esp(self, packet: Buffer) -> tuple[int, int]:
        try:
            if self.udp_encap:
                offset, field = ip.find_ipsec_header(packet, IpProto.UDP)
                udp_encap.unwrap(memoryview(packet)[offset:])
                return offset + 8, field
            return ip.find_ipsec_header(packet, IpProto.ESP)
        except ValueError as err:
            self.malformed += 1
            raise EspDrop(DropReason.MALFORMED, str(err)) from None

    def encapsulate(self, inner: Buffer) -> bytes:
        """Tunnel mode with the outer header (RFC 4303 sec. 3.1.2): outer IP (``src`` to
        ``dst`` of the SA) [+ UDP if ``udp_encap``] + ESP. For raw sockets and tests; the
        daemon sends ``encrypt_into`` output through a UDP socket instead."""
        if self.mode is not Mode.TUNNEL or self.src is None or self.dst is None:
            raise ValueError("encapsulate needs a tunnel-mode SA with src and dst")
        esp = self.encrypt(inner)
        v6 = ":" in self.src
        header = bytearray(ip.ip_header(self.src, self.dst, IpProto.ESP, 0))
        return self._with_header(header, 6 if v6 else 9, esp)

    def decapsulate(self, packet: Buffer) -> bytes:
        """Inverse of ``encapsulate``: the inner packet."""
        offset, _ = self._locate_esp(packet)
        return self.decrypt(memoryview(packet)[offset:])

    # ---------------------------------------------------------------- inbound
    def decrypt(self, packet: Buffer) -> bytes:
        """Bytes-in/bytes-out form of ``decrypt_into``."""
        return bytes(self.decrypt_view(packet))

    # ---------------------------------------------------------------- reporting
    @property
    def encr_name(self) -> str:
        return ENCR_INFO[self.encr].name

    @property
    def integ_name(self) -> str | None:
        info = INTEG_INFO.get(self.integ)
        return info.name if info else None

    @property
    def icv_size(self) -> int:
        return self._icv_size

    def __repr__(self) -> str:  # never shows keys
        return (
            f"EspSa(spi={self.spi:#010x}, {self.direction.value}, {self.encr.name}, "
            f"{self.mode.value}, esn={self.esn})"
        )


def _not_inbound(*args: object, **kwargs: object) -> NoReturn:
    raise ValueError("decrypt on an outbound SA")


def _not_outbound(*args: object, **kwargs: object) -> NoReturn:
    raise ValueError("encrypt on an inbound SA")
