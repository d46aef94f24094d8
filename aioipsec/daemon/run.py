"""Running the daemon: :func:`run_daemon` (``aioipsec daemon``) and :func:`main`
(``python -m aioipsec.daemon``): the self-test, the configuration, start, the log budget,
systemd's READY=1, the wait for SIGTERM and the stop."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

import structlog

from aioipsec import config as config_module
from aioipsec.config import DaemonOptions
from aioipsec.daemon.core import Daemon
from aioipsec.daemon.state import StartupError, status_line
from aioipsec.log import configure_logging
from aioipsec.ratelimit import install_log_budget
from aioipsec.sdnotify import notify
from aioipsec.selftest import format_table, run_selftest

log = structlog.get_logger("aioipsec.daemon")


def _selftest_summary(report: Any) -> str:
    passed = getattr(report, "passed", None)
    return (
        f"{passed} vectors passed, {getattr(report, 'skipped', 0)} skipped, {report.seconds:.2f} s"
    )


async def run_daemon(options: Any) -> int:
    """Run the daemon until SIGTERM/SIGINT; the exit status for the CLI.

    0 after a clean shutdown; 1 when the configuration is bad or the self-test fails (the
    message says which file/key and why), nothing having been started.
    """

    try:
        settings = options.load()
    except config_module.ConfigError as exc:
        log.error("bad configuration", error=str(exc))
        return 1
    if getattr(options, "run_selftest", True):
        report = run_selftest()
        if not report.ok:
            log.error("self-test failed: refusing to start\n" + format_table(report))
            return 1
        log.info("self-test passed", summary=_selftest_summary(report))
    loop = asyncio.get_running_loop()
    try:
        daemon = Daemon(options, settings, loop)
    except config_module.ConfigError as exc:
        log.error("bad configuration", error=str(exc))
        return 1
    try:
        await daemon.start()
    except (OSError, StartupError) as exc:
        log.error("cannot start", error=str(exc))
        return 1
    # Everything the daemon keeps for its lifetime exists now (modules, configuration,
    # sockets): the collector stops walking it (aioipsec/gcpolicy.py; its pauses were the
    # responder's p99 set-up time under load).
    daemon.collector.start(loop)
    # From here on the network can make lines: one budget over all of them (issue 13, F3).
    daemon.log_budget, uninstall_budget = install_log_budget(loop)
    # The self-test passed and every socket is bound: systemd's Type=notify may go on.
    notify("READY=1", "STATUS=" + status_line(daemon))
    try:
        await daemon.wait_stopped()
        await daemon.stop()
    finally:
        uninstall_budget()
        daemon.collector.stop()
    return 0


def _configure_logging(options: Any) -> None:
    """structlog set-up (console by default, JSON with --log-format json), as the CLI does."""

    configure_logging(
        getattr(options, "log_level", None) or "info",
        getattr(options, "log_format", None) or "console",
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m aioipsec.daemon -c FILE``: the daemon without the rest of the CLI
    (the same options as ``aioipsec daemon``; tests and the demo use it)."""

    parser = argparse.ArgumentParser(prog="python -m aioipsec.daemon")
    parser.add_argument("-c", "--config", type=Path)
    parser.add_argument("--swanctl-conf", type=Path)
    parser.add_argument("--socket")
    parser.add_argument("--log-format", choices=["console", "json"])
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--save-keys", type=Path)
    parser.add_argument("--no-selftest", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    options = DaemonOptions(
        config_file=args.config,
        swanctl_conf=args.swanctl_conf,
        socket_path=args.socket,
        log_format=args.log_format,
        log_level=args.log_level,
        save_keys_dir=args.save_keys,
        run_selftest=not args.no_selftest,
    )
    _configure_logging(options)
    return asyncio.run(run_daemon(options))
