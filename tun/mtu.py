"""The inner MTU of an ESP tunnel: the outer MTU minus the worst-case ESP (+UDP) overhead.

An ESP tunnel-mode packet (RFC 4303 sec. 2, RFC 3948 sec. 2.1 for the UDP header) is::

    outer IPv4 (20) or IPv6 (40) header
    UDP header (8)                      only with UDP encapsulation (NAT-T)
    SPI (4) | Sequence Number (4)       the ESP header
    IV                                  per algorithm (8 for GCM/CCM/CTR/ChaCha20, 16 for CBC)
    inner packet                        <- what the TUN device carries
    padding (0..align-1) | Pad Length (1) | Next Header (1)
    ICV                                 per algorithm

The padding aligns ``inner + 2`` to the cipher's block size, and to at least 4 octets in any case
(RFC 4303 sec. 2.4). The worst case assumes the maximum alignment padding, so that every inner
packet of up to the returned MTU fits the outer MTU whatever its length.
"""

from __future__ import annotations

from dataclasses import dataclass

from ikev2.enums import EncrId, IntegId

IPV4_HEADER = 20
IPV6_HEADER = 40
UDP_HEADER = 8
ESP_HEADER = 8  # SPI + sequence number
ESP_TRAILER = 2  # Pad Length + Next Header
ESP_MIN_ALIGNMENT = 4  # RFC 4303 sec. 2.4: the trailer ends on a 4-octet boundary

# IPv6 links carry at least 1280 octets (RFC 8200 sec. 5); IPv4 hosts at least 68 (RFC 791).
IPV6_MIN_MTU = 1280
IPV4_MIN_MTU = 68


@dataclass(frozen=True)
class EspSizes:
    """What an ESP algorithm adds to each packet."""

    iv_size: int
    block_size: int  # alignment of (payload + trailer); at least 4
    icv_size: int


# Combined-mode (AEAD) ciphers carry their own ICV; stream-like ones align to 4 octets.
_AEAD_SIZES: dict[EncrId, EspSizes] = {
    EncrId.ENCR_AES_GCM_8: EspSizes(8, 4, 8),  # RFC 4106
    EncrId.ENCR_AES_GCM_12: EspSizes(8, 4, 12),
    EncrId.ENCR_AES_GCM_16: EspSizes(8, 4, 16),
    EncrId.ENCR_AES_CCM_8: EspSizes(8, 4, 8),  # RFC 4309
    EncrId.ENCR_AES_CCM_12: EspSizes(8, 4, 12),
    EncrId.ENCR_AES_CCM_16: EspSizes(8, 4, 16),
    EncrId.ENCR_NULL_AUTH_AES_GMAC: EspSizes(8, 4, 16),  # RFC 4543
    EncrId.ENCR_CHACHA20_POLY1305: EspSizes(8, 4, 16),  # RFC 7634
}

# (IV size, block size) of the non-AEAD ciphers.
_CIPHER_SIZES: dict[EncrId, tuple[int, int]] = {
    EncrId.ENCR_AES_CBC: (16, 16),  # RFC 3602
    EncrId.ENCR_AES_CTR: (8, 4),  # RFC 3686
    EncrId.ENCR_NULL: (0, 4),  # RFC 2410
    EncrId.ENCR_3DES: (8, 8),  # RFC 2451 (refused by default; sized for completeness)
    EncrId.ENCR_CAMELLIA_CBC: (16, 16),  # RFC 5529
}

# Truncated ICV length of each integrity transform (RFC 2404, RFC 4868, RFC 3566, RFC 4494).
INTEG_ICV_SIZES: dict[IntegId, int] = {
    IntegId.NONE: 0,
    IntegId.AUTH_HMAC_MD5_96: 12,
    IntegId.AUTH_HMAC_SHA1_96: 12,
    IntegId.AUTH_AES_XCBC_96: 12,
    IntegId.AUTH_AES_CMAC_96: 12,
    IntegId.AUTH_HMAC_SHA2_256_128: 16,
    IntegId.AUTH_HMAC_SHA2_384_192: 24,
    IntegId.AUTH_HMAC_SHA2_512_256: 32,
}


def esp_sizes(encr: EncrId | int, integ: IntegId | int | None = None) -> EspSizes:
    """IV, alignment and ICV sizes of an ESP transform pair (integ ignored for AEAD)."""
    encr = EncrId(encr)
    if encr in _AEAD_SIZES:
        return _AEAD_SIZES[encr]
    if encr not in _CIPHER_SIZES:
        raise ValueError(f"no ESP size information for {encr.name}")
    integ_id = IntegId(integ) if integ is not None else IntegId.NONE
    if integ_id not in INTEG_ICV_SIZES:
        raise ValueError(f"no ICV size for {integ_id.name}")
    iv_size, block_size = _CIPHER_SIZES[encr]
    return EspSizes(iv_size, max(block_size, ESP_MIN_ALIGNMENT), INTEG_ICV_SIZES[integ_id])


def worst_case_esp_overhead(sizes: EspSizes, *, outer_ipv6: bool, udp_encap: bool) -> int:
    """Octets an ESP tunnel adds to an inner packet at most (outer IP header included)."""
    alignment = max(sizes.block_size, ESP_MIN_ALIGNMENT)
    return (
        (IPV6_HEADER if outer_ipv6 else IPV4_HEADER)
        + (UDP_HEADER if udp_encap else 0)
        + ESP_HEADER
        + sizes.iv_size
        + (alignment - 1)  # the most padding alignment can need
        + ESP_TRAILER
        + sizes.icv_size
    )


def tunnel_mtu(
    outer_mtu: int,
    sizes: EspSizes | list[EspSizes],
    *,
    outer_ipv6: bool = False,
    udp_encap: bool = True,
) -> int:
    """MTU for the TUN device: OUTER_MTU minus the worst-case overhead of the given SAs.

    With several SAs (a list of sizes) the largest overhead wins, so one device MTU serves all.
    """
    all_sizes = sizes if isinstance(sizes, list) else [sizes]
    if not all_sizes:
        raise ValueError("tunnel_mtu needs the sizes of at least one ESP transform")
    overhead = max(
        worst_case_esp_overhead(s, outer_ipv6=outer_ipv6, udp_encap=udp_encap) for s in all_sizes
    )
    inner = outer_mtu - overhead
    if inner < IPV4_MIN_MTU:
        raise ValueError(f"outer MTU {outer_mtu} leaves {inner} octets, below {IPV4_MIN_MTU}")
    return inner
