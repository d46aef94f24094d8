"""``aioipsec``: run the daemon, and talk to a running one through its control socket.

Exit status: 0 success; 1 the daemon refused or the command failed; 2 bad usage or a
configuration error; 3 no daemon reachable at the control socket.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence

# Start-up time: a command that asks the daemon (``aioipsec sas``) imports only these
# light modules (issue 17: <= 40 ms wall; `initiate` <= 2x charon + swanctl's ~13 ms).
# The configuration package (certificates, tokens, the engine: ~60 ms), asyncio and the
# logging stack (~40 ms) are imported by the commands that use them: daemon, check, and
# the except clause of ConfigError. Not even typing and pathlib (3 ms each): annotations
# are not evaluated (``from __future__ import annotations``), and a path option becomes
# a Path when it is given (_path).
from aioipsec.controlclient import ControlClient, ControlError, DaemonUnreachable
from aioipsec.defaults import DEFAULT_CONTROL_SOCKET, LOG_FORMATS, LOG_LEVELS

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing; mypy reads it so
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

    from aioipsec.config import ConfigError

    _Commands = argparse._SubParsersAction["_Parser"]

__all__ = [
    "build_parser",
    "main",
    "render_conns",
    "render_mapping",
    "render_reload",
    "render_sas",
    "render_stats",
    "run",
    "version_text",
]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
DEFAULT_LOG_FILE = "/var/log/aioipsec.log"


# --------------------------------------------------------------------------- renderers


def _events(listing: Any) -> list[tuple[str, dict[str, Any]]]:
    """VICI-style events (a list of ``{name: {...}}``, or one mapping) as (name, dict)."""
    if isinstance(listing, dict):
        listing = [listing]
    pairs: list[tuple[str, dict[str, Any]]] = []
    for event in listing or []:
        for name, body in event.items():
            pairs.append((name, body if isinstance(body, dict) else {}))
    return pairs


def _text(value: Any) -> str:
    if isinstance(value, list | tuple):
        return " ".join(str(v) for v in value)
    return "" if value is None else str(value)


def _yes(value: Any) -> bool:
    return value is True or str(value).lower() in ("yes", "true", "1")


def _algorithms(sa: dict[str, Any], with_prf: bool) -> str:
    parts = []
    if sa.get("encr-alg"):
        encr = str(sa["encr-alg"])
        if sa.get("encr-keysize"):
            encr += f"-{sa['encr-keysize']}"
        parts.append(encr)
    if sa.get("integ-alg"):
        integ = str(sa["integ-alg"])
        if sa.get("integ-keysize"):
            integ += f"-{sa['integ-keysize']}"
        parts.append(integ)
    if with_prf and sa.get("prf-alg"):
        parts.append(str(sa["prf-alg"]))
    if sa.get("dh-group"):
        parts.append(str(sa["dh-group"]))
    for index in range(1, 8):
        if sa.get(f"ake{index}"):
            parts.append(f"KE{index}_{sa[f'ake{index}']}")
    if _yes(sa.get("esn")):
        parts.append("ESN")
    return "/".join(parts)


def _timers(pairs: Sequence[tuple[str, str]], sa: dict[str, Any]) -> str:
    return "".join(f", {label} {sa[key]}s" for key, label in pairs if sa.get(key) is not None)


def render_sas(listing: Any) -> str:
    """``swanctl --list-sas`` text from the daemon's ``sas`` result (VICI list-sas keys)."""
    lines: list[str] = []
    for name, ike in _events(listing):
        initiator = _yes(ike.get("initiator"))
        lines.append(
            f"{name}: #{ike.get('uniqueid', '?')}, {ike.get('state', '?')}, "
            f"IKEv{ike.get('version', 2)}, {ike.get('initiator-spi', '?')}_i"
            f"{'*' if initiator else ''} {ike.get('responder-spi', '?')}_r"
            f"{'' if initiator else '*'}"
        )
        lines.append(
            f"  local  '{ike.get('local-id', '')}' @ {ike.get('local-host', '?')}"
            f"[{ike.get('local-port', '?')}]"
        )
        lines.append(
            f"  remote '{ike.get('remote-id', '')}' @ {ike.get('remote-host', '?')}"
            f"[{ike.get('remote-port', '?')}]"
        )
        if ike.get("encr-alg"):
            lines.append("  " + _algorithms(ike, with_prf=True))
        if ike.get("established") is not None:
            timers = _timers(
                (
                    ("rekey-time", "rekeying in"),
                    ("reauth-time", "reauth in"),
                    ("life-time", "expires in"),
                ),
                ike,
            )
            lines.append(f"  established {ike['established']}s ago{timers}")
        for _, child in _events(ike.get("child-sas") or {}):
            mode = str(child.get("mode", "TUNNEL"))
            if _yes(child.get("encap")):
                mode += "-in-UDP"
            reqid = f", reqid {child['reqid']}" if child.get("reqid") is not None else ""
            lines.append(
                f"  {child.get('name', '?')}: #{child.get('uniqueid', '?')}{reqid}, "
                f"{child.get('state', '?')}, {mode}, {child.get('protocol', 'ESP')}:"
                f"{_algorithms(child, with_prf=False)}"
            )
            timers = _timers((("rekey-time", "rekeying in"), ("life-time", "expires in")), child)
            installed = child.get("install-time")
            if installed is not None:
                lines.append(f"    installed {installed}s ago{timers}")
            elif timers:
                lines.append("    " + timers[2:])
            for direction, label in (("in", "in "), ("out", "out")):
                lines.append(
                    f"    {label} {child.get(f'spi-{direction}', '?')}, "
                    f"{_text(child.get(f'bytes-{direction}', 0)):>6} bytes, "
                    f"{_text(child.get(f'packets-{direction}', 0)):>5} packets"
                    + (
                        f", {child[f'use-{direction}']:>5}s ago"
                        if child.get(f"use-{direction}") is not None
                        else ""
                    )
                )
            lines.append(f"    local  {_text(child.get('local-ts'))}")
            lines.append(f"    remote {_text(child.get('remote-ts'))}")
    return "\n".join(lines)


