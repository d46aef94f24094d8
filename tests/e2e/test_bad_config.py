"""A bad configuration: a clear error naming the file, the key/line and the reason, a
non-zero exit, and nothing half-started (no TUN device, no control socket, no rule).

Both entry points are checked: ``aioipsec daemon`` (the CLI, which validates first) and
``python -m aioipsec.daemon`` (run_daemon itself). Each runs inside a fresh namespace so
that "nothing started" can be checked with ``ip link`` / ``ip rule``.
"""

from __future__ import annotations

import sys

import pytest

from .helpers import REPO, requirements_or_skip

pytestmark = [pytest.mark.netns, pytest.mark.timeout(120)]

GOOD_CONNECTION = """
[connections.site]
local_addrs = ["192.168.9.1"]
remote_addrs = ["192.168.9.2"]
proposals = ["aes256gcm16-prfsha256-x25519"]

[connections.site.local]
auth = "psk"
id = "a.example"

[connections.site.remote]
auth = "psk"
id = "b.example"

[connections.site.children.net]
local_ts = ["10.1.0.0/24"]
remote_ts = ["10.2.0.0/24"]
esp_proposals = ["aes256gcm16"]

[secrets.ike-site]
secret = "0sZGVtby1vbmx5LWtleQ=="
"""

CASES = {
    # name: (file text, words the error must contain)
    "unknown-key": (
        GOOD_CONNECTION.replace('esp_proposals = ["aes256gcm16"]',
                                'esp_proposals = ["aes256gcm16"]\nfrobnicate = "yes"'),
        ["frobnicate", "connections.site.children.net"],
    ),
    "weak-proposal": (
        GOOD_CONNECTION.replace("aes256gcm16-prfsha256-x25519", "3des-md5-modp768"),
        ["proposals"],
    ),
    "unknown-algorithm": (
        GOOD_CONNECTION.replace('esp_proposals = ["aes256gcm16"]',
                                'esp_proposals = ["aes257gcm16"]'),
        ["aes257gcm16", "esp_proposals"],
    ),
    "toml-syntax": (GOOD_CONNECTION.replace("[connections.site.local]", "[connections.site.local"),
                    ["line"]),
    "bad-selector": (
        GOOD_CONNECTION.replace('local_ts = ["10.1.0.0/24"]', 'local_ts = ["10.1.0.0/33"]'),
        ["local_ts", "10.1.0.0/33"],
    ),
}  # fmt: skip


def daemon_commands(config, workdir):
    socket_path = workdir / "control.sock"
    return {
        "cli": [sys.executable, "-m", "aioipsec", "daemon", "-c", str(config), "--foreground",
                "--socket", str(socket_path)],
        "run_daemon": [sys.executable, "-m", "aioipsec.daemon", "-c", str(config),
                       "--socket", str(socket_path)],
    }  # fmt: skip


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_config_refused_with_a_clear_error(lab, workdir, case):
    requirements_or_skip()
    text, words = CASES[case]
    config = workdir / "bad.toml"
    config.write_text(text)
    config.chmod(0o600)
    namespace = lab.namespace("cfg")
    for entry, argv in daemon_commands(config, workdir).items():
        result = namespace.run(*argv, check=False, timeout=60)
        output = result.stdout + result.stderr
        assert result.returncode != 0, f"{entry}: accepted a bad config:\n{output}"
        assert str(config) in output, f"{entry}: the error does not name the file:\n{output}"
        for word in words:
            assert word in output, f"{entry}: the error does not mention {word!r}:\n{output}"
        assert "Traceback" not in output, f"{entry}: a traceback instead of an error:\n{output}"
        # Nothing half-started.
        links = namespace.run("ip", "-o", "link", "show").stdout
        assert "ipsec0" not in links
        assert "lookup 220" not in namespace.run("ip", "rule").stdout
        assert not (workdir / "control.sock").exists()
    assert REPO.exists()


def test_missing_config_file(lab, workdir):
    requirements_or_skip()
    namespace = lab.namespace("cfg")
    missing = workdir / "does-not-exist.toml"
    for entry, argv in daemon_commands(missing, workdir).items():
        result = namespace.run(*argv, check=False, timeout=60)
        output = result.stdout + result.stderr
        assert result.returncode != 0, entry
        assert str(missing) in output, f"{entry}:\n{output}"
        assert "Traceback" not in output, f"{entry}:\n{output}"
        assert "ipsec0" not in namespace.run("ip", "-o", "link", "show").stdout


def test_start_failure_leaves_nothing_and_spares_the_running_daemon(lab, workdir):
    """A second daemon in a namespace where the IKE ports are taken: a clear error, exit
    status 1, no TUN device of its own, and the first daemon's rule and socket untouched."""
    requirements_or_skip()
    from .helpers import OurDaemon, Side, toml_config

    namespace = lab.namespace("two")
    side = Side("site", "192.168.9.1", "10.1.0.1", "10.1.0.0/24", "192.168.9.2",
                "10.2.0.0/24", "a.example", "b.example")  # fmt: skip
    first_dir, second_dir = workdir / "first", workdir / "second"
    first_dir.mkdir()
    second_dir.mkdir()
    first = OurDaemon(lab, namespace, toml_config(side, first_dir), first_dir)
    first.start()
    second_config = toml_config(side, second_dir)
    second_config.write_text(second_config.read_text().replace('"ipsec0"', '"ipsec1"'))
    result = namespace.run(
        sys.executable, "-m", "aioipsec.daemon", "-c", str(second_config), check=False,
        timeout=60,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "port 500" in output and "Traceback" not in output, output
    assert "ipsec1" not in namespace.run("ip", "-o", "link").stdout
    assert not (second_dir / "control.sock").exists()
    # The first daemon still has its device, its rule and its control socket.
    assert "ipsec0" in namespace.run("ip", "-o", "link").stdout
    assert "lookup 220" in namespace.run("ip", "rule").stdout
    assert first.call("stats")["ike-sas"] == 0
    assert first.stop() == 0
