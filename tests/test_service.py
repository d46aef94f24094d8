"""``aioipsec install-service``: the systemd unit, checked by systemd-analyze verify."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from aioipsec.service import exec_start, main, unit_text, verify
from tests.components import require_component


def _config(tmp_path: Path) -> Path:
    config = tmp_path / "aioipsec.toml"
    config.write_text("[daemon]\n")
    config.chmod(0o600)
    return config


def test_install_writes_a_unit_systemd_analyze_accepts(tmp_path: Path, capsys) -> None:
    require_component("systemd-analyze")
    config = _config(tmp_path)
    assert main(["--unit-dir", str(tmp_path / "units"), "-c", str(config)]) == 0
    unit = tmp_path / "units" / "aioipsec.service"
    text = unit.read_text()
    assert f"ExecStart={sys.executable} -m aioipsec daemon --foreground -c {config}" in text
    for line in (
        "Type=notify",
        "NotifyAccess=main",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW CAP_NET_BIND_SERVICE CAP_CHOWN",
        "ProtectSystem=strict",
        "ReadWritePaths=/run",
        "DeviceAllow=/dev/net/tun rw",
        "NoNewPrivileges=yes",
    ):
        assert line in text.splitlines(), line
    ok, output = verify(unit)
    # Only lines about our unit count: systemd-analyze also warns about other installed
    # units it loads (Debian's freeradius.service uses the deprecated MemoryLimit=).
    assert ok is True, output
    assert [line for line in output.splitlines() if "aioipsec" in line] == [], output
    assert "systemctl daemon-reload" in capsys.readouterr().out


def test_verify_catches_what_systemd_would_ignore(tmp_path: Path) -> None:
    """systemd-analyze exits 0 on an unknown key; our check does not."""
    require_component("systemd-analyze")
    unit = tmp_path / "aioipsec.service"
    text = unit_text(exec_start(_config(tmp_path), None))
    unit.write_text(text.replace("ProtectHome=yes", "ProtectHomme=yes"))
    ok, output = verify(unit)
    assert ok is False and "ProtectHomme" in output
    unit.write_text(text.replace(sys.executable, "/nonexistent/python"))
    assert verify(unit)[0] is False


def test_refusals_say_what_to_do(tmp_path: Path, capsys) -> None:
    assert main(["--unit-dir", str(tmp_path), "-c", str(tmp_path / "missing.toml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "aioipsec.service").exists()
    with pytest.raises(ValueError, match="ExecStart"):
        unit_text(["/usr/bin/python3", "-c", "/etc/a b$x.toml"])
    assert main(["--print", "--swanctl-conf", "/etc/swanctl/swanctl.conf"]) == 0
    out = capsys.readouterr().out
    assert "--swanctl-conf /etc/swanctl/swanctl.conf" in out and " -c " not in out


def test_the_sandbox_does_not_hide_what_the_daemon_reads() -> None:
    from aioipsec.service import sandbox_for

    sandbox, warnings = sandbox_for(["/usr/bin/python3", "/etc/aioipsec/a.toml"])
    assert "ProtectHome=yes" in sandbox and warnings == []
    sandbox, warnings = sandbox_for(["/root/venv/bin/python", "/etc/aioipsec/a.toml"])
    assert "ProtectHome=read-only" in sandbox and "ProtectHome=yes" not in sandbox
    assert warnings == ["/root/venv/bin/python is under a home directory: ProtectHome=read-only"]
    _, warnings = sandbox_for(["/usr/bin/python3", "/tmp/a.toml"])
    assert "will not start" in warnings[0]