def render_conns(listing: Any) -> str:
    """``swanctl --list-conns`` text (as strongSwan 5.9 prints it) from a ``conns``
    result (VICI list-conns keys)."""
    lines: list[str] = []
    for name, conn in _events(listing):
        reauth = int(conn.get("reauth_time") or 0)
        rekey = int(conn.get("rekey_time") or 0)
        dpd_delay = int(conn.get("dpd_delay") or 0)
        text = f"{name}: {conn.get('version', 'IKEv2')}, "
        text += f"reauthentication every {reauth}s" if reauth else "no reauthentication"
        text += f", rekeying every {rekey}s" if rekey else ", no rekeying"
        if dpd_delay:
            text += f", dpd delay {dpd_delay}s"
        lines.append(text)
        for addr in conn.get("local_addrs") or []:
            lines.append(f"  local:  {addr}")
        for addr in conn.get("remote_addrs") or []:
            lines.append(f"  remote: {addr}")
        for side in ("local", "remote"):
            auth = conn.get(f"{side}-1") or {}
            lines.append(f"  {side} {auth.get('class', 'unspecified')} authentication:")
            if auth.get("id"):
                lines.append(f"    id: {auth['id']}")
            if auth.get("certs"):
                lines.append(f"    certs: {_text(auth['certs'])}")
            if auth.get("cacerts"):
                lines.append(f"    cacerts: {_text(auth['cacerts'])}")
        for child_name, child in (conn.get("children") or {}).items():
            limits = [
                f"{child[key]}{unit}"
                for key, unit in (
                    ("rekey_time", "s"),
                    ("rekey_bytes", " bytes"),
                    ("rekey_packets", " packets"),
                )
                if int(child.get(key) or 0)
            ]
            text = f"  {child_name}: {child.get('mode', 'TUNNEL')}, "
            text += "rekeying every " + " or ".join(limits) if limits else "no rekeying"
            if dpd_delay:
                text += f", dpd action is {child.get('dpd_action', 'none')}"
            lines.append(text)
            lines.append(f"    local:  {_text(child.get('local-ts'))}")
            lines.append(f"    remote: {_text(child.get('remote-ts'))}")
    return "\n".join(lines)


def render_mapping(value: Any, indent: int = 0) -> str:
    """Plain text for ``policies``/``stats`` results: a ``text`` member is printed as is,
    anything else as indented ``key: value`` lines."""
    if isinstance(value, dict) and isinstance(value.get("text"), str):
        return value["text"].rstrip("\n")
    pad = "  " * indent
    lines: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, dict | list) and item:
                lines.append(f"{pad}{key}:")
                lines.append(render_mapping(item, indent + 1))
            else:
                lines.append(f"{pad}{key}: {_text(item) if item not in ({}, []) else '-'}")
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, dict | list):
                lines.append(render_mapping(item, indent))
            else:
                lines.append(f"{pad}{_text(item)}")
    else:
        lines.append(f"{pad}{_text(value)}")
    return "\n".join(line for line in lines if line != "")


# Units of the stats counters in text (docs/cli.md has the legend); the rest are counts.
_STATS_UNITS = {"uptime": "s", "bytes_in": "bytes", "bytes_out": "bytes", "tun_mtu": "bytes"}
# Drops and refusals, explained once in the text (the same words as docs/cli.md).
_STATS_LEGEND = {
    "no_policy": "outbound packets on the TUN device that match no policy: dropped",
    "unknown_spi": "ESP packets for an SPI we do not have (old SA, or not for us)",
    "held": "packets held while a trap negotiates their SA",
    "held_dropped": "held packets dropped (queue full, or the negotiation failed)",
    "bypass_dropped": "packets dropped by a DROP/bypass policy",
    "esp_drops": "ESP packets dropped before an SA was found (malformed, too short)",
    "too_big_sent": "ICMP 'fragmentation needed' sent back for packets over the MTU",
}


def _stats_key(key: str) -> str:
    """One style for every key: snake_case (the daemon's JSON mixes ike-sas/bytes_in)."""
    return key.replace("-", "_")


def _stats_value(key: str, value: Any) -> str:
    unit = _STATS_UNITS.get(key)
    return f"{value} {unit}" if unit else str(value)


