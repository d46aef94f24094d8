"""Logging through structlog: readable console lines by default, JSON lines on request.

* :func:`configure_logging` sets structlog up once per process (``--log-format``,
  ``--log-level``); output goes to stderr (or the stream given).
* :func:`sa_logger` binds the connection name and IKE SA id, so every line about an SA
  carries them (``connection=site ike_sa_id=3``: the names the control protocol and the
  ``subscribe`` stream use too).
* :func:`redact_secrets` is a processor that refuses to print any value whose key looks
  like key material (``key``, ``secret``, ``psk``, ``password``, ``passphrase``,
  ``private``, ``sk_*``, ``keymat``, ...) — defence in depth: the code never logs keys,
  and if a future line tries, it prints ``<redacted>`` instead.
* :class:`LogFile` is ``--log-file``: created 0600, opened with ``O_NOFOLLOW``, and
  reopened by :func:`reopen_log_file` (SIGHUP, ``aioipsec reopen-logs``) so logrotate can
  move it away (docs/daemon.md, "Log files and rotation").
* :class:`RateLimitedLogger` for per-packet problems (bad ICV, unknown SPI): at most one
  line per key per interval, with the number of lines suppressed in between.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any, TextIO, cast

import structlog

__all__ = [
    "REDACTED",
    "LogFile",
    "RateLimitedLogger",
    "configure_logging",
    "get_logger",
    "redact_secrets",
    "redact_value",
    "reopen_log_file",
    "sa_logger",
]

REDACTED = "<redacted>"

# A key is secret when one of its words (split on _ and -) is one of these, or when it
# is an IKE key name (sk_d, sk_ei, ...). "keysize"/"key_size"/"key_bits"/"keyword" are
# one word or carry a qualifier that makes them harmless, so they are allowed.
_SECRET_WORDS = {
    "key", "keys", "secret", "secrets", "psk", "password", "passphrase", "private",
    "keymat", "skeyseed", "nonce_key", "pin",
}  # fmt: skip
_HARMLESS_QUALIFIERS = {"size", "bits", "len", "length", "id", "ids", "type", "exchange"}
_IKE_KEY_NAME = re.compile(r"^sk_(d|ai|ar|ei|er|pi|pr|a|e|p)$")


def is_secret_key(name: str) -> bool:
    """Whether a log field named ``name`` may hold key material."""
    lowered = name.lower()
    if _IKE_KEY_NAME.match(lowered):
        return True
    words = [w for w in re.split(r"[_\-\s.]+", lowered) if w]
    if not any(w in _SECRET_WORDS for w in words):
        return False
    return not any(w in _HARMLESS_QUALIFIERS for w in words)


def redact_value(value: Any, depth: int = 0) -> Any:
    if depth > 8:
        return value
    if isinstance(value, dict):
        return {
            k: (REDACTED if isinstance(k, str) and is_secret_key(k) else redact_value(v, depth + 1))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return type(value)(redact_value(v, depth + 1) for v in value)
    return value


def redact_secrets(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: replace the value of every secret-looking key (also nested)."""
    for key in list(event_dict):
        if key == "event":
            continue
        if is_secret_key(key):
            event_dict[key] = REDACTED
        else:
            event_dict[key] = redact_value(event_dict[key])
    return event_dict


