"""The micro-benchmark runs end to end (tiny iteration count, no timing assertion)."""

from __future__ import annotations

from bench import esp_micro


def test_bench_runs(capsys) -> None:
    assert esp_micro.main(["--iterations", "20", "--repeat", "2"]) == 0
    output = capsys.readouterr().out
    for text in ("AESGCM.encrypt (bare)", "EspSa.encrypt_into", "EspSa.decrypt_into", "1400"):
        assert text in output