def render_stats(stats: Any) -> str:
    """``aioipsec stats`` text: groups, one key style (snake_case), units, empty groups
    left out, and a short note after the drop counters that are not zero."""
    if not isinstance(stats, dict):
        return render_mapping(stats)
    lines: list[str] = []
    top = {_stats_key(k): v for k, v in stats.items() if not isinstance(v, dict)}
    daemon = [f"{k} {_stats_value(k, top.pop(k))}" for k in ("pid", "uptime") if k in top]
    if daemon:
        lines.append("daemon: " + ", ".join(daemon))
    ike = {k.removeprefix("ike_"): v for k, v in top.items() if k.startswith("ike")}
    ike = {("send_errors_500" if k == "ike500_send_errors" else k): v for k, v in ike.items()}
    ike.update({_stats_key(k): v for k, v in (stats.get("ike") or {}).items()})
    if ike:
        lines.append("ike:")
        lines += [f"  {k}: {_stats_value(k, v)}" for k, v in ike.items()]
    sockets = stats.get("sockets") or {}
    if sockets:
        lines.append("sockets:")
        for name, counters in sockets.items():
            text = ", ".join(f"{_stats_key(k)} {v}" for k, v in (counters or {}).items())
            lines.append(f"  {_stats_key(name)}: {text}")
    esp = {_stats_key(k): v for k, v in (stats.get("esp") or {}).items()}
    if esp:
        lines.append("esp:")
        for key, value in esp.items():
            if isinstance(value, list) and all(isinstance(item, dict) for item in value):
                # worker_list (worker_steering = sa): one line per worker, not a Python list
                lines.append(f"  {key}:")
                lines += [f"    {_flat(item)}" for item in value]
                continue
            note = _STATS_LEGEND.get(key) if value else None
            lines.append(f"  {key}: {_stats_value(key, value)}" + (f"  ({note})" if note else ""))
    for key, value in top.items():
        if not key.startswith("ike"):
            lines.append(f"{key}: {_stats_value(key, value)}")
    for key, value in stats.items():
        # Any other group, in the same style; an empty one is left out (no "name: -").
        if isinstance(value, dict) and value and key not in ("ike", "sockets", "esp"):
            lines.append(f"{_stats_key(key)}:")
            lines += [
                f"  {_stats_key(str(k))}: {_text(v) if not isinstance(v, dict) else _flat(v)}"
                for k, v in value.items()
            ]
    return "\n".join(lines) if lines else "no stats"


def _flat(value: dict[str, Any]) -> str:
    return ", ".join(f"{_stats_key(str(k))} {_text(v)}" for k, v in value.items())


def render_reload(result: Any) -> str:
    """``aioipsec reload`` text: what was added, removed and changed, and what that did
    to the running SAs."""
    if not isinstance(result, dict) or "added" not in result:
        return render_mapping(result) if result else "configuration reloaded"
    counts = ", ".join(
        f"{len(result.get(key) or [])} {key}" for key in ("added", "removed", "changed")
    )
    lines = [f"configuration reloaded: {counts}, {len(result.get('unchanged') or [])} unchanged"]
    for key in ("added", "removed", "changed", "unchanged"):
        if result.get(key):
            lines.append(f"  {key + ':':<10} {', '.join(result[key])}")
    lines += [f"  {effect}" for effect in result.get("effects") or []]
    if not any(result.get(key) for key in ("added", "removed", "changed")):
        lines.append("  nothing changed; running SAs untouched")
    return "\n".join(lines)


# --------------------------------------------------------------------------- parser

_DESCRIPTION = f"""\
aioipsec: a pure-Python IKEv2/ESP IPsec daemon.

Start the daemon with 'aioipsec daemon -c FILE.toml' (or --swanctl-conf swanctl.conf);
the other commands talk to a running daemon through its control socket (--socket, or
the [daemon] control_socket of the TOML given with -c, default {DEFAULT_CONTROL_SOCKET}).
"""

_EPILOG = """\
exit status: 0 success, 1 the command failed, 2 bad usage or configuration,
3 no daemon reachable. See docs/cli.md."""


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("aioipsec")
    except PackageNotFoundError:
        return "(not installed)"


def version_text() -> str:
    """``--version``: ours, and what the crypto runs on (as ``charon --version`` and
    ``openssl version`` together would say): Python, cryptography, OpenSSL, AES-NI."""
    import platform

    lines = [f"aioipsec {_version()}", f"Python {platform.python_version()}"]
    try:
        import cryptography
        from cryptography.hazmat.backends.openssl.backend import backend

        lines.append(f"cryptography {cryptography.__version__}")
        lines.append(backend.openssl_version_text())
    except ImportError as error:  # pragma: no cover - cryptography is a dependency
        lines.append(f"cryptography not available ({error})")
    from aioipsec.doctor import check_aes_ni

    aes = check_aes_ni()
    # OpenSSL uses AES-NI when the CPU has it, unless OPENSSL_ia32cap clears the AES bit
    # (bit 57 of the first word: "~0x200000000000000").
    mask = os.environ.get("OPENSSL_ia32cap", "")  # noqa: SIM112 (OpenSSL spells it so)
    try:
        masked = mask.startswith("~") and bool(int(mask[1:].split(":")[0], 0) & (1 << 57))
    except ValueError:
        masked = False
    if aes.status == "OK" and masked:
        lines.append("AES-NI: not used (the CPU has it; OPENSSL_ia32cap turns it off)")
    elif aes.status == "OK":
        lines.append("AES-NI: used (the CPU has AES instructions; OpenSSL uses them)")
    else:
        lines.append(f"AES-NI: not used ({aes.detail})")
    return "\n".join(lines)


class _VersionAction(argparse.Action):
    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> None:
        print(version_text())
        parser.exit()


def _columns() -> int:
    """The terminal's width as shutil.get_terminal_size() tells it ($COLUMNS, else the
    terminal of stdout, else 80), without importing shutil (with bz2, lzma and fnmatch:
    ~1.5 ms of each start; argparse's formatter imports it for every argument added)."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    stdout = sys.__stdout__
    if columns <= 0 and stdout is not None:
        try:
            columns = os.get_terminal_size(stdout.fileno()).columns
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


class _Formatter(argparse.HelpFormatter):
    """argparse's help layout, its width found by _columns()."""

    def __init__(self, prog: str, **kwargs: Any) -> None:
        if kwargs.get("width") is None:
            kwargs["width"] = _columns() - 2  # as argparse does with shutil's
        super().__init__(prog, **kwargs)


