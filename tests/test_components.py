"""tests/components.py: a missing component is a skip that names it, and a failure in CI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import components

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def absent(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setitem(
        components.COMPONENTS, "absent", components.Component(lambda: False, "install it")
    )
    return "absent"


def test_missing_component_skips_with_its_name_and_hint(
    absent: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"missing component absent .*install it"):
        components.require_component("root", absent)


def test_missing_component_fails_under_ci(absent: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        components.require_component(absent)


def test_present_component_passes_and_aliases_resolve(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(components.COMPONENTS, "nftables", components.Component(lambda: True, ""))
    monkeypatch.setenv("CI", "true")
    components.require_component("nft", "nftables")  # the old executable name still works


def test_unknown_component_is_an_error() -> None:
    with pytest.raises(KeyError, match="unknown test component"):
        components.missing_components("no-such-thing")


_MARKED_TEST = """
import pytest
from tests import components

components.COMPONENTS["absent"] = components.Component(lambda: False, "install it")

@pytest.mark.needs("absent")
def test_x():
    pass
"""


@pytest.mark.parametrize("ci", ["", "true"])
def test_needs_marker_skips_or_fails_in_ci(tmp_path: Path, ci: str) -> None:
    """The marker, through the suite's conftest hook, in a pytest run of its own."""
    (tmp_path / "conftest.py").write_text("from tests.conftest import *  # noqa: F403\n")
    (tmp_path / "test_marked.py").write_text(_MARKED_TEST)
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-rs", "-p", "no:cacheprovider", "test_marked.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO), "CI": ci},
    )
    if ci:
        assert run.returncode == 1, run.stdout
        assert "1 error" in run.stdout and "CI=true" in run.stdout
    else:
        assert run.returncode == 0, run.stdout
        assert "1 skipped" in run.stdout and "missing component absent" in run.stdout
