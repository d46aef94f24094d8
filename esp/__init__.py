"""ESP and AH data plane (RFC 4303, RFC 4302): SAs, SAD, SPD, anti-replay, lifetimes.

The data plane takes keys; it never negotiates them. See docs/esp.md for the API.
Imports nothing from ``aioipsec`` and only ``ikev2.enums`` from ``ikev2``.
"""

from esp.ah import AhSa
from esp.errors import DropReason, EspDrop, InvalidKey, UnsupportedAlgorithm
from esp.events import Acquire, Lifetime, SaExpired
from esp.replay import ReplayWindow
from esp.sa import Direction, EspSa, Mode
from esp.sad import Sad, UnknownSpi
from esp.selectors import PacketFields, Selector, packet_fields
from esp.spd import BYPASS, Action, Policy, PolicyDirection, Spd, Template

__all__ = [
    "BYPASS",
    "Acquire",
    "Action",
    "AhSa",
    "Direction",
    "DropReason",
    "EspDrop",
    "EspSa",
    "InvalidKey",
    "Lifetime",
    "Mode",
    "PacketFields",
    "Policy",
    "PolicyDirection",
    "ReplayWindow",
    "SaExpired",
    "Sad",
    "Selector",
    "Spd",
    "Template",
    "UnknownSpi",
    "UnsupportedAlgorithm",
    "packet_fields",
]