class _RawDescriptionFormatter(_Formatter, argparse.RawDescriptionHelpFormatter):
    """The top level's: its description and epilog laid out as written."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose help layout is _Formatter unless told otherwise."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(**kwargs)


def _path(text: str) -> Path:
    """argparse ``type`` of the path options: pathlib is imported only when one is given
    (see the imports at the top)."""
    from pathlib import Path

    return Path(text)


def _add_socket_options(parser: argparse.ArgumentParser, top: bool = False) -> None:
    default = None if top else argparse.SUPPRESS
    parser.add_argument(
        "--socket",
        metavar="PATH",
        default=default,
        help="the daemon's control socket (default: $AIOIPSEC_SOCKET, the -c file's "
        f"[daemon] control_socket, or {DEFAULT_CONTROL_SOCKET})",
    )
    parser.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        default=default,
        type=_path,
        help="read the control socket path from this TOML file's [daemon] table",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=30.0 if top else argparse.SUPPRESS,
        metavar="SECONDS",
        help="how long to wait for the daemon's answer (default 30)",
    )


def _add_sa_selection(parser: argparse.ArgumentParser, verb: str) -> None:
    parser.add_argument("--ike", metavar="NAME", help=f"{verb} the IKE SA of connection NAME")
    parser.add_argument("--child", metavar="NAME", help=f"{verb} the Child SA named NAME")
    parser.add_argument("--ike-id", type=int, metavar="N", help=f"{verb} the IKE SA with id N")
    parser.add_argument("--child-id", type=int, metavar="N", help=f"{verb} the Child SA with id N")
    parser.add_argument(
        "--all",
        action="store_true",
        help=f"{verb} every IKE SA (must be said: no selector is an error)",
    )


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of the command line: of every command, or of COMMAND alone (with the
    same global options). main() builds COMMAND's alone when the command line names it
    (_first_word): the subparsers of every command cost ~7 ms at each start (argparse
    looks up a translation for each of their titles), a third of what issue 17 allows
    `aioipsec initiate`. Help and usage errors of a command read the same either way:
    its subparser is the same, and the top level's usage names COMMAND, not the list."""
    parser = _Parser(
        prog="aioipsec",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=_RawDescriptionFormatter,
    )
    _add_socket_options(parser, top=True)
    parser.add_argument(
        "--version",
        action=_VersionAction,
        help="print the versions of aioipsec, Python, cryptography and OpenSSL, and "
        "whether AES-NI is used, and exit",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, add in _COMMAND_PARSERS.items():
        if command is None or name == command:
            add(commands, name)
    return parser


def _daemon_parser(commands: _Commands, name: str) -> None:
    daemon = commands.add_parser(
        name,
        help="run the IKE daemon",
        description="Run the IKEv2 daemon: IKE on UDP 500/4500, ESP through a TUN device, "
        "the control socket for the other commands, and strongSwan's VICI socket for "
        "swanctl ([daemon] vici_socket, default /run/aioipsec.vici; docs/vici.md). "
        "Needs root (TUN, routes, port 500). "
        "The configuration is checked completely before anything starts. It fails closed: "
        "nftables rules (table inet aioipsec) drop traffic to the loaded connections' "
        "remote selectors unless it enters the tunnel, also after SIGKILL and, by default "
        "([daemon] fail_closed_after_stop), after a clean stop; a new daemon takes them "
        "over, 'aioipsec cleanup' removes them.",
    )
    daemon.add_argument(
        "-c",
        "--config",
        dest="daemon_config",
        type=_path,
        metavar="FILE",
        help="aioipsec TOML configuration ([daemon], [connections.*], [secrets.*])",
    )
    daemon.add_argument(
        "--swanctl-conf",
        type=_path,
        metavar="FILE",
        help="strongSwan swanctl.conf to read connections and secrets from (with -c: "
        "[daemon] from the TOML file, connections and secrets from both)",
    )
    daemon.add_argument(
        "--socket",
        dest="daemon_socket",
        metavar="PATH",
        help="control socket path (overrides [daemon] control_socket; without "
        "[daemon] vici_socket the VICI socket goes beside it, suffix .vici)",
    )
    daemon.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        help="console (default) or json: one JSON object per line",
    )
    daemon.add_argument("--log-level", choices=LOG_LEVELS, help="default: info")
    daemon.add_argument(
        "--save-keys",
        type=_path,
        metavar="DIR",
        help="write IKE and ESP keys to DIR/ikev2_decryption_table and DIR/esp_sa in "
        "Wireshark's formats, as SAs come and go (for debugging only: anyone who can "
        "read DIR can decrypt the traffic)",
    )
    daemon.add_argument(
        "--foreground",
        action="store_true",
        help="stay in the foreground and log to stderr (default: detach once the "
        "control socket answers, logging to --log-file)",
    )
    daemon.add_argument(
        "--log-file",
        type=_path,
        metavar="FILE",
        help="log to FILE (appending; created mode 0600, never through a symlink) instead "
        f"of stderr; a detached daemon logs to {DEFAULT_LOG_FILE} unless this is given. "
        "SIGHUP or 'aioipsec reopen-logs' reopens it (log rotation)",
    )


