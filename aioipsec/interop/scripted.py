"""Matrix rows that are scripts, not :class:`~aioipsec.interop.scenario.Scenario` runs.

Remote access (several clients, a pool, EAP) and redirection (three gateways) do not fit the
two-peer scenario model, so such a row is a function that builds its own namespaces in the
row's :class:`~aioipsec.netns.Lab`, checks what it needs and records what it saw in a
:class:`~aioipsec.interop.scenario.ScenarioRun` (``details``; ``problems`` when a check
fails). The matrix (``aioipsec interop``, docs/interop.md) and the pytest modules run these
rows through the same :func:`aioipsec.interop.matrix.run_row`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aioipsec.interop.scenario import Implementation, Scenario, ScenarioRun
from aioipsec.netns import Lab

RowBody = Callable[[Lab, Path, ScenarioRun], None]


@dataclass(frozen=True)
class ScriptedRow:
    """One scripted row: ``body(lab, workdir, run)`` raises AssertionError when a check fails."""

    name: str
    initiator: Implementation
    responder: Implementation
    body: RowBody
    # The notify the row expects the exchange to fail with (the table says so).
    expect_failure: str | None = None
    what: str = ""  # one line for docs and --list

    @property
    def connection_name(self) -> str:
        return re.sub(r"[^A-Za-z0-9_-]", "_", self.name) or "interop"

    def execute(self, lab: Lab, workdir: Path) -> ScenarioRun:
        # The run's scenario carries the row's name and roles, for the table's columns.
        run = ScenarioRun(
            Scenario(
                name=self.name,
                initiator=self.initiator,
                responder=self.responder,
                expect_failure=self.expect_failure,
            )
        )
        try:
            self.body(lab, workdir, run)
        except AssertionError as failure:
            run.problems.append(str(failure) or "a check failed")
        return run


def record_sa(run: ScenarioRun, sas: dict[str, Any], connection: str) -> None:
    """Keep the initiator's list-sas view of CONNECTION under the row's name, so the table's
    "negotiated" column shows its algorithms."""
    ike = sas.get(connection)
    if ike is not None:
        run.initiator_sas = {run.scenario.connection_name: ike}
