"""aioipsec.cli (and aioipsec.log): the command line, its renderers and its exit codes.

The ``sas`` renderer is checked against strongSwan's own ``swanctl --list-sas`` output for
a real SA between two charons; the client commands run as real processes against a real
control socket.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from aioipsec.cli import main, render_conns, render_mapping, render_sas, render_stats
from aioipsec.control import ControlServer, RequestError
from aioipsec.log import REDACTED, RateLimitedLogger, configure_logging, get_logger, sa_logger
from tests.components import require_component

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "aioipsec" / "examples"

# What VICI list-sas sends for one IKE SA (values as strings, like charon's).
SAS = [
    {
        "demo": {
            "uniqueid": "3",
            "version": "2",
            "state": "ESTABLISHED",
            "local-host": "192.168.100.1",
            "local-port": "4500",
            "local-id": "left.demo.example",
            "remote-host": "192.168.100.2",
            "remote-port": "4500",
            "remote-id": "right.demo.example",
            "initiator": "yes",
            "initiator-spi": "c0ffee0011223344",
            "responder-spi": "5566778899aabbcc",
            "encr-alg": "AES_GCM_16",
            "encr-keysize": "256",
            "prf-alg": "PRF_HMAC_SHA2_256",
            "dh-group": "CURVE_25519",
            "established": "12",
            "rekey-time": "14000",
            "child-sas": {
                "net-5": {
                    "name": "net",
                    "uniqueid": "5",
                    "reqid": "1",
                    "state": "INSTALLED",
                    "mode": "TUNNEL",
                    "protocol": "ESP",
                    "encap": "yes",
                    "spi-in": "cb3a8f01",
                    "spi-out": "c9d0e1f2",
                    "encr-alg": "AES_GCM_16",
                    "encr-keysize": "256",
                    "bytes-in": "252",
                    "packets-in": "3",
                    "use-in": "1",
                    "bytes-out": "252",
                    "packets-out": "3",
                    "use-out": "1",
                    "rekey-time": "3300",
                    "life-time": "3948",
                    "install-time": "12",
                    "local-ts": ["10.1.0.0/24"],
                    "remote-ts": ["10.2.0.0/24"],
                }
            },
        }
    }
]

# The same SA as swanctl --list-sas prints it (format of src/swanctl/commands/list_sas.c).
SAS_TEXT = """\
demo: #3, ESTABLISHED, IKEv2, c0ffee0011223344_i* 5566778899aabbcc_r
  local  'left.demo.example' @ 192.168.100.1[4500]
  remote 'right.demo.example' @ 192.168.100.2[4500]
  AES_GCM_16-256/PRF_HMAC_SHA2_256/CURVE_25519
  established 12s ago, rekeying in 14000s
  net: #5, reqid 1, INSTALLED, TUNNEL-in-UDP, ESP:AES_GCM_16-256
    installed 12s ago, rekeying in 3300s, expires in 3948s
    in  cb3a8f01,    252 bytes,     3 packets,     1s ago
    out c9d0e1f2,    252 bytes,     3 packets,     1s ago
    local  10.1.0.0/24
    remote 10.2.0.0/24"""


def test_render_sas_swanctl_format() -> None:
    assert render_sas(SAS) == SAS_TEXT
    # a mapping (what VICI clients usually merge the events into) renders the same
    assert render_sas(SAS[0]) == SAS_TEXT


def installed_example(tmp_path: Path, name: str = "demo-left.toml") -> Path:
    """A shipped example holding a PSK, installed 0600 as the docs say (git keeps no
    modes: the checkout's copy is 0644, which the loader refuses for a file with a PSK)."""
    copy = tmp_path / name
    copy.write_bytes((EXAMPLES / name).read_bytes())
    copy.chmod(0o600)
    return copy


def test_render_conns_and_mappings(tmp_path: Path) -> None:
    from aioipsec.config import connection_listing, load_configuration

    text = render_conns(connection_listing(load_configuration(installed_example(tmp_path))))
    assert text.splitlines()[:3] == [
        "demo: IKEv2, no reauthentication, rekeying every 14400s, dpd delay 30s",
        "  local:  192.168.100.1",
        "  remote: 192.168.100.2",
    ]
    assert "  net: TUNNEL, rekeying every 3600s, dpd action is start" in text.splitlines()
    assert render_mapping({"text": "src 10.1.0.0/24 dst 10.2.0.0/24\n"}) == (
        "src 10.1.0.0/24 dst 10.2.0.0/24"
    )
    assert render_mapping({"ike_sas": 1, "esp": {"packets_in": 3, "drops": {}}}) == (
        "ike_sas: 1\nesp:\n  packets_in: 3\n  drops: -"
    )


@pytest.mark.parametrize(
    "command",
    ["daemon", "initiate", "terminate", "rekey", "sas", "conns", "policies", "stats",
     "reload", "selftest", "check"],
)  # fmt: skip
def test_every_subcommand_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: aioipsec {command}")
    assert len(out.splitlines()) > 3


def test_no_command_prints_help_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "initiate" in capsys.readouterr().err


# --------------------------------------------------------------------------- real processes


async def run_cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aioipsec", *args,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.mark.timeout(60)
async def test_client_commands_against_a_control_socket(tmp_path: Path) -> None:
    calls: list[tuple[str, dict[str, Any]]] = []

    def recorder(name: str, result: Any) -> Any:
        async def handler(args: dict[str, Any]) -> Any:
            calls.append((name, args))
            if args.get("ike") == "missing":
                raise RequestError("no connection named 'missing'")
            return result

        return handler

    handlers = {
        "sas": recorder("sas", SAS),
        "initiate": recorder("initiate", {"message": "established demo #3"}),
        "terminate": recorder("terminate", {"message": "IKE SA #3 deleted"}),
        "rekey": recorder("rekey", None),
        "stats": recorder("stats", {"ike_sas": 1}),
        "policies": recorder("policies", {"text": "src 10.1.0.0/24 dst 10.2.0.0/24 out"}),
        "reload": recorder("reload", None),
    }
    path = tmp_path / "ctl.sock"
    async with ControlServer(path, handlers):
        code, out, err = await run_cli("sas", "--socket", str(path))
        assert (code, out.rstrip("\n")) == (0, SAS_TEXT), err
        code, out, _ = await run_cli("sas", "--json", "--ike", "demo", "--socket", str(path))
        assert code == 0 and json.loads(out) == SAS
        assert calls[-1] == ("sas", {"ike": "demo"})
        code, out, _ = await run_cli("initiate", "--child", "net", "--socket", str(path))
        assert (code, out) == (0, "established demo #3\n")
        assert calls[-1] == ("initiate", {"child": "net", "timeout": 28.0})
        code, out, err = await run_cli("terminate", "--ike", "missing", "--socket", str(path))
        assert code == 1 and "terminate failed: no connection named 'missing'" in err
        code, out, _ = await run_cli("rekey", "--child-id", "5", "--socket", str(path))
        assert code == 0 and calls[-1] == ("rekey", {"child_id": 5})
        code, out, _ = await run_cli("policies", "--socket", str(path))
        assert out == "src 10.1.0.0/24 dst 10.2.0.0/24 out\n"
        # the socket from the environment, and from the TOML's [daemon] table
        code, out, _ = await run_cli("stats", env={"AIOIPSEC_SOCKET": str(path)})
        assert (code, out) == (0, "ike:\n  sas: 1\n")
        toml = tmp_path / "a.toml"
        toml.write_text(f'[daemon]\ncontrol_socket = "{path}"\n')
        code, out, _ = await run_cli("reload", "-c", str(toml))
        assert (code, out) == (0, "configuration reloaded\n")
        # usage errors never reach the daemon
        count = len(calls)
        code, _, err = await run_cli("initiate", "--socket", str(path))
        assert code == 2 and "--child NAME or --ike NAME" in err
        code, _, err = await run_cli("terminate", "--socket", str(path))
        assert code == 2
        assert len(calls) == count
        # a command the daemon does not know
        code, _, err = await run_cli("conns", "--socket", str(path))
        assert code == 1 and "unknown command 'conns'" in err


async def test_unreachable_daemon_exit_code(tmp_path: Path) -> None:
    code, out, err = await run_cli("sas", "--socket", str(tmp_path / "no.sock"))
    assert code == 3 and out == ""
    assert f"cannot reach the daemon at {tmp_path / 'no.sock'}" in err
    assert "aioipsec daemon -c FILE" in err


def test_check_command(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["check", "-c", str(installed_example(tmp_path))]) == 0
    assert "configuration OK: 1 connection(s)" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text('[connections.x]\nlocal_addrs = "192.0.2.1"\nrekey_tim = "1h"\n')
    assert main(["check", "-c", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:3: connections.x.rekey_tim: unknown key 'rekey_tim'" in err
    # Every error in one run (issue 21 item 5), one line each, then the count.
    bad.write_text(
        '[connections.x]\nlocal_addrs = "192.0.2.1"\nrekey_tim = "1h"\nmobike = "yes"\n'
        "[connections.x.children.c]\nmark_in = 1\n"
    )
    assert main(["check", "-c", str(bad)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(": ")[2] for line in lines[:3]] == [
        f"{bad}:3",
        f"{bad}:4",
        f"{bad}:6",
    ], lines
    assert all(line.startswith("aioipsec: configuration error: ") for line in lines[:-1])
    # ... and the missing local section: four in all.
    assert lines[-1] == "aioipsec: 4 configuration errors" and len(lines) == 5, lines


@pytest.mark.timeout(60)
async def test_daemon_with_a_bad_config_starts_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    socket_path = tmp_path / "d.sock"
    bad.write_text(
        f'[daemon]\ncontrol_socket = "{socket_path}"\n[connections.x.children.c]\n'
        'esp_proposals = "aes256gcm16-sha1000"\n'
    )
    code, _, err = await run_cli("daemon", "-c", str(bad), "--foreground")
    assert code == 2
    assert f"{bad}:4: connections.x.children.c.esp_proposals" in err
    assert "sha1000" in err
    assert not socket_path.exists()
    code, _, err = await run_cli("daemon")
    assert code == 2 and "-c FILE.toml and/or --swanctl-conf FILE" in err


async def test_selftest_command() -> None:
    """The command prints the self-test's table and its exit status says whether it
    passed (the vectors themselves are tested in tests/test_selftest.py)."""
    from aioipsec.selftest import format_table, run_selftest

    report = run_selftest()
    code, out, err = await run_cli("selftest")
    assert code == (0 if report.ok else 1), out + err
    first_line = format_table(report).splitlines()[0]
    assert out.splitlines()[0] == first_line
    assert ("selftest OK" in out) == report.ok


# --------------------------------------------------------------------------- logging


def _json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_logs_with_sa_context_and_no_secrets() -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream=stream)
    log = sa_logger(get_logger("test"), "demo", 3)
    log.info(
        "child_sa_established",
        spi_in="cb3a8f01",
        encr_keysize=256,
        psk=b"hunter2",
        sk_ei=b"\x01" * 32,
        keys={"encr_key_in": "00ff", "integ_key_bits": 0},
        private_key="---BEGIN",
    )
    log.debug("not shown at info")
    (line,) = _json_lines(stream)
    assert line["event"] == "child_sa_established" and line["level"] == "info"
    assert line["connection"] == "demo" and line["ike_sa_id"] == 3 and line["logger"] == "test"
    assert line["spi_in"] == "cb3a8f01" and line["encr_keysize"] == 256
    assert line["psk"] == line["sk_ei"] == line["private_key"] == REDACTED
    assert line["keys"] == REDACTED
    assert "hunter2" not in stream.getvalue() and "BEGIN" not in stream.getvalue()
    assert "timestamp" in line


def test_nested_secrets_are_redacted() -> None:
    stream = io.StringIO()
    configure_logging("debug", "json", stream=stream)
    get_logger().debug("config", connection={"local": {"id": "a", "secret": "s3cr3t"}})
    (line,) = _json_lines(stream)
    assert line["connection"] == {"local": {"id": "a", "secret": REDACTED}}


def test_console_format() -> None:
    stream = io.StringIO()
    configure_logging("warning", "console", stream=stream)
    sa_logger(get_logger(), "site", 7).warning("dpd_timeout", psk="x")
    get_logger().info("hidden")
    text = stream.getvalue()
    assert "dpd_timeout" in text and "connection=site" in text and "ike_sa_id=7" in text
    assert "psk=<redacted>" in text and "hidden" not in text
    assert "\x1b[" not in text  # no colours when not writing to a terminal


def test_rate_limited_logger() -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream=stream)
    now = [100.0]
    limiter = RateLimitedLogger(get_logger(), interval=10.0, clock=lambda: now[0])
    assert limiter.warning("esp_icv_mismatch", key=0x1234, spi="00001234")
    for _ in range(50):
        assert not limiter.warning("esp_icv_mismatch", key=0x1234, spi="00001234")
    assert limiter.warning("esp_icv_mismatch", key=0x9999, spi="00009999")  # other key
    now[0] += 10.0
    assert limiter.warning("esp_icv_mismatch", key=0x1234, spi="00001234")
    lines = _json_lines(stream)
    assert [line.get("suppressed") for line in lines] == [None, None, 50]


def test_rate_limiter_memory_is_bounded() -> None:
    configure_logging("info", "json", stream=io.StringIO())
    limiter = RateLimitedLogger(get_logger(), interval=60.0, clock=lambda: 0.0, max_keys=16)
    for spi in range(10_000):
        limiter.warning("esp_unknown_spi", key=spi)
    assert len(limiter._state) <= 16


# --------------------------------------------------------------------------- oracle


def _normalise_seconds(text: str) -> str:
    return re.sub(r"\b\d+s\b", "Ns", text)


@pytest.mark.interop
@pytest.mark.timeout(90)
def test_render_sas_equals_swanctl_list_sas(tmp_path: Path) -> None:
    """Two real charons establish an SA; our renderer fed with charon's VICI list-sas
    must print what ``swanctl --list-sas`` prints (seconds normalised: they tick)."""
    require_component("root", "charon")
    from aioipsec.interop.peers import CharonPeer, swanctl_conf
    from aioipsec.interop.scenario import Scenario
    from aioipsec.interop.topology import build_topology
    from aioipsec.netns import Lab

    scenario = Scenario(name="render")
    with Lab("cli") as lab:
        topology = build_topology(lab, scenario)
        peers = {}
        for side in ("initiator", "responder"):
            peer = CharonPeer(lab, topology.namespace(side), tmp_path / side)
            peer.start()
            peer.load(swanctl_conf(scenario, topology, side))
            peers[side] = peer
        peers["initiator"].initiate(scenario.connection_name, scenario.connection_name)
        for side, peer in peers.items():
            charon = peer.charon
            listing = charon.list_sas()
            theirs = charon.swanctl("--list-sas")
            ours = render_sas(listing)
            assert "ESTABLISHED" in theirs and "INSTALLED, TUNNEL-in-UDP, ESP:" in theirs
            assert _normalise_seconds(ours) == _normalise_seconds(theirs.rstrip("\n")), side


async def test_unwritable_log_file_is_a_clear_error(tmp_path: Path) -> None:
    log_file = tmp_path / "not-a-folder"
    log_file.write_text("")
    code, _, err = await run_cli(
        "daemon", "-c", str(installed_example(tmp_path)), "--foreground",
        "--log-file", str(log_file / "x.log"),
    )  # fmt: skip
    assert code == 1
    assert err.startswith("aioipsec: daemon: ") and "Traceback" not in err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == f"aioipsec {version('aioipsec')}"
    # What the crypto runs on, as an administrator asks for it in a bug report.
    text = "\n".join(lines[1:])
    assert re.search(r"^Python 3\.\d+\.\d+$", text, re.M), text
    assert re.search(r"^cryptography \d+\.\d+", text, re.M), text
    assert re.search(r"^OpenSSL \d+\.\d+", text, re.M), text
    assert re.search(r"^AES-NI: (used|not used)", text, re.M), text


def test_log_field_names_agree_with_the_docs() -> None:
    """docs/cli.md names the two fields every SA line carries; the daemon's lines (bound
    by sa_logger), the control protocol and the subscribe stream use the same names."""
    text = (ROOT / "docs" / "cli.md").read_text()
    match = re.search(
        r"Every line about an SA carries `(\w+)` \(connection name\) and `(\w+)`", text
    )
    assert match, "docs/cli.md no longer names the SA fields of log lines"
    stream = io.StringIO()
    configure_logging("info", "json", stream=stream)
    sa_logger(get_logger("test"), "site", 7).info("IKE SA established")
    (line,) = _json_lines(stream)
    assert (line[match[1]], line[match[2]]) == ("site", 7)
    assert match.groups() == ("connection", "ike_sa_id")  # as in event_record / ike_sa_id args


def test_global_options_before_a_tool(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``aioipsec --socket X explain --follow``: the global option reaches the tool (it
    used to be refused with 'unrecognized arguments: --follow')."""
    missing = tmp_path / "no-daemon.sock"
    code = main(["--socket", str(missing), "explain", "--follow", "--count", "1"])
    err = capsys.readouterr().err
    assert "unrecognized arguments" not in err
    assert str(missing) in err and code != 0, err


def test_follow_header_survives_the_control_sockets_secret_filter() -> None:
    """The subscribe record names the key files; the control socket redacts any field named
    like a key, which once turned the pointer into '<, r, e, d, a, c, t, e, d, >'."""
    from aioipsec.control import _scrub
    from aioipsec.explain import render_follow_record

    record = {"type": "subscribed", "pid": 7, "time": 0.0,
              "decryption_tables": ["/k/ikev2_decryption_table", "/k/esp_sa"]}  # fmt: skip
    header = "\n".join(render_follow_record(_scrub(record)))
    assert "/k/ikev2_decryption_table, /k/esp_sa" in header, header
    assert "<, r" not in header and "redacted" not in header


def test_stats_text_lists_each_worker_on_its_own_line() -> None:
    text = render_stats(
        {
            "esp": {
                "workers": 2,
                "worker_list": [
                    {"index": 1, "pid": 10, "child_sas": 2, "esp_in": 5},
                    {"index": 2, "pid": 11, "child_sas": 1, "esp_in": 0},
                ],
            }
        }
    )
    assert "  worker_list:\n    index 1, pid 10, child_sas 2, esp_in 5\n    index 2, pid 11" in text
    assert "[{" not in text
