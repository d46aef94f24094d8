"""aioipsec.selftest: the report, the table, failure detection, the ESP hand-off, exit codes."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

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


def _copy_with(tmp_path: Path, file_name: str, change) -> Path:  # type: ignore[no-untyped-def]
    document = json.loads((VECTORS_DIR / file_name).read_text())
    change(document["records"])
    (tmp_path / file_name).write_text(json.dumps(document))
    return tmp_path


def test_a_wrong_expected_value_fails(tmp_path: Path) -> None:
    def corrupt(records: list[dict]) -> None:
        output = records[0]["output"]
        records[0]["output"] = output[:-1] + ("0" if output[-1] != "0" else "1")

    report = run_selftest(_copy_with(tmp_path, "ike_prf_rfc4868.json", corrupt))
    assert not report.ok
    assert report.failed == 1
    assert "FAILED" in format_table(report)


def test_a_corrupted_mlkem_ciphertext_fails(tmp_path: Path) -> None:
    def corrupt(records: list[dict]) -> None:
        for record in records:
            if record["kind"] == "ke_mlkem_kat":
                ct = record["ciphertext"]
                record["ciphertext"] = ("1" if ct[0] != "1" else "2") + ct[1:]

    report = run_selftest(_copy_with(tmp_path, "ke_strongswan_kat.json", corrupt))
    assert report.failed == 12


def test_unknown_kind_is_a_failure_not_a_pass() -> None:
    result = run_record("ike_x.json", {"kind": "no_such_kind", "name": "x", "source": "test"})
    assert result.status == "failed"
    assert "no selftest runner" in result.detail


def test_a_crash_in_a_runner_is_reported_as_failure() -> None:
    result = run_record("ike_x.json", {"kind": "prf", "name": "x", "source": "t", "prf": "NOPE"})
    assert result.status == "failed"
    assert "KeyError" in result.detail


def test_empty_folder_is_not_ok(tmp_path: Path) -> None:
    assert not run_selftest(tmp_path).ok


def test_esp_records_go_to_the_esp_module(tmp_path: Path) -> None:
    (tmp_path / "esp_dummy.json").write_text(
        json.dumps({"kind": "esp_packet", "records": [{"name": "n", "source": "s"}]})
    )
    report = run_selftest(tmp_path)
    (result,) = report.results
    assert result.kind == "esp_packet"  # file-wide kind inherited
    if importlib.util.find_spec("esp.selftest") is None:
        assert result.status == "skipped"
        assert "esp not available" in result.detail
    else:
        # a record without data cannot pass the ESP runner
        assert result.status == "failed"


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