class LogFile:
    """The daemon's ``--log-file``: a text stream that can be reopened at the same path.

    The file is created mode 0600 (log lines name peers, identities and addresses) and
    opened with ``O_NOFOLLOW``, so a symlink planted at the path does not make the daemon
    append to (or create) another file. An existing file readable by group or others is
    narrowed to 0600. :meth:`reopen` opens the path anew: after ``mv`` (logrotate), the
    lines go to the new file; if the new open fails, the old file stays in use.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._file = self._open()

    def _open(self) -> TextIO:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(self.path, flags, 0o600)
        except OSError as error:
            if error.errno == 40:  # ELOOP: the path is a symlink
                raise OSError(
                    error.errno,
                    f"{self.path} is a symbolic link: the log file must be a regular file "
                    "(remove the link or give another --log-file)",
                ) from None
            raise
        try:
            if os.fstat(fd).st_mode & 0o077:
                os.fchmod(fd, 0o600)
            return os.fdopen(fd, "a", buffering=1, encoding="utf-8")
        except BaseException:
            os.close(fd)
            raise

    def write(self, text: str) -> int:
        with self._lock:
            return self._file.write(text)

    def flush(self) -> None:
        with self._lock:
            self._file.flush()

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self._file.fileno()

    def reopen(self) -> None:
        """Open the path again and switch to it (the old file is closed)."""
        new = self._open()
        with self._lock:
            old, self._file = self._file, new
        old.close()

    def close(self) -> None:
        with self._lock:
            self._file.close()


_log_file: LogFile | None = None


def reopen_log_file() -> str | None:
    """Reopen the ``--log-file`` this process logs to (SIGHUP, ``reopen-logs``): its
    path, or None when the process logs to stderr. Raises OSError when it cannot."""
    if _log_file is None:
        return None
    _log_file.reopen()
    return str(_log_file.path)


_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def configure_logging(
    level: str = "info", fmt: str = "console", stream: TextIO | LogFile | None = None
) -> None:
    """Set structlog up: ``fmt`` is "console" (key=value lines) or "json" (one object a
    line, for journald/Loki/jq). Safe to call again (e.g. after a reload)."""
    if level not in _LEVELS:
        raise ValueError(f"unknown log level {level!r}: use one of {', '.join(_LEVELS)}")
    if fmt not in ("console", "json"):
        raise ValueError(f"unknown log format {fmt!r}: use console or json")
    global _log_file
    stream = stream or sys.stderr
    _log_file = stream if isinstance(stream, LogFile) else None
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer(sort_keys=False)
    else:
        colors = bool(getattr(stream, "isatty", lambda: False)())
        renderer = structlog.dev.ConsoleRenderer(colors=colors)
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_secrets,
    ]
    if fmt == "json":
        processors.append(structlog.processors.format_exc_info)
    processors.append(renderer)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        # A LogFile has the write/flush a TextIO has, which is all PrintLogger uses.
        logger_factory=structlog.PrintLoggerFactory(file=cast(TextIO, stream)),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str | None = None, **bound: Any) -> Any:
    """A structlog logger, with ``logger=name`` and any other fields bound."""
    logger = structlog.get_logger()
    if name:
        bound = {"logger": name, **bound}
    return logger.bind(**bound) if bound else logger


def sa_logger(logger: Any, connection: str, ike_sa_id: int | str, **extra: Any) -> Any:
    """``logger`` with the connection name and IKE SA id bound (every SA line has them)."""
    return logger.bind(connection=connection, ike_sa_id=ike_sa_id, **extra)


class RateLimitedLogger:
    """At most one line per ``key`` per ``interval`` seconds (per-packet problems).

    ``limiter.warning("esp_icv_mismatch", key=spi, spi=f"{spi:08x}")`` logs the first
    occurrence, swallows the next ones for ``interval`` seconds, then logs one line with
    ``suppressed=N``. Keys are bounded (``max_keys``; the oldest are forgotten) so a
    flood of random SPIs cannot grow memory.
    """

    def __init__(
        self,
        logger: Any,
        interval: float = 10.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 1024,
    ) -> None:
        self.logger = logger
        self.interval = interval
        self.clock = clock
        self.max_keys = max_keys
        # key -> [time of the last line logged, occurrences suppressed since]
        self._state: dict[Any, list[float]] = {}

    def log(self, level: str, event: str, *, key: Any = None, **fields: Any) -> bool:
        """Log unless rate-limited; True when a line was written."""
        now = self.clock()
        state_key = (event, key)
        state = self._state.get(state_key)
        if state is not None and now - state[0] < self.interval:
            state[1] += 1
            return False
        suppressed = int(state[1]) if state is not None else 0
        if state is None and len(self._state) >= self.max_keys:
            self._state.pop(next(iter(self._state)))
        self._state[state_key] = [now, 0]
        if suppressed:
            fields["suppressed"] = suppressed
        getattr(self.logger, level)(event, **fields)
        return True

    def debug(self, event: str, **fields: Any) -> bool:
        return self.log("debug", event, **fields)

    def info(self, event: str, **fields: Any) -> bool:
        return self.log("info", event, **fields)

    def warning(self, event: str, **fields: Any) -> bool:
        return self.log("warning", event, **fields)

    def error(self, event: str, **fields: Any) -> bool:
        return self.log("error", event, **fields)
