"""docs/rfc7296-walkthrough.md stays true: every ``text`` block in it is a contiguous
piece of what ``aioipsec explain --seed 1 --keys`` prints today, and every code path it
names exists."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from aioipsec.explain import explain_run, render_explanation, run_negotiation

DOC = Path(__file__).resolve().parents[2] / "docs" / "rfc7296-walkthrough.md"
pytestmark = pytest.mark.timeout(60)


def test_every_block_is_current_explain_output() -> None:
    output = render_explanation(explain_run(run_negotiation(seed=1)), keys=True)
    lines = "\n".join(line.rstrip() for line in output.splitlines())
    blocks = re.findall(r"```text\n(.*?)\n```", DOC.read_text(), re.S)
    assert len(blocks) >= 20
    for block in blocks:
        assert block in lines, block[:200]


def test_page_is_the_template_filled_with_todays_output() -> None:
    """If this fails after an engine change: python -m tests.teaching.regenerate_walkthrough
    and read the diff (the prose around the blocks may need an update too)."""
    from tests.teaching.regenerate_walkthrough import TEMPLATE, explain_output, render

    assert DOC.read_text() == render(TEMPLATE.read_text(), explain_output())


@pytest.mark.parametrize(
    "dotted",
    sorted(set(re.findall(r"`(ikev2\.[a-z_.]+[A-Za-z_]+)", DOC.read_text()))),
)
def test_named_code_paths_exist(dotted: str) -> None:
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        try:
            target = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for name in parts[split:]:
            target = getattr(target, name)
        return
    raise AssertionError(f"{dotted} not found")


def test_method_names_exist() -> None:
    from ikev2.crypto.sk import SkCipher
    from ikev2.dispatcher import Dispatcher
    from ikev2.sa import IkeSa

    text = DOC.read_text()
    owners = {"IkeSa": IkeSa, "Dispatcher": Dispatcher, "SkCipher": SkCipher}
    for owner, name in re.findall(r"`(IkeSa|Dispatcher|SkCipher)\.([a-z_]+)", text):
        assert hasattr(owners[owner], name), f"{owner}.{name}"
