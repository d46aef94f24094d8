"""``--export-vector``: a seeded run as a JSON test vector (inputs, messages, steps)."""

from __future__ import annotations

from typing import Any

from aioipsec.explain.derivations import Explanation
from aioipsec.explain.runner import (
    INITIATOR_ADDR,
    INITIATOR_ID,
    RESPONDER_ADDR,
    RESPONDER_ID,
    VECTOR_FORMAT,
)
from ikev2.enums import (
    ExchangeType,
)


def export_vector(explanation: Explanation) -> dict[str, Any]:
    """A JSON test vector: the inputs, every message and every derivation step."""
    run = explanation.run
    return {
        "format": VECTOR_FORMAT,
        "source": "aioipsec explain --seed (two in-memory aioipsec engines)",
        "seed": run.seed,
        "ike_proposal": run.ike_proposal,
        "esp_proposal": run.esp_proposal,
        "encap": run.encap,
        "rekey_ike": run.rekey_ike,
        "psk": run.psk.hex(),
        "initiator": {"address": INITIATOR_ADDR, "id": INITIATOR_ID},
        "responder": {"address": RESPONDER_ADDR, "id": RESPONDER_ID},
        "messages": [
            {
                "number": w.number,
                "from": "initiator" if w.from_initiator else "responder",
                "source": list(w.source),
                "destination": list(w.destination),
                "exchange": ExchangeType(w.message.header.exchange).name,
                "message_id": w.message.header.message_id,
                "response": w.message.header.response,
                "data": w.data.hex(),
            }
            for w in run.messages
        ],
        "steps": [step.as_vector() for step in explanation.steps],
    }
