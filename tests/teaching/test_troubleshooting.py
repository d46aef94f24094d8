"""docs/troubleshooting.md quotes the engine's reason texts: reproduce each failure with two
real engines (tests/engine/harness.py) and check the page still quotes them verbatim."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ikev2.events import AuthenticationFailed, NegotiationFailed
from tests.engine.harness import make_pair

DOC = Path(__file__).resolve().parents[2] / "docs" / "troubleshooting.md"
pytestmark = pytest.mark.timeout(60)


def _doc_text() -> str:
    text = re.sub(r"^\s*> ?", "", DOC.read_text(), flags=re.M)
    return " ".join(text.split())


def _reasons(until: float = 60.0, **kwargs: object) -> tuple[list[str], list[str]]:
    net = make_pair(1, **kwargs)
    net.a.initiate("conn", "net", now=0.0)
    net.run_until(until)

    def texts(events: list) -> list[str]:
        out = []
        for event in events:
            if isinstance(event, AuthenticationFailed):
                out.append(f"authentication failed ({event.check}): {event.reason}")
            elif isinstance(event, NegotiationFailed):
                out.append(event.reason)
        return out

    return texts(net.events_a), texts(net.events_b)


def _quoted(text: str) -> bool:
    return " ".join(text.split()) in _doc_text()


def test_no_proposal_chosen_texts() -> None:
    initiator, responder = _reasons(
        a_proposals=["aes128gcm16-prfsha256-ecp256"], b_proposals=["aes256gcm16-prfsha384-x25519"]
    )
    assert _quoted(initiator[0]) and _quoted(responder[0])


def test_ts_unacceptable_texts() -> None:
    initiator, responder = _reasons(b_remote_ts=["10.9.0.0/16"])
    assert _quoted(responder[0])
    assert _quoted(initiator[0].split("'net': ")[1])  # quoted inside a sentence


def test_authentication_failed_texts() -> None:
    initiator, responder = _reasons(psk_a=b"a different pre-shared key, long enough")
    assert _quoted(initiator[0]) and _quoted(responder[0])


def test_pfs_on_one_side_fails_at_the_first_rekey() -> None:
    initiator, _ = _reasons(until=4200.0, a_esp=["aes256gcm16-x25519"], b_esp=["aes256gcm16"])
    assert len(initiator) == 1 and _quoted(initiator[0])
