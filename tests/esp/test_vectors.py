"""The ESP vectors of aioipsec/vectors/esp_*.json through esp.selftest.run_vector."""

from __future__ import annotations

import copy
import json

import pytest

from esp.selftest import run_vector
from tests.esp import convert_vectors

FILES = sorted(convert_vectors.VECTORS.glob("esp_*.json"))
RECORDS = [
    pytest.param(record, id=f"{path.name}:{record['name']}")
    for path in FILES
    for record in json.loads(path.read_text())["records"]
]


def test_files_present() -> None:
    assert {p.name for p in FILES} == set(convert_vectors.FILES)
    assert len(RECORDS) >= 30


@pytest.mark.parametrize("record", RECORDS)
def test_record(record: dict) -> None:
    assert record["source"] and record["kind"]
    run_vector(record)


def test_json_matches_reference_text() -> None:
    """The committed JSON is what the converter makes from tests/data/reference/vectors."""
    for name, text in convert_vectors.render().items():
        assert (convert_vectors.VECTORS / name).read_text() == text, name


@pytest.mark.parametrize(
    "field, index",
    [("packet", 20), ("plaintext", 3), ("payload", 0), ("encr_key", 0), ("iv", 1)],
)
def test_run_vector_detects_mismatches(field: str, index: int) -> None:
    """A record that disagrees with our code in any byte is reported, not passed."""
    record = copy.deepcopy(json.loads(FILES[0].read_text())["records"][1])
    value = bytearray.fromhex(record[field])
    value[index] ^= 0x01
    record[field] = value.hex()
    with pytest.raises(AssertionError):
        run_vector(record)
