"""docs/interop.md's rendering: the table titled "against strongSwan" holds only rows with
aioipsec on one side and charon on the other; the baseline and ours-to-ours rows are apart,
labelled."""

from __future__ import annotations

from pathlib import Path

from aioipsec.interop.matrix import MATRIX, markdown
from aioipsec.interop.scenario import ScenarioRun


def _sections(text: str) -> tuple[str, str]:
    head, _, reference = text.partition("## Reference rows: not aioipsec against strongSwan")
    return head, reference


def test_only_aioipsec_against_charon_rows_are_in_the_strongswan_table() -> None:
    results = [(s, ScenarioRun(scenario=s), "", Path("."), 0.0) for s in MATRIX]
    head, reference = _sections(markdown(results, "5.9.8", 1.0))
    assert head.startswith("# Interop matrix: aioipsec against strongSwan")
    for scenario in MATRIX:
        row = f"| `{scenario.name}` |"
        sides = {scenario.initiator, scenario.responder}
        if sides == {"aioipsec", "charon"}:
            assert row in head and row not in reference
        else:
            assert row in reference and row not in head
    assert "| `charon-to-charon` | baseline: charon against charon" in reference
    assert "| `ours-to-ours` | aioipsec against aioipsec |" in reference
    assert f"{len(MATRIX) - 3}/{len(MATRIX) - 3} rows of aioipsec against strongSwan" in head


def test_the_committed_doc_has_the_same_split() -> None:
    doc = (Path(__file__).resolve().parents[1] / "docs" / "interop.md").read_text()
    head, reference = _sections(doc)
    assert reference, "docs/interop.md has no reference-rows section"
    for name in ("charon-to-charon", "ours-to-ours", "ours-to-ours-behind-nat"):
        assert f"| `{name}` |" in reference and f"| `{name}` |" not in head
