"""Every record of aioipsec/vectors/*.json through our code, one pytest case per record.

The records come from RFC / NIST / strongSwan / liboqs known-answer files (each names its
``source``); the runners are the selftest's (aioipsec.selftest.RUNNERS). ESP records
(esp_*.json) are the data-plane helper's and are run here too when esp.selftest exists.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aioipsec.selftest import VECTORS_DIR, load_vector_files, run_record, vector_files
from tests import convert_reference
from tests.reference_data import REFERENCE_VECTORS

_RECORDS = load_vector_files()


def _case_id(item: tuple[str, dict]) -> str:
    file_name, record = item
    return f"{file_name}:{record.get('kind')}:{record.get('name', '?')}"


@pytest.mark.parametrize("item", _RECORDS, ids=[_case_id(item) for item in _RECORDS])
def test_vector(item: tuple[str, dict]) -> None:
    file_name, record = item
    result = run_record(file_name, record)
    assert result.status == "passed", result.detail


def test_every_record_names_kind_and_source() -> None:
    ike_files = [p for p in vector_files() if not p.name.startswith("esp_")]
    assert len(ike_files) >= 10
    for path in ike_files:
        for record in json.loads(path.read_text())["records"]:
            assert record["kind"] and record["source"] and record["name"], (path.name, record)


def test_expected_coverage() -> None:
    kinds = {record.get("kind") for file_name, record in _RECORDS}
    for kind in (
        "prf", "integ", "prf_plus", "ike_skeyseed", "ike_dkm", "ike_keys", "child_keymat",
        "rekey_skeyseed", "psk_auth", "ke", "x_function", "modp_group", "ke_mlkem_kat",
        "aead", "cipher_cbc", "cipher_ctr", "sk_payload",
    ):  # fmt: skip
        assert kind in kinds
    methods = {record.get("method") for _file, record in _RECORDS}
    for method in ("ECP_256", "ECP_384", "ECP_521", "CURVE25519", "CURVE448",
                   "ML_KEM_512", "ML_KEM_768", "ML_KEM_1024", "MODP_2048"):  # fmt: skip
        assert method in methods


def test_json_matches_reference_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The committed JSON is exactly what convert_reference.py makes from the text files
    (tests/data/reference/vectors, copies of the reference collection)."""
    monkeypatch.setattr(convert_reference, "HERE", tmp_path)
    convert_reference.main(REFERENCE_VECTORS)
    made = sorted(p.name for p in tmp_path.glob("*.json"))
    assert made
    for name in made:
        assert (tmp_path / name).read_text() == VECTORS_DIR.joinpath(name).read_text(), name
