"""``aioipsec install-service``: the daemon as a systemd service (docs/daemon.md).

Writes ``aioipsec.service`` (``Type=notify``: the daemon sends ``READY=1`` over
``NOTIFY_SOCKET`` once the self-test passed and its sockets are bound, see
:mod:`aioipsec.sdnotify`; ``ExecReload`` sends SIGHUP, which reopens the log file and
reloads the configuration), checks it with ``systemd-analyze verify`` when that is
installed, and says what to run next. It never starts anything itself: ``systemctl`` is
the administrator's to run (and this machine may not even run systemd as PID 1).

The sandbox keeps what the daemon needs and nothing else: root without the capabilities
it never uses (CAP_NET_ADMIN for the TUN device, routes, rules and SO_MARK; CAP_NET_RAW
for the raw ESP socket; CAP_NET_BIND_SERVICE for port 500; CAP_CHOWN to give the control
socket its ``control_group``), a read-only file system except ``/run`` (the control socket,
and ``/run/xtables.lock`` for updown scripts that call iptables), ``/dev/net/tun`` as its
only device, and no new privileges for anything it starts.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

UNIT_NAME = "aioipsec.service"
DEFAULT_UNIT_DIR = Path("/etc/systemd/system")
DEFAULT_CONFIG = Path("/etc/aioipsec/aioipsec.toml")

SANDBOX = """\
# What the daemon needs, nothing more (docs/daemon.md, "As a systemd service").
CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW CAP_NET_BIND_SERVICE CAP_CHOWN
NoNewPrivileges=yes
ProtectSystem=strict
# The control socket (/run/aioipsec.sock) and iptables' lock of updown scripts.
ReadWritePaths=/run
ProtectHome=yes
PrivateTmp=yes
DevicePolicy=closed
DeviceAllow=/dev/net/tun rw
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
SystemCallArchitectures=native
UMask=0077
"""


def exec_start(
    config: Path | None, swanctl_conf: Path | None, python: str = sys.executable
) -> list[str]:
    """The daemon's command line: this Python (a virtual environment's too), in the
    foreground so that systemd supervises it and its log goes to the journal."""
    argv = [python, "-m", "aioipsec", "daemon", "--foreground"]
    if config is not None:
        argv += ["-c", str(config)]
    if swanctl_conf is not None:
        argv += ["--swanctl-conf", str(swanctl_conf)]
    return argv


_HIDDEN = {
    # ProtectHome=yes hides these; read-only is enough for the files the daemon reads.
    "ProtectHome=yes": ("/home/", "/root/", "/run/user/"),
    # PrivateTmp=yes gives the service an empty /tmp of its own.
    "PrivateTmp=yes": ("/tmp/", "/var/tmp/"),
}


def sandbox_for(paths: list[str]) -> tuple[str, list[str]]:
    """The sandbox lines for a daemon that reads PATHS (its Python, its configuration), and
    warnings: a file under /home or /root gets ProtectHome=read-only instead of yes; one
    under /tmp would be invisible behind PrivateTmp, which the caller is told."""
    sandbox = SANDBOX
    warnings = []
    for line, prefixes in _HIDDEN.items():
        hidden = [p for p in paths if p.startswith(prefixes)]
        if not hidden:
            continue
        if line == "ProtectHome=yes":
            sandbox = sandbox.replace(line, "ProtectHome=read-only")
            warnings.append(f"{hidden[0]} is under a home directory: ProtectHome=read-only")
        else:
            warnings.append(f"{hidden[0]} is under /tmp, which {line} hides from the "
                            "service: it will not start; move the file")  # fmt: skip
    return sandbox, warnings


def unit_text(argv: list[str], sandbox: str = SANDBOX) -> str:
    for word in argv:
        if any(c in word for c in "\n%$\\\"'") or not word:
            raise ValueError(f"{word!r} cannot be written into a unit's ExecStart=")
    return f"""\
