"""aioipsec.selftest: the report, the table, failure detection, the ESP hand-off, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from aioipsec.selftest import (
    VECTORS_DIR,
    NistKatDrbg,
    format_table,
    run_record,
    run_selftest,
)

_ROOT = Path(__file__).resolve().parent.parent


def test_full_selftest_passes_and_table_lists_every_kind() -> None:
    report = run_selftest()
    assert report.ok, format_table(report)
    assert report.failed == 0
    assert report.passed >= 160
    table = format_table(report)
    for kind in ("prf", "ike_keys", "ke", "ke_mlkem_kat", "aead", "modp_group"):
        assert f"\n{kind} " in table
    assert "selftest OK" in table


def _copy_with(tmp_path: Path, file_name: str, change: Callable[[list[dict]], None]) -> Path:
    document = json.loads(VECTORS_DIR.joinpath(file_name).read_text())
    change(document["records"])
    (tmp_path / file_name).write_text(json.dumps(document))
    return tmp_path


def test_a_wrong_expected_value_fails(tmp_path: Path) -> None:
    def corrupt(records: list[dict]) -> None:
        output = records[0]["output"]
        records[0]["output"] = output[:-1] + ("0" if output[-1] != "0" else "1")

    report = run_selftest(_copy_with(tmp_path, "ike_prf_rfc4868.json", corrupt))
    assert not report.ok
    # the corrupted record, and the missing esp_*.json of this partial folder
    assert [f.file for f in report.failures] == ["ike_prf_rfc4868.json", "-"]
    assert "FAILED" in format_table(report)


def test_a_corrupted_mlkem_ciphertext_fails(tmp_path: Path) -> None:
    def corrupt(records: list[dict]) -> None:
        for record in records:
            if record["kind"] == "ke_mlkem_kat":
                ct = record["ciphertext"]
                record["ciphertext"] = ("1" if ct[0] != "1" else "2") + ct[1:]

    report = run_selftest(_copy_with(tmp_path, "ke_strongswan_kat.json", corrupt))
    assert len([f for f in report.failures if f.file == "ke_strongswan_kat.json"]) == 12


def test_unknown_kind_is_a_failure_not_a_pass() -> None:
    result = run_record("ike_x.json", {"kind": "no_such_kind", "name": "x", "source": "test"})
    assert result.status == "failed"
    assert "no selftest runner" in result.detail


def test_a_crash_in_a_runner_is_reported_as_failure() -> None:
    result = run_record("ike_x.json", {"kind": "prf", "name": "x", "source": "t", "prf": "NOPE"})
    assert result.status == "failed"
    assert "KeyError" in result.detail


def test_empty_folder_fails_loudly(tmp_path: Path) -> None:
    report = run_selftest(tmp_path)
    assert not report.ok
    (failure,) = report.failures
    assert f"no *.json vector files in {tmp_path}" in failure.detail
    assert "reinstall" in format_table(report)


def test_no_esp_vector_files_is_a_failure(tmp_path: Path) -> None:
    _copy_with(tmp_path, "ike_prf_rfc4868.json", lambda records: None)
    report = run_selftest(tmp_path)
    assert not report.ok
    assert report.passed > 0
    assert [f.name for f in report.failures] == ["ESP vector files"]
    assert "no esp_*.json vector files" in format_table(report)


def test_the_package_data_is_found_from_another_folder(tmp_path: Path) -> None:
    """The vectors are package data (importlib.resources), not a path relative to the cwd."""
    run = subprocess.run(
        [sys.executable, "-m", "aioipsec.selftest"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(_ROOT)},
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "selftest OK" in run.stdout


def test_esp_records_go_to_the_esp_module(tmp_path: Path) -> None:
    (tmp_path / "esp_dummy.json").write_text(
        json.dumps({"kind": "esp_packet", "records": [{"name": "n", "source": "s"}]})
    )
    report = run_selftest(tmp_path)
    (result,) = report.results
    assert result.kind == "esp_packet"  # file-wide kind inherited
    # a record without data cannot pass the ESP runner
    assert result.status == "failed"


def test_esp_selftest_import_failure_fails_every_esp_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # None in sys.modules makes the import raise ImportError, as a broken install would.
    monkeypatch.setitem(sys.modules, "esp.selftest", None)
    report = run_selftest()
    assert not report.ok
    esp_results = [r for r in report.results if r.file.startswith("esp_")]
    assert esp_results
    assert all(r.status == "failed" for r in esp_results)
    assert "esp.selftest failed to import" in esp_results[0].detail
    assert report.skipped == 0


def test_nist_kat_drbg_first_output() -> None:
    # NIST PQC KAT generator: seeding with 00 01 .. 2f and drawing 48 octets gives the first
    # "seed" of every PQCkemKAT .req file; it is the seed of the first liboqs ML-KEM KAT.
    drbg = NistKatDrbg(bytes(range(48)))
    assert drbg.random_bytes(48).hex() == (
        "061550234d158c5ec95595fe04ef7a25767f2e24cc2bc479d09d86dc9abcfde7"
        "056a8c266f9ef97ed08541dbd2e1ffa1"
    )


def test_module_entry_point_exit_codes(tmp_path: Path) -> None:
    ok = subprocess.run(
        [sys.executable, "-m", "aioipsec.selftest"], cwd=_ROOT, capture_output=True, text=True
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "selftest OK" in ok.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "aioipsec.selftest", str(tmp_path)],
        cwd=_ROOT,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1