def _initiate_parser(commands: _Commands, name: str) -> None:
    initiate = commands.add_parser(
        name,
        help="start a connection",
        description="Initiate an IKE SA and a Child SA. --child NAME starts that child "
        "(with the IKE SA of its connection); --ike NAME starts the connection's IKE SA "
        "and all its children. Like swanctl --initiate it waits for the Child SA (with "
        "--ike: the first one): exit 0 when it is installed, exit 1 with the reason when "
        "the peer refuses it (e.g. NO_PROPOSAL_CHOSEN), even if the IKE SA came up.",
    )
    _add_socket_options(initiate)
    initiate.add_argument("--ike", metavar="NAME", help="connection to initiate")
    initiate.add_argument("--child", metavar="NAME", help="child SA to initiate")


def _terminate_parser(commands: _Commands, name: str) -> None:
    terminate = commands.add_parser(
        name,
        help="close SAs",
        description="Delete an IKE SA (with its Child SAs) or one Child SA, sending "
        "the DELETE to the peer. For children with start_action = none this also removes "
        "their fail-closed rules (also when no SA is up): traffic to their remote "
        "selectors then follows the ordinary routes, in clear, until they are up again.",
    )
    _add_socket_options(terminate)
    _add_sa_selection(terminate, "terminate")


def _redirect_parser(commands: _Commands, name: str) -> None:
    redirect = commands.add_parser(
        name,
        help="send clients to another gateway (RFC 5685)",
        description="Send the clients of the selected IKE SAs to another gateway with an "
        "INFORMATIONAL REDIRECT (RFC 5685 sec. 5), like swanctl --redirect. A client "
        "that follows sets up its new IKE SA there before deleting this one, so its "
        "traffic keeps flowing. Clients that did not announce REDIRECT_SUPPORTED are "
        "listed and stay. docs/cluster.md",
    )
    _add_socket_options(redirect)
    redirect.add_argument("--ike", metavar="NAME", help="the IKE SAs of connection NAME")
    redirect.add_argument("--ike-id", type=int, metavar="N", help="the IKE SA with id N")
    redirect.add_argument("--peer-ip", metavar="ADDR", help="the IKE SAs with this peer address")
    redirect.add_argument("--peer-id", metavar="ID", help="the IKE SAs with this peer identity")
    redirect.add_argument(
        "--gateway", required=True, metavar="ADDR|FQDN", help="where the clients go"
    )


def _drain_parser(commands: _Commands, name: str) -> None:
    drain = commands.add_parser(
        name,
        help="move every client to other gateways of the cluster",
        description="Take no new IKE SAs here (new clients are redirected at IKE_SA_INIT) "
        "and redirect every established IKE SA, at the [cluster] drain_rate, to the "
        "least-loaded other member or to --to GW. Returns at once; --status shows the "
        "progress, --cancel ends the drain. docs/cluster.md",
    )
    _add_socket_options(drain)
    drain.add_argument("--to", metavar="GW", help="send every client to this gateway")
    drain.add_argument("--status", action="store_true", help="show the drain's progress")
    drain.add_argument("--cancel", action="store_true", help="stop draining")


def _rekey_parser(commands: _Commands, name: str) -> None:
    rekey = commands.add_parser(
        name, help="rekey SAs now", description="Rekey an IKE SA or a Child SA now."
    )
    _add_socket_options(rekey)
    _add_sa_selection(rekey, "rekey")


def _sas_parser(commands: _Commands, name: str) -> None:
    sas = commands.add_parser(
        name,
        help="list the IKE and Child SAs (like swanctl --list-sas)",
        description="List the SAs. Text as 'swanctl --list-sas' prints it; --json with "
        "the key names of strongSwan's VICI list-sas event.",
    )
    _add_socket_options(sas)
    sas.add_argument("--ike", metavar="NAME", help="only the SAs of this connection")
    sas.add_argument("--json", action="store_true", help="print JSON (VICI key names)")


_LISTINGS = {
    "conns": "list the loaded connections (like swanctl --list-conns)",
    "policies": "list the security policies (the SPD, like ip xfrm policy)",
    "stats": "show counters: IKE SAs, ESP packets/bytes, drops by reason",
}


def _listing_parser(commands: _Commands, name: str) -> None:
    helptext = _LISTINGS[name]
    sub = commands.add_parser(name, help=helptext, description=helptext[0].upper() +
                              helptext[1:] + ".")  # fmt: skip
    _add_socket_options(sub)
    sub.add_argument("--json", action="store_true", help="print JSON")


def _pools_parser(commands: _Commands, name: str) -> None:
    pools = commands.add_parser(
        name,
        help="list the address pools and their leases (like swanctl --list-pools --leases)",
        description="List the virtual IP address pools: name, base address, online / "
        "offline / size, and each lease with its state and the identity it belongs to, as "
        "'swanctl --list-pools --leases' prints them.",
    )
    _add_socket_options(pools)
    pools.add_argument("--no-leases", action="store_true", help="only the pools")
    pools.add_argument("--json", action="store_true", help="print JSON")


def _reload_parser(commands: _Commands, name: str) -> None:
    reload_cmd = commands.add_parser(
        name,
        help="re-read the configuration",
        description="Ask the daemon to re-read its configuration files (as SIGHUP "
        "does). A configuration with errors is refused and the old one stays.",
    )
    _add_socket_options(reload_cmd)


def _reopen_logs_parser(commands: _Commands, name: str) -> None:
    reopen = commands.add_parser(
        name,
        help="reopen the --log-file (log rotation)",
        description="Ask the daemon to reopen its --log-file (as SIGHUP does, without "
        "the reload): after logrotate (or mv) has moved the file, new lines go to a new "
        "file at the same path. See docs/daemon.md for a logrotate example.",
    )
    _add_socket_options(reopen)


def _selftest_parser(commands: _Commands, name: str) -> None:
    commands.add_parser(
        name,
        help="run the known-answer self-test",
        description="Run every known-answer vector (RFC, NIST) through aioipsec's "
        "crypto and print a table; exit 1 if any fails. Needs no daemon.",
    )


