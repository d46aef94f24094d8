"""Hardening tests (issue 8): fuzz targets in short runs, every bad-inputs.md class against the
running daemon, floods, loss, rekeys without data loss, restart recovery, secrets and
privileges. See docs/hardening.md."""
