"""Every record of vectors/*.json through our code, one pytest case per record.

The records come from RFC / NIST / strongSwan / liboqs known-answer files (each names its
``source``); the runners are the selftest's (aioipsec.selftest.RUNNERS). ESP records
(esp_*.json) are the data-plane helper's and are run here too when esp.selftest exists.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aioipsec.selftest import VECTORS_DIR, load_vector_files, run_record

_RECORDS = load_vector_files()
_REFERENCE_DIR = VECTORS_DIR.parent.parent / "shared" / "reference" / "vectors"


def _case_id(item: tuple[str, dict]) -> str:
    file_name, record = item
    return f"{file_name}:{record.get('kind')}:{record.get('name', '?')}"


@pytest.mark.parametrize("item", _RECORDS, ids=[_case_id(item) for item in _RECORDS])
def test_vector(item: tuple[str, dict]) -> None:
    file_name, record = item
    result = run_record(file_name, record)
    if result.status == "skipped":
        pytest.skip(result.detail)
    assert result.status == "passed", result.detail


def test_every_record_names_kind_and_source() -> None:
    ike_files = [p for p in VECTORS_DIR.glob("*.json") if not p.name.startswith("esp_")]
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


@pytest.mark.skipif(not _REFERENCE_DIR.is_dir(), reason="shared/reference/vectors not here")
def test_json_matches_reference_text(tmp_path: Path) -> None:
    """The committed JSON is exactly what convert_reference.py makes from the text files."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "convert_reference", VECTORS_DIR / "convert_reference.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.HERE = tmp_path
    module.main(_REFERENCE_DIR)
    made = sorted(p.name for p in tmp_path.glob("*.json"))
    assert made
    for name in made:
        assert (tmp_path / name).read_text() == (VECTORS_DIR / name).read_text(), name
