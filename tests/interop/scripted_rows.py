"""What the pytest modules of scripted matrix rows (aioipsec/interop/scripted.py) check: the
row ran through the matrix's own runner, found no problem, and recorded what it checked.

``RowPool`` runs a module's selected rows JOBS at a time (AIOIPSEC_INTEROP_JOBS, default 3,
as tests/interop/test_matrix.py; each row in its own namespaces, as ``aioipsec interop
--jobs`` runs them), started by the module's first test; each test checks its own row."""

from __future__ import annotations

import concurrent.futures
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from aioipsec.interop.matrix import run_row
from aioipsec.interop.scenario import ScenarioRun
from aioipsec.interop.scripted import ScriptedRow

JOBS = int(os.environ.get("AIOIPSEC_INTEROP_JOBS", "3"))
Outcome = tuple["ScenarioRun | None", str, Path]


def _check(row: ScriptedRow, outcome: Outcome) -> None:
    run, error, workdir = outcome
    assert run is not None, f"{error}\nlogs kept in {workdir}"
    assert run.problems == [], f"{run.problems}\nlogs kept in {workdir}"
    assert run.details, "the row recorded nothing it checked"
    print(f"{row.name}: {'; '.join(run.details)}")


class RowPool:
    """The rows of ALL_ROWS selected in this session, submitted in collection order to
    JOBS threads; ``check(row)`` waits for that row (pytest-timeout bounds the wait)."""

    def __init__(
        self, request: pytest.FixtureRequest, test_name: str, all_rows: Sequence[ScriptedRow],
        tag: str,
    ) -> None:  # fmt: skip
        selected = {
            item.callspec.params["row"].name
            for item in request.session.items
            if getattr(item, "originalname", "") == test_name and hasattr(item, "callspec")
        }
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, JOBS))
        # Namespaces tagged with the row's index in ALL_ROWS (as when the rows ran one by one).
        self.futures: dict[str, concurrent.futures.Future[Outcome]] = {
            row.name: self.pool.submit(run_row, row, lab_tag=f"{tag}{index}")
            for index, row in enumerate(all_rows)
            if row.name in selected
        }

    def check(self, row: ScriptedRow) -> None:
        _check(row, self.futures[row.name].result())

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def pool_fixture(test_name: str, all_rows: Sequence[ScriptedRow], tag: str) -> Any:
    """A module-scoped ``rows`` fixture: the selected rows of ALL_ROWS (parametrised as
    ``row`` of TEST_NAME) run JOBS at a time from the module's first test on."""

    @pytest.fixture(scope="module", name="rows")
    def rows(request: pytest.FixtureRequest) -> Iterator[RowPool]:
        pool = RowPool(request, test_name, all_rows, tag)
        yield pool
        pool.close()

    return rows
