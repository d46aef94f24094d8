"""Loading: the TOML file, then swanctl.conf, into one validated :class:`Configuration`.

:func:`load_configuration` is the entry point (``-c FILE`` and/or ``--swanctl-conf
FILE``); :class:`DaemonOptions` is what ``aioipsec daemon`` passes on, and re-reads the
files on reload.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aioipsec.config.build import RawSource, build_configuration, check_remote_access
from aioipsec.config.credentials import check_credentials, check_secret_file_modes
from aioipsec.config.model import ConfigError, Configuration, raise_collected
from aioipsec.config.swanctl import load_swanctl
from aioipsec.config.values import ValueProblem, parse_list

# --------------------------------------------------------------------------- TOML


def _toml_key_lines(text: str) -> dict[tuple[str, ...], int]:
    """Line numbers of tables and keys: a simple scan (tomllib does not report lines)."""

    def split_dotted(key_text: str) -> list[str]:
        parts = re.findall(r'"([^"]*)"|\'([^\']*)\'|([^.\s]+)', key_text)
        return [a or b or c for a, b, c in parts]

    lines: dict[tuple[str, ...], int] = {}
    table: tuple[str, ...] = ()
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        header = re.match(r"^\[\[?\s*(.+?)\s*\]\]?\s*(#.*)?$", stripped)
        if header:
            table = tuple(split_dotted(header.group(1)))
            for prefix_length in range(1, len(table) + 1):
                lines.setdefault(table[:prefix_length], number)
            continue
        assignment = re.match(r"^((?:\"[^\"]*\"|'[^']*'|[A-Za-z0-9_.\-\s])+?)\s*=", stripped)
        if assignment:
            key = (*table, *split_dotted(assignment.group(1)))
            lines.setdefault(key, number)
            for prefix_length in range(len(table) + 1, len(key)):
                lines.setdefault(key[:prefix_length], number)
    return lines


def load_toml(
    path: str | os.PathLike[str], configuration: Configuration | None = None
) -> Configuration:
    """Read and validate an aioipsec TOML file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"cannot read the file: {error.strerror}", file=path) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        line_match = re.search(r"line (\d+)", str(error))
        line = int(line_match.group(1)) if line_match else None
        raise ConfigError(
            f"not valid TOML: {error}", file=path, line=line, hint=_toml_hint(str(error))
        ) from None
    except RecursionError:
        raise ConfigError(
            f"not valid TOML: values nested too deeply (aioipsec reads at most "
            f"{_MAX_TOML_DEPTH} levels)",
            file=path,
        ) from None
    if _depth(data) > _MAX_TOML_DEPTH:
        raise ConfigError(
            f"values nested deeper than {_MAX_TOML_DEPTH} levels", file=path,
            hint="no aioipsec setting nests arrays or tables that deep",
        )  # fmt: skip
    key_lines = _toml_key_lines(text)

    def locate(key_path: tuple[str, ...]) -> tuple[str, int | None]:
        for length in range(len(key_path), 0, -1):
            if key_path[:length] in key_lines:
                return str(path), key_lines[key_path[:length]]
        return str(path), None

    allow_weak = configuration.daemon.allow_weak_algorithms if configuration else []
    daemon_table = data.get("daemon")
    if isinstance(daemon_table, dict) and "allow_weak_algorithms" in daemon_table:
        try:
            allow_weak = parse_list(daemon_table["allow_weak_algorithms"])
        except ValueProblem:
            pass  # reported with its location when [daemon] is validated
    source = RawSource(
        path=str(path), data=data, locate=locate, kind="toml", allow_weak=tuple(allow_weak)
    )
    configuration = build_configuration(source, configuration, finish=False)
    check_secret_file_modes(source.secret_files, configuration, source.problems)
    raise_collected(source.problems)
    return configuration


# The deepest aioipsec TOML is three tables deep; deeper data is refused before the walker
# (and Python's recursion limit) sees it.
_MAX_TOML_DEPTH = 32


def _depth(value: Any, level: int = 0) -> int:
    """How deep ``value`` nests (stops counting past the limit)."""
    if level > _MAX_TOML_DEPTH:
        return level
    children = (
        value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    )
    return max((_depth(child, level + 1) for child in children), default=level)


def _toml_hint(message: str) -> str | None:
    """The likely fix for tomllib's terse messages."""
    if message.startswith("Invalid value"):
        return 'a text value must be quoted: write key = "value" (yes/no: true or false)'
    return None


# --------------------------------------------------------------------------- loading


def load_configuration(
    toml_path: str | os.PathLike[str] | None = None,
    swanctl_path: str | os.PathLike[str] | None = None,
) -> Configuration:
    """Load ``-c FILE`` and/or ``--swanctl-conf FILE`` into one validated model.

    With both, ``[daemon]`` comes from the TOML file, connections and secrets from both
    (a connection name defined twice is an error).
    """
    if toml_path is None and swanctl_path is None:
        raise ConfigError(
            "no configuration given", hint="use -c FILE.toml and/or --swanctl-conf FILE"
        )
    configuration = Configuration()
    # Every problem of every file, in one run (`check` prints them all).
    problems: list[ConfigError] = []
    for loader, file in ((load_toml, toml_path), (load_swanctl, swanctl_path)):
        if file is None:
            continue
        try:
            loader(file, configuration)
        except ConfigError as error:
            problems.extend(error.errors)
    try:
        secrets_refused = any((e.key or "").startswith("secrets") for e in problems)
        check_credentials(configuration, secrets_refused)
    except ConfigError as error:
        problems.extend(error.errors)
    if not problems:
        try:
            check_remote_access(configuration)
        except ConfigError as error:
            problems.extend(error.errors)
    raise_collected(problems)
    if not configuration.connections:
        configuration.warnings.append("no connections configured: the daemon will only listen")
    return configuration


# --------------------------------------------------------------------------- daemon options


@dataclass
class DaemonOptions:
    """What ``aioipsec daemon`` hands to ``aioipsec.daemon.run_daemon(options)``.

    Command-line values override the ``[daemon]`` table (``None``: take the config's).
    """

    config_file: Path | None = None
    swanctl_conf: Path | None = None
    socket_path: str | None = None
    log_format: str | None = None
    log_level: str | None = None
    save_keys_dir: Path | None = None
    foreground: bool = True
    # Skip the start-up self-test (tests only; the CLI does not offer it).
    run_selftest: bool = True

    def load(self) -> Configuration:
        """Load and validate the configuration, then apply the command-line overrides.

        Call it again to reload (SIGHUP, ``aioipsec reload``): it re-reads the files.
        """
        configuration = load_configuration(self.config_file, self.swanctl_conf)
        if self.socket_path is not None:
            configuration.daemon.control_socket = self.socket_path
        if self.log_format is not None:
            configuration.daemon.log_format = self.log_format
        if self.log_level is not None:
            configuration.daemon.log_level = self.log_level
        return configuration