# written by 'aioipsec install-service'; see docs/daemon.md
[Unit]
Description=aioipsec IKEv2/IPsec daemon (userspace ESP on a TUN device)
After=network-online.target
Wants=network-online.target

[Service]
Type=notify
NotifyAccess=main
ExecStart={shlex.join(argv)}
ExecReload=/bin/kill -HUP $MAINPID
# The known-answer self-test runs before READY=1.
TimeoutStartSec=90s
Restart=on-failure
RestartSec=5s
{sandbox}
[Install]
WantedBy=multi-user.target
"""


def verify(path: Path) -> tuple[bool | None, str]:
    """``systemd-analyze verify PATH``: (passed, its output), None when not installed.

    It exits 0 on an unknown key or a value it cannot parse (it only warns and ignores
    the line, as systemd would), so any line it prints about the unit fails the check."""
    tool = shutil.which("systemd-analyze")
    if tool is None:
        return None, "systemd-analyze is not installed (Debian package systemd)"
    result = subprocess.run(
        [tool, "verify", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    output = (result.stdout + result.stderr).strip()
    about_unit = [line for line in output.splitlines() if path.name in line]
    return result.returncode == 0 and not about_unit, output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="aioipsec install-service",
        description="Write the systemd unit aioipsec.service (Type=notify, sandboxed) that "
        "runs this installation's daemon, and check it with systemd-analyze verify. "
        "Starts nothing: run the systemctl commands it prints.",
    )
    parser.add_argument(
        "--unit-dir", type=Path, default=DEFAULT_UNIT_DIR, metavar="DIR",
        help=f"where to write {UNIT_NAME} (default {DEFAULT_UNIT_DIR})",
    )  # fmt: skip
    parser.add_argument(
        "-c", "--config", type=Path, metavar="FILE",
        help=f"the daemon's TOML configuration (default {DEFAULT_CONFIG} unless "
        "--swanctl-conf alone is given)",
    )  # fmt: skip
    parser.add_argument("--swanctl-conf", type=Path, metavar="FILE",
                        help="a strongSwan swanctl.conf for the daemon")  # fmt: skip
    parser.add_argument("--print", action="store_true", dest="print_only",
                        help="print the unit instead of writing it")  # fmt: skip
    args = parser.parse_args(argv)
    config = args.config
    if config is None and args.swanctl_conf is None:
        config = DEFAULT_CONFIG
    files = [p.resolve() if p is not None else None for p in (config, args.swanctl_conf)]
    argv_words = exec_start(files[0], files[1])
    sandbox, warnings = sandbox_for([argv_words[0], *(str(p) for p in files if p is not None)])
    for warning in warnings:
        print(f"aioipsec install-service: warning: {warning}", file=sys.stderr)
    try:
        text = unit_text(argv_words, sandbox)
    except ValueError as error:
        print(f"aioipsec install-service: {error}; use paths without quotes, '%', '$' "
              "or backslashes", file=sys.stderr)  # fmt: skip
        return 2
    if args.print_only:
        sys.stdout.write(text)
        return 0
    for path in files:
        if path is not None and not path.is_file():
            print(f"aioipsec install-service: {path} does not exist; the service would not "
                  "start: write it first (aioipsec check -c FILE validates it)",
                  file=sys.stderr)  # fmt: skip
            return 2
    target = args.unit_dir / UNIT_NAME
    try:
        args.unit_dir.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        target.chmod(0o644)
    except OSError as error:
        print(f"aioipsec install-service: cannot write {target}: {error.strerror}; "
              "run it as root or choose --unit-dir", file=sys.stderr)  # fmt: skip
        return 1
    ok, output = verify(target)
    if ok is False:
        print(f"aioipsec install-service: systemd-analyze verify {target} failed:\n{output}",
              file=sys.stderr)  # fmt: skip
        return 1
    print(f"wrote {target}" + ("" if ok else f" (not verified: {output})"))
    print("next: systemctl daemon-reload && systemctl enable --now aioipsec")
    print("      systemctl reload aioipsec  (SIGHUP: reopen the log, reload the configuration)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
