"""The state tables: allowed and refused transitions, and the diagram generator."""

from __future__ import annotations

import pytest

from ikev2.states import (
    ChildState,
    IkeState,
    StateError,
    child_transition,
    ike_transition,
    main,
    mermaid,
)


def test_happy_paths() -> None:
    state = ike_transition(IkeState.CREATED, "send_init")
    state = ike_transition(state, "recv_init_response")
    assert ike_transition(state, "recv_auth_response") is IkeState.ESTABLISHED
    state = ike_transition(IkeState.CREATED, "recv_init_request")
    assert ike_transition(state, "recv_auth_request") is IkeState.ESTABLISHED
    assert child_transition(ChildState.CREATING, "installed") is ChildState.INSTALLED


def test_refused_transitions() -> None:
    # Rekeying an IKE SA that is not established (strongSwan CVE-2014-2338).
    with pytest.raises(StateError):
        ike_transition(IkeState.INIT_DONE, "rekey_start")
    with pytest.raises(StateError):
        ike_transition(IkeState.DELETED, "fail")
    with pytest.raises(StateError):
        child_transition(ChildState.CREATING, "rekey_start")


def test_mermaid(capsys: pytest.CaptureFixture[str]) -> None:
    text = mermaid()
    assert "CREATED --> INIT_SENT: send_init" in text
    assert main(["--mermaid"]) == 0
    assert capsys.readouterr().out.strip() == text