def _cleanup_parser(commands: _Commands, name: str) -> None:
    from aioipsec import cleanup

    cleanup_cmd = commands.add_parser(
        name,
        help="remove the fail-closed rules a stopped or killed daemon left",
        description=cleanup.DESCRIPTION,
    )
    cleanup.add_arguments(cleanup_cmd)


def _check_parser(commands: _Commands, name: str) -> None:
    check = commands.add_parser(
        name,
        help="validate configuration files",
        description="Load and validate the configuration as the daemon would, print the "
        "connections, exit 2 on an error. Needs no daemon.",
    )
    check.add_argument("-c", "--config", dest="check_config", type=_path, metavar="FILE")
    check.add_argument("--swanctl-conf", type=_path, metavar="FILE")


def _tool_parser(commands: _Commands, name: str) -> None:
    """Teaching and debugging tools (aioipsec/decode.py, explain/, doctor.py): listed
    here, parsed and run by their own modules (imported only when used)."""
    tool = commands.add_parser(name, help=TOOLS[name], add_help=False)
    tool.add_argument("tool_args", nargs=argparse.REMAINDER)


TOOLS = {
    "decode": "decode IKEv2/ESP in a pcap/pcapng capture (keys: Wireshark tables)",
    "explain": "one IKEv2 negotiation byte by byte and key by key (--seed, --keys)",
    "doctor": "check prerequisites: privileges, TUN, ports, firewall, MTU, clock",
    "interop": "run interop scenarios against strongSwan in namespaces (--list, --all)",
    "token": "list the keys and certificates of a PKCS#11 module or the TPM (no secrets)",
    "install-service": "write the systemd unit aioipsec.service (Type=notify, sandboxed)",
}

# Every command's subparser, in the order of the help's list.
_COMMAND_PARSERS: dict[str, Callable[[_Commands, str], None]] = {
    "daemon": _daemon_parser,
    "initiate": _initiate_parser,
    "terminate": _terminate_parser,
    "redirect": _redirect_parser,
    "drain": _drain_parser,
    "rekey": _rekey_parser,
    "sas": _sas_parser,
    **dict.fromkeys(_LISTINGS, _listing_parser),
    "pools": _pools_parser,
    "reload": _reload_parser,
    "reopen-logs": _reopen_logs_parser,
    "selftest": _selftest_parser,
    "cleanup": _cleanup_parser,
    "check": _check_parser,
    **dict.fromkeys(TOOLS, _tool_parser),
}


def _run_tool(name: str, tool_args: Sequence[str]) -> int:
    import importlib

    module = {"token": "tokens.cli", "install-service": "service"}.get(name, name)
    return int(importlib.import_module(f"aioipsec.{module}").main(list(tool_args)))


# --------------------------------------------------------------------------- commands


def _error(message: str) -> None:
    print(f"aioipsec: {message}", file=sys.stderr)


def _socket_path(args: argparse.Namespace) -> str:
    if getattr(args, "socket", None):
        return args.socket
    if os.environ.get("AIOIPSEC_SOCKET"):
        return os.environ["AIOIPSEC_SOCKET"]
    config = getattr(args, "config", None)
    if config is not None:
        import tomllib

        from aioipsec.config import ConfigError

        try:
            with open(config, "rb") as file:
                data = tomllib.load(file)
        except (OSError, tomllib.TOMLDecodeError) as error:
            raise ConfigError(
                f"cannot read the control socket path: {error}", file=config
            ) from None
        socket_path = (data.get("daemon") or {}).get("control_socket")
        if socket_path:
            return str(socket_path)
    return DEFAULT_CONTROL_SOCKET


def _call(args: argparse.Namespace, command: str, request: dict[str, Any]) -> Any:
    client = ControlClient(_socket_path(args), timeout=args.timeout)
    with client:
        return client.call(command, {k: v for k, v in request.items() if v is not None})


def _message(result: Any, default: str) -> str:
    """The daemon's ``message`` (or the result itself when it is text), else ``default``."""
    if isinstance(result, dict):
        return _text(result.get("message")) or default
    return _text(result) or default


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=False, default=str))


