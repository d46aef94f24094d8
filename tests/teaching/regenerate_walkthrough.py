"""Rebuild docs/rfc7296-walkthrough.md from tests/teaching/walkthrough.template.md and the
output of ``aioipsec explain --seed 1 --keys`` (run this after a change to the engine's
messages makes tests/teaching/test_walkthrough.py fail, then read the diff):

    python -m tests.teaching.regenerate_walkthrough

Markers in the template: ``@@HEAD@@`` (the title lines of the output), ``@@MSGn@@`` (the
ladder arrow and payloads of message n), ``@@STEPn.k@@`` (the k-th derivation step shown
after message n).
"""

from __future__ import annotations

import re
from pathlib import Path

from aioipsec.explain import explain_run, render_explanation, run_negotiation

HERE = Path(__file__).resolve().parent
TEMPLATE = HERE / "walkthrough.template.md"
DOC = HERE.parents[1] / "docs" / "rfc7296-walkthrough.md"


def explain_output() -> list[str]:
    text = render_explanation(explain_run(run_negotiation(seed=1)), keys=True)
    return [line.rstrip() for line in text.splitlines()]


def render(template: str, lines: list[str]) -> str:
    starts: dict[int, int] = {}
    steps: dict[int, list[int]] = {}
    current = None
    for index, line in enumerate(lines):
        match = re.match(r"  \|  #(\d+) ", line)
        if match:
            current = int(match.group(1))
            starts[current] = index
            steps[current] = []
        elif current is not None and line.startswith("      * "):
            steps[current].append(index)

    def end_of(number: int) -> int:
        # the "  |   |" separator line in front of the next arrow (or of the summary)
        return starts.get(number + 1, len(lines) - 2) - 1

    def fence(block: list[str]) -> str:
        return "```text\n" + "\n".join(block) + "\n```"

    def replace(match: re.Match[str]) -> str:
        kind, argument = match.group(1), match.group(2)
        if kind == "HEAD":
            return fence(lines[: starts[1]])
        if kind == "MSG":
            number = int(argument)
            stop = steps[number][0] if steps[number] else end_of(number)
            return fence(lines[starts[number] : stop])
        number, k = (int(part) for part in argument.split("."))
        begin = steps[number][k - 1]
        stop = steps[number][k] if k < len(steps[number]) else end_of(number)
        return fence(lines[begin:stop])

    return re.sub(r"@@(MSG|STEP|HEAD)([0-9.]*)@@", replace, template)


def main() -> None:
    DOC.write_text(render(TEMPLATE.read_text(), explain_output()))
    print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
