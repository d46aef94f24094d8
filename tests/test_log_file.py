"""``--log-file``: created 0600, never through a symlink, reopened for log rotation
(issue 21 item 3, issue 13 F9). The daemon-level test (mv, SIGHUP, ``reopen-logs``) is
tests/e2e/test_operations.py."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from aioipsec.log import LogFile, configure_logging, get_logger, reopen_log_file


def test_created_0600_even_with_a_loose_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        LogFile(tmp_path / "aioipsec.log").close()
    finally:
        os.umask(old)
    assert (tmp_path / "aioipsec.log").stat().st_mode & 0o777 == 0o600


def test_an_existing_readable_file_is_narrowed_to_0600(tmp_path: Path) -> None:
    path = tmp_path / "aioipsec.log"
    path.write_text("old line\n")
    path.chmod(0o644)
    LogFile(path).close()
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.read_text() == "old line\n"  # appended to, not truncated


def test_a_symlink_is_refused_and_its_target_untouched(tmp_path: Path) -> None:
    target = tmp_path / "shadow"
    target.write_text("root:x:0:0\n")
    target.chmod(0o640)
    (tmp_path / "aioipsec.log").symlink_to(target)
    with pytest.raises(OSError, match="symbolic link"):
        LogFile(tmp_path / "aioipsec.log")
    assert target.read_text() == "root:x:0:0\n"
    assert target.stat().st_mode & 0o777 == 0o640


def test_reopen_after_mv_writes_to_a_new_file(tmp_path: Path) -> None:
    path = tmp_path / "aioipsec.log"
    configure_logging("info", "json", stream=LogFile(path))
    try:
        get_logger("test").info("before rotation")
        path.rename(tmp_path / "aioipsec.log.1")
        get_logger("test").info("still to the moved file")
        assert reopen_log_file() == str(path)
        get_logger("test").info("after rotation")
    finally:
        configure_logging("info", "json", stream=io.StringIO())
    rotated = (tmp_path / "aioipsec.log.1").read_text()
    assert "before rotation" in rotated and "still to the moved file" in rotated
    assert "after rotation" not in rotated
    assert "after rotation" in path.read_text()
    assert path.stat().st_mode & 0o777 == 0o600


def test_no_log_file_nothing_to_reopen() -> None:
    configure_logging("info", "console", stream=io.StringIO())
    assert reopen_log_file() is None