def _cmd_client(args: argparse.Namespace) -> int:
    command = args.command
    if command == "initiate":
        if not (args.ike or args.child):
            _error("initiate needs --child NAME or --ike NAME")
            return EXIT_USAGE
        # The daemon waits for the SA a little less long than we wait for the daemon.
        wait = max(1.0, args.timeout - 2.0)
        result = _call(args, "initiate", {"ike": args.ike, "child": args.child, "timeout": wait})
        print(_message(result, "initiated"))
        return EXIT_OK
    if command in ("terminate", "rekey"):
        selection = {
            "ike": args.ike,
            "child": args.child,
            "ike_id": args.ike_id,
            "child_id": args.child_id,
        }
        selection = {k: v for k, v in selection.items() if v is not None}
        if args.all and selection:
            _error(f"{command} --all acts on every SA: leave out --ike, --child and the ids")
            return EXIT_USAGE
        if args.all:
            selection = {"all": True}
        elif not selection:
            _error(f"{command} needs --ike NAME, --child NAME, --ike-id N, --child-id N or --all")
            return EXIT_USAGE
        result = _call(args, command, selection)
        print(_message(result, f"{command} done"))
        return EXIT_OK
    if command == "redirect":
        selection = {"ike": args.ike, "ike_id": args.ike_id, "peer_ip": args.peer_ip,
                     "peer_id": args.peer_id}  # fmt: skip
        selection = {k: v for k, v in selection.items() if v is not None}
        if not selection:
            _error("redirect needs --ike NAME, --ike-id N, --peer-ip ADDR or --peer-id ID")
            return EXIT_USAGE
        result = _call(args, "redirect", {**selection, "gateway": args.gateway})
        print(_message(result, "redirected"))
        return EXIT_OK
    if command == "drain":
        result = _call(args, "drain", {"to": args.to, "status": args.status,
                                       "cancel": args.cancel})  # fmt: skip
        if args.status:
            _print_json(result)
        else:
            print(_message(result, "draining"))
        return EXIT_OK
    if command == "sas":
        result = _call(args, "sas", {"ike": args.ike})
        if args.json:
            _print_json(result)
        else:
            text = render_sas(result)
            print(text if text else "no SAs")
        return EXIT_OK
    if command == "conns":
        result = _call(args, "conns", {})
        if args.json:
            _print_json(result)
        else:
            text = render_conns(result)
            print(text if text else "no connections loaded")
        return EXIT_OK
    if command == "stats":
        result = _call(args, command, {})
        if args.json:
            _print_json(result)
        else:
            print(render_stats(result))
        return EXIT_OK
    if command == "policies":
        result = _call(args, command, {})
        if args.json:
            _print_json(result)
        else:
            text = render_mapping(result)
            print(text if text.strip() else f"no {command}")
        return EXIT_OK
    if command == "pools":
        from aioipsec.pools import format_pools

        result = _call(args, "pools", {"leases": not args.no_leases})
        if args.json:
            _print_json(result)
        else:
            print(format_pools(result), end="")
        return EXIT_OK
    if command == "reload":
        result = _call(args, "reload", {})
        print(render_reload(result))
        return EXIT_OK
    if command == "reopen-logs":
        result = _call(args, "reopen-logs", {})
        print(_message(result, "log file reopened"))
        return EXIT_OK
    raise AssertionError(command)


def _cmd_selftest() -> int:
    try:
        from aioipsec.selftest import format_table, run_selftest
    except ImportError as error:
        _error(f"the self-test module is not available ({error})")
        return EXIT_FAILED
    report = run_selftest()
    print(format_table(report))
    ok = getattr(report, "ok", None)
    if ok is None:
        ok = not getattr(report, "failed", 0)
    return EXIT_OK if ok else EXIT_FAILED


def _cmd_check(args: argparse.Namespace) -> int:
    from aioipsec.config import DaemonOptions, connection_listing

    options = DaemonOptions(config_file=args.check_config, swanctl_conf=args.swanctl_conf)
    configuration = options.load()
    for warning in configuration.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    text = render_conns(connection_listing(configuration))
    print(text if text else "no connections")
    print(
        f"configuration OK: {len(configuration.connections)} connection(s), "
        f"{len(configuration.shared_secrets)} shared secret(s), "
        f"{len(configuration.private_keys)} private key(s)"
        + (f", {len(configuration.tokens.keys)} token key(s)" if configuration.tokens.keys else "")
    )
    return EXIT_OK


def _cmd_daemon(args: argparse.Namespace) -> int:
    if args.daemon_config is None and args.swanctl_conf is None:
        _error("daemon needs -c FILE.toml and/or --swanctl-conf FILE")
        return EXIT_USAGE
    import asyncio

    from aioipsec.config import DaemonOptions

    options = DaemonOptions(
        config_file=args.daemon_config,
        swanctl_conf=args.swanctl_conf,
        socket_path=args.daemon_socket or args.socket,
        log_format=args.log_format,
        log_level=args.log_level,
        save_keys_dir=args.save_keys,
        foreground=args.foreground,
    )
    # Everything is checked before anything starts: a bad file never half-starts.
    configuration = options.load()
    try:
        from aioipsec.daemon import run_daemon
    except ImportError as error:
        _error(f"the daemon runtime is not available in this installation ({error})")
        return EXIT_FAILED
    from aioipsec.log import LogFile, configure_logging, get_logger

    log_file = args.log_file
    if not options.foreground:
        log_file = log_file or _path(DEFAULT_LOG_FILE)
        pid = _detach()
        if pid:
            return _wait_for_daemon(pid, configuration.daemon.control_socket, log_file)
    log_stream = None
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        # 0600, O_NOFOLLOW; reopened on SIGHUP and 'aioipsec reopen-logs' (logrotate).
        log_stream = LogFile(log_file)
    configure_logging(
        configuration.daemon.log_level, configuration.daemon.log_format, stream=log_stream
    )
    log = get_logger("cli")
    for warning in configuration.warnings:
        log.warning("config_warning", detail=warning)
    # The --save-keys warning is the runtime's (it logs it when the key writer starts).
    try:
        return int(asyncio.run(run_daemon(options)) or 0)
    except KeyboardInterrupt:
        return 130


