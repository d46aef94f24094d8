"""Logging through structlog: readable console lines by default, JSON lines on request.

* :func:`configure_logging` sets structlog up once per process (``--log-format``,
  ``--log-level``); output goes to stderr (or the stream given).
* :func:`sa_logger` binds the connection name and IKE SA id, so every line about an SA
  carries them (``conn=site ike_sa=3``).
* :func:`redact_secrets` is a processor that refuses to print any value whose key looks
  like key material (``key``, ``secret``, ``psk``, ``password``, ``passphrase``,
  ``private``, ``sk_*``, ``keymat``, ...) — defence in depth: the code never logs keys,
  and if a future line tries, it prints ``<redacted>`` instead.
* :class:`RateLimitedLogger` for per-packet problems (bad ICV, unknown SPI): at most one
  line per key per interval, with the number of lines suppressed in between.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Callable, MutableMapping
from typing import Any, TextIO

import structlog

__all__ = [
    "REDACTED",
    "RateLimitedLogger",
    "configure_logging",
    "get_logger",
    "redact_secrets",
    "redact_value",
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


_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def configure_logging(
    level: str = "info", fmt: str = "console", stream: TextIO | None = None
) -> None:
    """Set structlog up: ``fmt`` is "console" (key=value lines) or "json" (one object a
    line, for journald/Loki/jq). Safe to call again (e.g. after a reload)."""
    if level not in _LEVELS:
        raise ValueError(f"unknown log level {level!r}: use one of {', '.join(_LEVELS)}")
    if fmt not in ("console", "json"):
        raise ValueError(f"unknown log format {fmt!r}: use console or json")
    stream = stream or sys.stderr
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
        logger_factory=structlog.PrintLoggerFactory(file=stream),
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
    return logger.bind(conn=connection, ike_sa=ike_sa_id, **extra)


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
