"""Rendering: the run as a ladder diagram with every payload, and the derivation steps."""

from __future__ import annotations

from typing import Any

from aioipsec.decode import describe_payload, payload_name, short_name
from aioipsec.explain.derivations import Explanation, Step
from aioipsec.explain.runner import (
    INITIATOR_ID,
    RESPONDER_ID,
    WIDTH,
    WireMessage,
)
from ikev2.enums import (
    ExchangeType,
    PayloadType,
)


def _hex_block(value: bytes, indent: int) -> list[str]:
    text = value.hex()
    if not text:
        return ["(empty)"]
    width = 64  # 32 octets a line: one SHA-256 output or X25519 value
    return [text[i : i + width] for i in range(0, len(text), width)]


def render_step(step: Step, indent: str = "      ") -> list[str]:
    lines = [f"{indent}* {step.title}", f"{indent}  [{step.section}]"]
    for prefix, items in (("in ", step.inputs), ("out", step.outputs)):
        for name, value in items:
            if isinstance(value, bytes):
                head = f"{indent}  {prefix} {name} ({len(value)} octets):"
                lines.append(head)
                lines += [f"{indent}        {row}" for row in _hex_block(value, len(indent) + 8)]
            else:
                lines.append(f"{indent}  {prefix} {name}: {value}")
    if step.check:
        verdict = "ok" if step.ok else "MISMATCH"
        lines.append(f"{indent}  check: {step.check}: {verdict}")
    elif not step.ok:
        lines.append(f"{indent}  check: MISMATCH")
    return lines


def _arrow(wire: WireMessage) -> list[str]:
    header = wire.message.header
    role = "response" if header.response else "request"
    exchange = ExchangeType(header.exchange).name
    title = f"#{wire.number} {exchange} {role} (Message ID {header.message_id})"

    def name(payload: Any) -> str:
        # RFC 7296 writes the nonce and KE as Ni/Nr, KEi/KEr by the exchange's direction
        suffix = "r" if header.response else "i"
        if payload.TYPE == PayloadType.NONCE:
            return "N" + suffix
        if payload.TYPE == PayloadType.KE:
            return "KE" + suffix
        return short_name(payload)

    names = ["HDR"] + [name(p) for p in wire.message.payloads]
    if wire.inner is not None:
        names = ["HDR", "SK {" + ", ".join(name(p) for p in wire.inner.payloads) + "}"]
    span = WIDTH - 4
    rows = [f"  |  {title}".ljust(WIDTH - 1) + "|"]
    text = ", ".join(names)
    while text:
        cut = text[: span - 6]
        if len(text) > span - 6 and ", " in cut:
            cut = cut[: cut.rindex(", ") + 1]
        rows.append(f"  |  {cut.strip()}".ljust(WIDTH - 1) + "|")
        text = text[len(cut) :].strip()
    line = "-" * (WIDTH - 5)
    rows.append(f"  |{line[:-1]}>|" if wire.from_initiator else f"  |<{line[:-1]}|")
    return rows


def render_explanation(explanation: Explanation, *, keys: bool) -> str:
    run = explanation.run
    first = run.messages[0]
    lines = [
        "aioipsec explain: one IKEv2 negotiation between two in-memory aioipsec engines",
        f"seed: {run.seed if run.seed is not None else '(none: random, not reproducible)'}",
        f"IKE proposal: {run.ike_proposal}   ESP proposal: {run.esp_proposal}"
        f"{'   encap: yes' if run.encap else ''}",
        f"identities: {INITIATOR_ID} (initiator), {RESPONDER_ID} (responder); PSK auth",
        "",
        f"  Initiator {first.source[0]}".ljust(WIDTH - 20)
        + f"Responder {first.destination[0]}".rjust(20),
        "  |".ljust(WIDTH - 1) + "|",
    ]
    for wire in run.messages:
        lines += _arrow(wire)
        ports = f"{wire.source[0]}:{wire.source[1]} -> {wire.destination[0]}:{wire.destination[1]}"
        marker = (
            " after the 4-octet non-ESP marker (RFC 3948 sec. 2.2)"
            if 4500 in (wire.source[1], wire.destination[1])
            else ""
        )
        lines.append(f"      UDP {ports}: IKE message of {len(wire.data)} octets{marker}")
        lines += _message_details(wire)
        if keys:
            for step in explanation.steps_after.get(wire.number, []):
                lines += render_step(step)
        lines.append("  |".ljust(WIDTH - 1) + "|")
    lines.append("")
    mismatches = [s for s in explanation.steps if not s.ok]
    if mismatches:
        lines.append(
            f"MISMATCH in {len(mismatches)} step(s): " + "; ".join(s.title for s in mismatches)
        )
    elif keys:
        lines.append(f"all {len(explanation.steps)} derivation steps re-computed and checked")
    return "\n".join(lines) + "\n"


def _message_details(wire: WireMessage) -> list[str]:
    header = wire.message.header
    flags = [f for f, on in (("I", header.initiator), ("R", header.response)) if on]
    lines = [f"      HDR SPIi {header.spi_i.hex()} SPIr {header.spi_r.hex()} "
             f"flags {''.join(flags) or '-'} length {header.length}"]  # fmt: skip
    outer = wire.message.payloads
    for payload in outer:
        lines.append(f"      {payload_name(payload)}")
        lines += [f"        {row}" for row in describe_payload(payload)]
    if wire.inner is not None:
        lines.append(
            f"      inside SK ({wire.sk_keys}):" + ("" if wire.inner.payloads else " (nothing)")
        )
        for payload in wire.inner.payloads:
            lines.append(f"        {payload_name(payload)}")
            lines += [f"          {row}" for row in describe_payload(payload)]
    return lines