def _detach() -> int:
    """Fork: the parent gets the child's pid, the child (pid 0) leaves the terminal."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return pid
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    return 0


def _wait_for_daemon(pid: int, socket_path: str, log_file: Path, limit: float = 60.0) -> int:
    """Wait until our child answers on the control socket. The answer must come from
    the child itself (its pid in ``stats``): another daemon already listening on the same
    socket would answer too, while our child fails and exits."""
    deadline = time.monotonic() + limit
    other: Any = None
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            why = ""
            if other is not None:
                why = (f": another daemon (pid {other}) already answers on {socket_path}; "
                       "stop it first or give this one another control_socket")  # fmt: skip
            _error(
                f"the daemon exited during start-up (status {os.waitstatus_to_exitcode(status)})"
                f"{why}; see {log_file}"
            )
            return EXIT_FAILED
        try:
            with ControlClient(socket_path, timeout=2.0) as client:
                answer = client.call("stats")
        except ControlError:
            time.sleep(0.1)
            continue
        answering = answer.get("pid") if isinstance(answer, dict) else None
        if answering == pid:
            print(f"aioipsec daemon running (pid {pid}), control socket {socket_path}, "
                  f"log {log_file}")  # fmt: skip
            return EXIT_OK
        other = answering if answering is not None else "unknown"
        time.sleep(0.1)
    _error(f"the daemon (pid {pid}) did not answer on {socket_path} within {limit:g}s; "
           f"see {log_file}")  # fmt: skip
    return EXIT_FAILED


def _first_word(arguments: Sequence[str]) -> int | None:
    """The index of the first word after the global options (``--socket X``, ``-c FILE``,
    ``--timeout S``, also as ``--socket=X``...), or None when there is none or the options
    take another form (an abbreviation, ``-h``): then only the full parser can tell."""
    index = 0
    while index < len(arguments):
        word = arguments[index]
        if word in ("--socket", "-c", "--config", "--timeout"):
            index += 2
        elif word.startswith(("--socket=", "--config=", "--timeout=")):
            index += 1
        else:
            return index if not word.startswith("-") else None
    return None


def _tool_with_global_options(arguments: list[str]) -> tuple[str, list[str]] | None:
    """``aioipsec [--socket X] [-c FILE] [--timeout S] TOOL ARGS...``: the tool and its
    arguments, the global options handed over (argparse's REMAINDER cannot take a tool's
    own options after global ones). None when no tool is named."""
    index = _first_word(arguments)
    if index is None or arguments[index] not in TOOLS:
        return None
    tool, rest = arguments[index], arguments[index + 1 :]
    top = _Parser(add_help=False)
    _add_socket_options(top, top=True)
    options, _ = top.parse_known_args(arguments[:index])
    if tool == "doctor":
        if options.config is not None:
            rest = ["-c", str(options.config), *rest]
    elif options.socket or options.config is not None:
        # explain --follow (the only other tool that talks to a daemon) reads it here.
        os.environ["AIOIPSEC_SOCKET"] = _socket_path(options)
    return tool, rest


def _config_errors(error: ConfigError) -> None:
    """Every problem the loaders found, one line each (``check`` reports them all)."""
    for problem in error.errors:
        _error(f"configuration error: {problem}")
    if len(error.errors) > 1:
        _error(f"{len(error.errors)} configuration errors")


def _config_error() -> type[ConfigError]:
    """ConfigError, imported when an except clause needs it: Python evaluates the class
    of an ``except`` only when an exception reaches it, so a command that succeeds never
    loads the configuration package (see the imports at the top)."""
    from aioipsec.config import ConfigError

    return ConfigError


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    try:
        tool = _tool_with_global_options(arguments)
    except _config_error() as error:
        _error(f"configuration error: {error}")
        return EXIT_USAGE
    if tool is not None:
        return _run_tool(*tool)
    # The parser of the command the line names, if it names one after the global
    # options: building every command's costs ~7 ms at each start (see build_parser).
    index = _first_word(arguments)
    named = arguments[index] if index is not None else None
    parser = build_parser(named if named in _COMMAND_PARSERS else None)
    args = parser.parse_args(arguments)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    if args.command in TOOLS:  # after top-level options: aioipsec -s SOCK decode ...
        return _run_tool(args.command, args.tool_args)
    try:
        if args.command == "daemon":
            return _cmd_daemon(args)
        if args.command == "selftest":
            return _cmd_selftest()
        if args.command == "check":
            return _cmd_check(args)
        if args.command == "cleanup":
            from aioipsec.cleanup import run as run_cleanup

            return run_cleanup(args)
        return _cmd_client(args)
    except DaemonUnreachable as error:
        _error(str(error))
        return EXIT_UNREACHABLE
    except ControlError as error:
        _error(f"{args.command} failed: {error}")
        return EXIT_FAILED
    except _config_error() as error:  # after the daemon's errors: evaluated only if needed
        _config_errors(error)
        return EXIT_USAGE
    except BrokenPipeError:
        return EXIT_OK
    except KeyboardInterrupt:
        return 130
    except OSError as error:
        # e.g. a log file or folder we may not write: say which, no traceback
        _error(f"{args.command}: {error}")
        return EXIT_FAILED


# The commands that only ask the daemon and print its answer (_cmd_client).
_CLIENT_COMMANDS = frozenset(
    ("initiate", "terminate", "redirect", "drain", "rekey", "sas", *_LISTINGS, "pools",
     "reload", "reopen-logs")
)  # fmt: skip


def run() -> None:
    """The ``aioipsec`` command (and ``python -m aioipsec``): main(), then the exit.

    After a command that only asked the daemon (named plainly after the global options),
    nothing is left to clean up: no thread, no atexit handler, no file open but stdout and
    stderr. It leaves with os._exit once those are flushed, without the interpreter's
    teardown of every module, ~2.5 ms of the ~20 a command takes (issue 17: `aioipsec
    initiate` <= 2x charon + swanctl's ~13 ms). Every other command exits as usual."""
    arguments = sys.argv[1:]
    status = main(arguments)
    index = _first_word(arguments)
    if index is not None and arguments[index] in _CLIENT_COMMANDS:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except OSError:  # e.g. a closed pipe: let the interpreter's exit report it
            sys.exit(status)
        os._exit(status)
    sys.exit(status)


if __name__ == "__main__":
    run()
