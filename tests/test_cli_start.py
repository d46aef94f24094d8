"""The start of a control command (issue 17: `aioipsec initiate` <= 2x charon + swanctl).

main() builds only the named command's parser (aioipsec.cli.build_parser): its help and
its usage errors must read exactly as the full parser's. A control command must not import
what it does not use (the import list is the start's cost; bench/notes.md has the figures).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from aioipsec.cli import _COMMAND_PARSERS, TOOLS, _first_word, build_parser

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = [name for name in _COMMAND_PARSERS if name not in TOOLS]


def _outcome(command: str | None, argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple:
    with pytest.raises(SystemExit) as info:
        build_parser(command).parse_args(argv)
    captured = capsys.readouterr()
    return info.value.code, captured.out, captured.err


@pytest.mark.parametrize("command", COMMANDS)
def test_one_commands_parser_reads_as_the_full_one(
    command: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "97")
    for argv in (
        [command, "--help"],
        [command, "--no-such-option"],
        ["--timeout", "soon", command],
        ["--socket", "/nonexistent", command, "--timeout"],
    ):
        full = _outcome(None, argv, capsys)
        assert full[0] in (0, 2) and (full[1] or full[2])
        assert _outcome(command, argv, capsys) == full, argv


def test_first_word_skips_only_the_plain_global_options() -> None:
    assert _first_word(["sas"]) == 0
    assert _first_word(["--socket", "sas", "initiate"]) == 2  # a socket path named sas
    assert _first_word(["--socket=/s", "-c", "f.toml", "--timeout", "3", "sas"]) == 5
    for unsure in (["--sock", "/s", "sas"], ["-h", "sas"], ["--socket"], [], ["-cf", "sas"]):
        assert _first_word(unsure) is None, unsure


def test_a_control_command_imports_only_the_client(tmp_path: Path) -> None:
    # -S: no site, so nothing but the command's own imports (an import finder of an
    # editable install would bring pathlib in at the interpreter's start).
    script = (
        "import sys; sys.path.insert(0, sys.argv[1]); import aioipsec.cli as cli; "
        "code = cli.main(['--socket', sys.argv[2], 'initiate', '--child', 'c']); "
        "heavy = ('typing', 'pathlib', 'socket', 'shutil', 'asyncio', 'structlog', "
        "'cryptography', 'aioipsec.config', 'aioipsec.control', 'ikev2'); "
        "print(code, sorted(m for m in heavy if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-S", "-c", script, str(ROOT), str(tmp_path / "no.sock")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.stdout.split("\n")[0] == "3 []", result.stdout + result.stderr
    assert "cannot reach the daemon" in result.stderr
