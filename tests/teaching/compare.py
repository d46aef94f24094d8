"""Per-frame comparison of ``aioipsec decode`` records with tshark's dissection."""

from __future__ import annotations

from typing import Any

from ikev2.enums import ExchangeType, NotifyType, PayloadType
from tests.teaching.tshark_oracle import TsharkFrame


def _number(enum_type: Any, name: str) -> int:
    return int(name) if name.isdigit() else int(enum_type[name])


def flat_payload_types(names: list[Any]) -> list[int]:
    """Our ``payloads`` list (SK expanded as ``{"SK": [...]}``) as wire type numbers."""
    out: list[int] = []
    for name in names:
        if isinstance(name, dict):
            for outer, inner in name.items():
                out.append(_number(PayloadType, outer))
                out += [_number(PayloadType, n) for n in inner]
        else:
            out.append(_number(PayloadType, name))
    return out


def compare_frame(ours: dict[str, Any], theirs: TsharkFrame) -> list[str]:
    """Differences between one decoded frame and tshark's view of it (empty: they agree)."""
    problems: list[str] = []

    def check(what: str, mine: Any, other: Any) -> None:
        if mine != other:
            problems.append(f"frame {ours['frame']}: {what}: ours {mine!r}, tshark {other!r}")

    if theirs.exchange is not None:
        check("kind", ours["kind"], "ike")
        if ours["kind"] != "ike":
            return problems
        check("exchange", _number(ExchangeType, ours["exchange"]), theirs.exchange)
        check("message_id", ours["message_id"], theirs.message_id)
        check("spi_i", ours["spi_i"], theirs.spi_i)
        check("spi_r", ours["spi_r"], theirs.spi_r)
        check("initiator", ours["initiator"], theirs.initiator)
        check("response", ours["response"], theirs.response)
        check("payloads", flat_payload_types(ours["payloads"]), theirs.payload_types)
        check("notifies", [_number(NotifyType, n) for n in ours["notifies"]], theirs.notify_types)
    elif theirs.esp_spi is not None:
        check("kind", ours["kind"], "esp")
        if ours["kind"] != "esp":
            return problems
        check("spi", int(ours["spi"], 16), theirs.esp_spi)
        check("seq", ours["seq"], theirs.esp_seq)
        if theirs.esp_next_header is not None:
            check("decrypted", ours.get("decrypted"), True)
            check("next_header", ours.get("next_header"), theirs.esp_next_header)
            check("pad_length", ours.get("pad_length"), theirs.esp_pad_len)
            if theirs.icmp_idents and ours.get("inner"):
                inner = bytes.fromhex(ours["inner"])
                ihl = (inner[0] & 0x0F) * 4
                ident = int.from_bytes(inner[ihl + 4 : ihl + 6], "big")
                check("inner ICMP ident", ident, theirs.icmp_idents[-1])
    else:
        check("kind", ours["kind"] in ("other", "keepalive"), True)
    return problems
