"""The fuzz targets of ``fuzz/targets.py`` in a short run: hypothesis draws inputs (random,
and mutations of the seed corpus), every seed and every regression input is replayed.

The long, coverage-guided runs are ``python -m fuzz.run`` (atheris); this file keeps the
invariant checked on every ``make test``: any input is accepted or rejected through the
component's typed error, never another exception. ``AIOIPSEC_FUZZ_EXAMPLES`` raises the
number of hypothesis examples per target (default 150).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz.targets import TARGETS

FUZZ_DIR = Path(__file__).resolve().parents[2] / "fuzz"
EXAMPLES = int(os.environ.get("AIOIPSEC_FUZZ_EXAMPLES", "150"))
SLOW_TARGETS = {"swanctl_conf", "toml_config"}  # they write a file per input


def _files(kind: str, target: str) -> list[Path]:
    directory = FUZZ_DIR / kind / target
    return sorted(directory.iterdir()) if directory.is_dir() else []


def _seeds(target: str) -> list[bytes]:
    return [path.read_bytes() for path in _files("corpus", target)]


def _mutated(target: str) -> st.SearchStrategy[bytes]:
    """A seed with a few octets changed, cut or extended: past the first length checks."""
    seeds = _seeds(target) or [b""]

    @st.composite
    def build(draw: st.DrawFn) -> bytes:
        data = bytearray(draw(st.sampled_from(seeds)))
        for _ in range(draw(st.integers(0, 4))):
            if data and draw(st.booleans()):
                data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
            else:
                cut = draw(st.integers(0, len(data)))
                data[cut:cut] = draw(st.binary(max_size=8))
        if data and draw(st.integers(0, 5)) == 0:
            del data[draw(st.integers(0, len(data) - 1)) :]
        return bytes(data)

    return build()


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_seed_corpus_and_regressions(target: str) -> None:
    """Every seed (real messages/configurations) and every former crash input passes."""
    seeds = _files("corpus", target)
    assert seeds, f"fuzz/corpus/{target} is empty: run python -m fuzz.make_corpus"
    for path in seeds + _files("regressions", target):
        TARGETS[target](path.read_bytes())


@pytest.mark.timeout(120)
@pytest.mark.parametrize("target", sorted(TARGETS))
def test_random_and_mutated_inputs(target: str) -> None:
    examples = max(EXAMPLES // 5, 10) if target in SLOW_TARGETS else EXAMPLES
    function = TARGETS[target]

    @settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        database=None,
    )
    @given(st.one_of(st.binary(max_size=600), _mutated(target)))
    def check(data: bytes) -> None:
        function(data)

    check()


def test_the_runner_knows_every_target_by_name() -> None:
    """``fuzz.run`` keeps its own list of names (it must not import the targets before atheris
    instruments them): a target missing there cannot be run by name (twice so far)."""
    from fuzz.run import TARGET_NAMES

    assert sorted(TARGET_NAMES) == sorted(TARGETS)
