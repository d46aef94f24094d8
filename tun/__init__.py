"""TUN device, tunnel MTU and PMTU ICMP errors (Linux). Never imports ``aioipsec``."""

from tun.device import DEFAULT_TUN_MTU, DEFAULT_TUN_NAME, TunDevice, TunError, remove_stale_device
from tun.icmp import build_frag_needed, build_packet_too_big, build_too_big, needs_frag_needed
from tun.mtu import EspSizes, esp_sizes, tunnel_mtu, worst_case_esp_overhead

__all__ = [
    "DEFAULT_TUN_MTU",
    "DEFAULT_TUN_NAME",
    "EspSizes",
    "TunDevice",
    "TunError",
    "build_frag_needed",
    "build_packet_too_big",
    "build_too_big",
    "esp_sizes",
    "needs_frag_needed",
    "remove_stale_device",
    "tunnel_mtu",
    "worst_case_esp_overhead",
]
