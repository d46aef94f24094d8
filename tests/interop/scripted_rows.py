"""What the pytest modules of scripted matrix rows (aioipsec/interop/scripted.py) check: the
row ran through the matrix's own runner, found no problem, and recorded what it checked."""

from __future__ import annotations

from aioipsec.interop.matrix import run_row
from aioipsec.interop.scripted import ScriptedRow


def check_row(row: ScriptedRow, lab_tag: str) -> None:
    run, error, workdir = run_row(row, lab_tag=lab_tag)
    assert run is not None, f"{error}\nlogs kept in {workdir}"
    assert run.problems == [], f"{run.problems}\nlogs kept in {workdir}"
    assert run.details, "the row recorded nothing it checked"
    print(f"{row.name}: {'; '.join(run.details)}")
