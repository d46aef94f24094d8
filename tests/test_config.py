"""aioipsec.config: the TOML loader, validation errors, secrets, engine configs.

Certificates and keys come from strongSwan's own ``pki`` tool (not our code)."""

from __future__ import annotations

import os
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from aioipsec.config import (
    ConfigError,
    DaemonOptions,
    connection_listing,
    load_configuration,
    load_toml,
    to_engine_configs,
)
from ikev2.config import ChildConfig, IkeConfig
from tests.components import require_component

EXAMPLES = Path(__file__).resolve().parent.parent / "aioipsec" / "examples"

PSK_SITE = """\
[daemon]
control_socket = "/tmp/x.sock"

[connections.site]
local_addrs = ["192.0.2.1"]
remote_addrs = "192.0.2.2"
proposals = ["aes256gcm16-prfsha256-x25519"]

[connections.site.local]
auth = "psk"
id = "left.example.org"

[connections.site.remote]
auth = "psk"
id = "right.example.org"

[connections.site.children.net]
local_ts = ["10.1.0.0/16"]
remote_ts = "10.2.0.0/16, 10.3.0.0/16"
esp_proposals = ["aes256gcm16"]
rekey_time = "30m"
rekey_bytes = "500M"

[secrets.ike-site]
id = ["left.example.org", "right.example.org"]
secret = "0x0102030405060708"
"""


def write(tmp_path: Path, text: str, name: str = "aioipsec.toml", mode: int = 0o600) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    path.chmod(mode)
    return path


def error_for(tmp_path: Path, text: str) -> ConfigError:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_configuration(path)
    return info.value


def line_of(text: str, needle: str) -> int:
    for number, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(needle)


# --------------------------------------------------------------------------- happy paths


def test_psk_site_to_site_loads_into_engine_configs(tmp_path: Path) -> None:
    configuration = load_configuration(write(tmp_path, PSK_SITE))
    assert configuration.daemon.control_socket == "/tmp/x.sock"
    (ike,) = to_engine_configs(configuration)
    assert isinstance(ike, IkeConfig)
    assert ike.name == "site"
    assert ike.local_addrs == ["192.0.2.1"] and ike.remote_addrs == ["192.0.2.2"]
    assert ike.proposals == ["aes256gcm16-prfsha256-x25519"]
    assert ike.local.auth == "psk" and ike.local.id == "left.example.org"
    assert ike.remote.id == "right.example.org"
    # strongSwan's default: neither rekey_time nor reauth_time given -> rekey every 4 h.
    assert ike.rekey_time == 4 * 3600 and ike.reauth_time == 0
    (child,) = ike.children
    assert isinstance(child, ChildConfig)
    assert child.remote_ts == ["10.2.0.0/16", "10.3.0.0/16"]
    assert child.rekey_time == 1800
    assert child.rekey_bytes == 500 * 1024 * 1024  # strongSwan's suffixes are binary
    assert child.life_bytes == int(child.rekey_bytes * 1.1)
    assert configuration.psk_lookup("left.example.org", "right.example.org") == bytes(range(1, 9))


def private_copy(example: Path, tmp_path: Path) -> Path:
    """A shipped example holding a PSK, installed as an administrator would: mode 0600
    (git keeps no modes, so the checkout's copy is 0644 and would be refused)."""
    copy = tmp_path / example.name
    copy.write_bytes(example.read_bytes())
    copy.chmod(0o600)
    return copy


@pytest.mark.parametrize("name", ["demo-left.toml", "demo-right.toml"])
def test_shipped_demo_configs_load(name: str, tmp_path: Path) -> None:
    configuration = load_configuration(private_copy(EXAMPLES / name, tmp_path))
    (ike,) = to_engine_configs(configuration)
    assert ike.proposals == ["aes256gcm16-prfsha256-x25519"]
    assert ike.children[0].esp_proposals == ["aes256gcm16"]
    local, remote = ike.local.id, ike.remote.id
    assert configuration.psk_lookup(local, remote) is not None


def test_demo_configs_are_mirror_images(tmp_path: Path) -> None:
    left_file = private_copy(EXAMPLES / "demo-left.toml", tmp_path)
    right_file = private_copy(EXAMPLES / "demo-right.toml", tmp_path)
    left = load_configuration(left_file).connections["demo"]
    right = load_configuration(right_file).connections["demo"]
    assert left.local_addrs == right.remote_addrs and left.remote_addrs == right.local_addrs
    assert left.local.id == right.remote.id and left.remote.id == right.local.id
    left_child, right_child = left.children["net"], right.children["net"]
    assert left_child.local_ts == right_child.remote_ts
    assert left_child.remote_ts == right_child.local_ts


def test_durations_and_counts_as_strongswan_writes_them(tmp_path: Path) -> None:
    text = PSK_SITE.replace('rekey_time = "30m"', 'rekey_time = "1d"\nlife_time = 90000')
    text = text.replace('rekey_bytes = "500M"', 'rekey_packets = "2k"')
    child = load_configuration(write(tmp_path, text)).connections["site"].children["net"]
    assert child.rekey_time == 86400 and child.life_time == 90000
    assert child.rekey_packets == 2048


def test_only_reauth_time_means_no_rekeying(tmp_path: Path) -> None:
    text = PSK_SITE.replace('proposals = ["aes', 'reauth_time = "3h"\nproposals = ["aes', 1)
    (ike,) = to_engine_configs(load_configuration(write(tmp_path, text)))
    assert ike.reauth_time == 3 * 3600 and ike.rekey_time == 0


def test_daemon_options_override_the_daemon_table(tmp_path: Path) -> None:
    path = write(tmp_path, PSK_SITE)
    options = DaemonOptions(config_file=path, socket_path="/tmp/y.sock", log_format="json")
    configuration = options.load()
    assert configuration.daemon.control_socket == "/tmp/y.sock"
    assert configuration.daemon.log_format == "json"
    assert configuration.daemon.log_level == "info"


# --------------------------------------------------------------------------- errors


def test_unknown_key_names_file_key_path_and_line(tmp_path: Path) -> None:
    text = PSK_SITE.replace('esp_proposals = ["aes256gcm16"]', 'esp_proposal = ["aes256gcm16"]')
    error = error_for(tmp_path, text)
    assert error.key == "connections.site.children.net.esp_proposal"
    assert error.line == line_of(text, "esp_proposal =")
    assert error.file is not None and error.file.endswith("aioipsec.toml")
    assert f"aioipsec.toml:{error.line}: connections.site.children.net.esp_proposal" in str(error)
    assert "esp_proposals" in str(error)  # the hint lists the known keys


def test_unsupported_strongswan_key_is_an_error_not_ignored(tmp_path: Path) -> None:
    text = PSK_SITE.replace("[connections.site]\n", '[connections.site]\nmediation = "yes"\n')
    error = error_for(tmp_path, text)
    assert error.key == "connections.site.mediation"
    assert "not supported" in error.reason
    assert error.line == line_of(text, "mediation")


def test_updown_and_hostaccess_are_read(tmp_path: Path) -> None:
    """updown is kept as the command line the daemon runs (aioipsec/runtime/updown.py)."""
    text = PSK_SITE.replace(
        'rekey_time = "30m"', 'rekey_time = "30m"\nupdown = "/bin/true x"\nhostaccess = "yes"'
    )
    child = load_configuration(write(tmp_path, text)).connections["site"].children["net"]
    assert child.updown == "/bin/true x" and child.hostaccess is True


def test_host_bits_are_masked_as_strongswan_does(tmp_path: Path) -> None:
    text = PSK_SITE.replace('local_ts = ["10.1.0.0/16"]', 'local_ts = ["10.1.0.1/10[tcp]"]')
    configuration = load_configuration(write(tmp_path, text))
    assert configuration.connections["site"].children["net"].local_ts == ["10.0.0.0/10[tcp]"]


def test_copy_df_no_is_read(tmp_path: Path) -> None:
    text = PSK_SITE.replace('rekey_time = "30m"', 'rekey_time = "30m"\ncopy_df = false')
    child = load_configuration(write(tmp_path, text)).connections["site"].children["net"]
    assert child.copy_df is False
    default = load_configuration(write(tmp_path, PSK_SITE)).connections["site"].children["net"]
    assert default.copy_df is True


@pytest.mark.parametrize(
    ("key", "words"),
    [
        ("mark_in = 42", "kernel interface"),
        ("if_id_in = 1", "kernel interface"),
        ("hw_offload = true", "kernel interface"),
        ("per_cpu_sas = true", "kernel interface"),
        ('label = "system_u"', "kernel interface"),
        ("copy_ecn = true", "only copy_ecn = no"),
        ("tfc_padding = 1500", "only tfc_padding = 0"),
        ("rand_packets = 5", "not supported"),
    ],
)
def test_child_keys_refused_with_the_reason(tmp_path: Path, key: str, words: str) -> None:
    text = PSK_SITE.replace('rekey_time = "30m"', f'rekey_time = "30m"\n{key}')
    error = error_for(tmp_path, text)
    assert error.key == "connections.site.children.net." + key.split()[0]
    assert words in str(error)


def test_inactivity_is_read(tmp_path: Path) -> None:
    text = PSK_SITE.replace('rekey_time = "30m"', 'rekey_time = "30m"\ninactivity = "5m"')
    site = load_configuration(write(tmp_path, text)).connections["site"]
    assert site.children["net"].inactivity == 300  # the daemon closes it (tests/e2e)


def test_connection_keys_strongswan_semantics(tmp_path: Path) -> None:
    text = PSK_SITE.replace(
        "[connections.site]\n",
        '[connections.site]\nkeyingtries = 0\nunique = "no"\nchildless = "allow"\n'
        'dpd_timeout = "60s"\nrand_time = "5m"\n',
    )
    site = load_configuration(write(tmp_path, text)).connections["site"]
    assert site.keyingtries == 0 and site.dpd_timeout == 60 and site.rand_time == 300
    text = PSK_SITE.replace("[connections.site]\n", '[connections.site]\nchildless = "force"\n')
    (ike,) = to_engine_configs(load_configuration(write(tmp_path, text)))
    assert ike.childless == "force"  # RFC 6023, carried to the engine
    text = PSK_SITE.replace("[connections.site]\n", '[connections.site]\nunique = "replace"\n')
    (ike,) = to_engine_configs(load_configuration(write(tmp_path, text)))
    assert ike.unique == "replace"  # tests/engine/test_unique.py
    for key, words in (
        ('unique = "twice"', "not one of keep, never, no, replace"),
        ('childless = "sometimes"', "not one of allow, force, never"),
        ("keyingtries = -1", "out of range"),
    ):
        text = PSK_SITE.replace("[connections.site]\n", f"[connections.site]\n{key}\n")
        error = error_for(tmp_path, text)
        assert error.key == "connections.site." + key.split()[0], key
        assert words in str(error), key


def test_check_reports_every_error_in_one_run(tmp_path: Path) -> None:
    """Issue 21 item 5: three bad keys in three places, three errors in one run."""
    text = PSK_SITE.replace('rekey_time = "30m"', 'rekey_time = "soon"\nmark_in = 1')
    text = text.replace("[connections.site]\n", '[connections.site]\nmobike = "yes"\n')
    text = text.replace("0x0102030405060708", "0xnothex")
    error = error_for(tmp_path, text)
    keys = {e.key for e in error.errors}
    assert keys == {
        "connections.site.mobike",
        "connections.site.children.net.rekey_time",
        "connections.site.children.net.mark_in",
        "secrets.ike-site.secret",
    }
    assert str(error).count("\n") == 3  # one line per error
    assert all(e.line for e in error.errors)


def test_wire_limits_are_checked_at_load_time(tmp_path: Path) -> None:
    """F7: the proposal number is one octet (RFC 7296 sec. 3.3.1): 256 proposals cannot
    be sent, so they are refused at load time rather than when initiating."""
    many = ", ".join(['"aes256gcm16-prfsha256-x25519"'] * 256)
    text = PSK_SITE.replace('proposals = ["aes256gcm16-prfsha256-x25519"]', f"proposals = [{many}]")
    assert text != PSK_SITE
    error = error_for(tmp_path, text)
    assert error.key == "connections.site.proposals" and "at most 255" in str(error)
    many = ", ".join(['"aes256gcm16"'] * 256)
    text = PSK_SITE.replace('esp_proposals = ["aes256gcm16"]', f"esp_proposals = [{many}]")
    error = error_for(tmp_path, text)
    assert error.key == "connections.site.children.net.esp_proposals"
    # 255 transforms in one proposal cannot be reached: a proposal string holds each
    # algorithm once (repeats are merged) and there are fewer than 255 of them.


def test_deeply_nested_toml_is_a_configuration_error(tmp_path: Path) -> None:
    """F8: a value 3,000 arrays deep is a ConfigError, not a RecursionError."""
    text = PSK_SITE.replace("[daemon]\n", "[daemon]\ntun_name = " + "[" * 3000 + "]" * 3000 + "\n")
    assert text != PSK_SITE
    error = error_for(tmp_path, text)
    assert "nested" in str(error)
    text = PSK_SITE + "\n[connections.x" + ".y" * 100 + "]\nz = 1\n"
    assert "nested" in str(error_for(tmp_path, text))


def test_unquoted_toml_string_gets_a_hint(tmp_path: Path) -> None:
    text = PSK_SITE.replace("[daemon]\n", "[daemon]\ntun_name = ipsec7\n")
    assert text != PSK_SITE
    error = error_for(tmp_path, text)
    assert error.line == line_of(text, "tun_name = ipsec7")
    assert 'quoted: write key = "value"' in str(error)


def test_fixed_value_keys(tmp_path: Path) -> None:
    load_configuration(
        write(
            tmp_path,
            PSK_SITE.replace("[connections.site]\n", '[connections.site]\nmobike = "no"\n'),
        )
    )
    error = error_for(
        tmp_path, PSK_SITE.replace("[connections.site]\n", "[connections.site]\nmobike = true\n")
    )
    assert error.key == "connections.site.mobike"
    assert "only mobike = no" in str(error)


def test_unknown_proposal_keyword_names_it(tmp_path: Path) -> None:
    text = PSK_SITE.replace('esp_proposals = ["aes256gcm16"]', 'esp_proposals = ["aes256gcm17"]')
    error = error_for(tmp_path, text)
    assert error.key == "connections.site.children.net.esp_proposals"
    assert "aes256gcm17" in str(error)
    assert error.line == line_of(text, "esp_proposals")


def test_weak_algorithm_refused_unless_allowed(tmp_path: Path) -> None:
    weak = PSK_SITE.replace("aes256gcm16-prfsha256-x25519", "aes256-sha256-modp1024")
    error = error_for(tmp_path, weak)
    assert error.key == "connections.site.proposals"
    assert "modp1024" in str(error) and "allow_weak_algorithms" in str(error)
    allowed = weak.replace("[daemon]\n", '[daemon]\nallow_weak_algorithms = ["modp1024"]\n')
    configuration = load_configuration(write(tmp_path, allowed))
    assert configuration.connections["site"].proposals == ["aes256-sha256-modp1024"]


def test_retransmit_settings_reach_every_engine_config(tmp_path: Path) -> None:
    """strongSwan's charon.retransmit_* defaults (4 s, x1.8, 5 tries), and the [daemon]
    values when given, in each connection's IkeConfig."""
    defaults = to_engine_configs(load_configuration(write(tmp_path, PSK_SITE)))
    assert [(c.retransmit_timeout, c.retransmit_base, c.retransmit_tries) for c in defaults] == [
        (4.0, 1.8, 5)
    ]
    text = PSK_SITE.replace(
        "[daemon]\n",
        '[daemon]\nretransmit_timeout = "0.5s"\nretransmit_base = 1.2\nretransmit_tries = 2\n',
    )
    configuration = load_configuration(write(tmp_path, text))
    assert configuration.daemon.retransmit_timeout == 0.5
    (engine,) = to_engine_configs(configuration)
    assert (engine.retransmit_timeout, engine.retransmit_base, engine.retransmit_tries) == (
        0.5,
        1.2,
        2,
    )


@pytest.mark.parametrize(
    ("line", "key", "words"),
    [
        ('retransmit_timeout = "0s"', "retransmit_timeout", "more than 0"),
        ('retransmit_timeout = "soon"', "retransmit_timeout", "duration"),
        ("retransmit_base = 0.5", "retransmit_base", "out of range"),
        ('retransmit_base = "fast"', "retransmit_base", "not a number"),
        ("retransmit_tries = 0", "retransmit_tries", "out of range"),
    ],
)
def test_bad_retransmit_settings(tmp_path: Path, line: str, key: str, words: str) -> None:
    error = error_for(tmp_path, PSK_SITE.replace("[daemon]\n", f"[daemon]\n{line}\n"))
    assert error.key == f"daemon.{key}", error
    assert words in str(error)


def test_unknown_allow_weak_entry(tmp_path: Path) -> None:
    text = PSK_SITE.replace("[daemon]\n", '[daemon]\nallow_weak_algorithms = ["rot13"]\n')
    error = error_for(tmp_path, text)
    assert "rot13" in str(error)


@pytest.mark.parametrize(
    ("old", "new", "key", "words"),
    [
        ('rekey_time = "30m"', 'rekey_time = "soon"', "children.net.rekey_time", "duration"),
        (
            'local_ts = ["10.1.0.0/16"]',
            'local_ts = ["banana"]',
            "children.net.local_ts",
            "traffic selector",
        ),
        (
            'remote_addrs = "192.0.2.2"',
            'remote_addrs = "192.0.2.2/33"',
            "remote_addrs",
            "not an address",
        ),
        ('auth = "psk"\nid = "left', 'auth = "eap-peap"\nid = "left', "local.auth", "eap-mschapv2"),
        ("[connections.site]\n", "[connections.site]\nversion = 1\n", "version", "IKEv1"),
        (
            "[connections.site]\n",
            "[connections.site]\nlocal_port = 70000\n",
            "local_port",
            "0..65535",
        ),
        ("[connections.site]\n", '[connections.site]\nencap = "maybe"\n', "encap", "yes or no"),
        (
            'rekey_time = "30m"',
            'rekey_time = "30m"\nlife_time = "10m"',
            "children.net.life_time",
            "shorter than rekey_time",
        ),
    ],
)
def test_bad_values(tmp_path: Path, old: str, new: str, key: str, words: str) -> None:
    assert old in PSK_SITE
    text = PSK_SITE.replace(old, new, 1)
    error = error_for(tmp_path, text)
    assert error.key == f"connections.site.{key}"
    assert words in str(error)
    assert error.line is not None
    last_key = key.rsplit(".", 1)[-1]
    assert last_key in text.splitlines()[error.line - 1]


def test_missing_sections(tmp_path: Path) -> None:
    no_children = (
        PSK_SITE.split("[connections.site.children.net]")[0]
        + PSK_SITE.split('rekey_bytes = "500M"\n')[1]
    )
    # No children: an IKE SA only, as strongSwan allows (children come from elsewhere).
    assert not load_configuration(write(tmp_path, no_children)).connections["site"].children
    no_secret = PSK_SITE.split("[secrets.ike-site]")[0]
    error = error_for(tmp_path, no_secret)
    assert "no ike secret" in str(error)


def test_toml_syntax_error_has_line(tmp_path: Path) -> None:
    text = PSK_SITE.replace("tun_name", "tun name") + "\n[connections.site\n"
    error = error_for(tmp_path, text)
    assert "not valid TOML" in str(error)
    assert error.line == line_of(text, "[connections.site\n".strip()) or error.line


def test_unknown_top_level_table(tmp_path: Path) -> None:
    error = error_for(tmp_path, PSK_SITE + '\n[authorities.x]\ncacert = "ca.pem"\n')
    assert error.key == "authorities"
    assert error.line == line_of(PSK_SITE + "\n[authorities.x]", "[authorities.x]")


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_configuration("/nonexistent/aioipsec.toml")
    with pytest.raises(ConfigError, match="no configuration"):
        load_configuration()


# --------------------------------------------------------------------------- secrets


def test_secret_notations_and_lookup_rules(tmp_path: Path) -> None:
    text = PSK_SITE + textwrap.dedent(
        """
        [secrets.ike-any]
        secret = "fallback for everyone"

        [secrets.ike-one]
        id-a = "solo.example.org"
        secret = "0sc2VjcmV0"

        [secrets.ike-wild]
        id = "*.example.net"
        secret = "wildcard"
        """
    )
    configuration = load_configuration(write(tmp_path, text))
    # both ids match ike-site: it wins over ike-one (one id) and ike-any (no ids)
    assert configuration.psk_lookup("left.example.org", "right.example.org") == bytes(range(1, 9))
    assert configuration.psk_lookup("solo.example.org", "other.example.org") == b"secret"
    assert configuration.psk_lookup("a.example.net", "b.example.org") == b"wildcard"
    assert configuration.psk_lookup("x", "y") == b"fallback for everyone"
    # strongSwan's "@" prefix and case do not matter for FQDN identities
    assert configuration.psk_lookup("@LEFT.example.org", "@right.example.org") == bytes(range(1, 9))


def test_secrets_never_in_repr_or_listing(tmp_path: Path) -> None:
    text = PSK_SITE.replace('"0x0102030405060708"', '"very-secret-psk-value"')
    configuration = load_configuration(write(tmp_path, text))
    assert configuration.psk_lookup("left.example.org", "right.example.org") == (
        b"very-secret-psk-value"
    )
    assert "very-secret" not in repr(configuration)
    assert "very-secret" not in repr(connection_listing(configuration))
    assert "very-secret" not in repr(to_engine_configs(configuration))


def test_readable_psk_file_is_refused_unless_allowed(tmp_path: Path) -> None:
    """F9: a PSK in a file group or others may read is refused by default; [daemon]
    allow_readable_secret_files = true turns it into a warning."""
    for mode in (0o644, 0o640, 0o604):
        error = error_for_mode(tmp_path, PSK_SITE, mode)
        assert "holds a secret" in str(error) and "chmod 600" in str(error)
        assert "allow_readable_secret_files" in str(error)
    allowed = PSK_SITE.replace("[daemon]\n", "[daemon]\nallow_readable_secret_files = true\n")
    assert allowed != PSK_SITE
    configuration = load_configuration(write(tmp_path, allowed, mode=0o644))
    assert any("chmod 600" in warning for warning in configuration.warnings)
    configuration = load_configuration(write(tmp_path, PSK_SITE, mode=0o600))
    assert not configuration.warnings


def error_for_mode(tmp_path: Path, text: str, mode: int) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_configuration(write(tmp_path, text, mode=mode))
    return info.value


def test_bad_secret_values(tmp_path: Path) -> None:
    error = error_for(tmp_path, PSK_SITE.replace("0x0102030405060708", "0xnothex"))
    assert error.key == "secrets.ike-site.secret" and "hex" in str(error)
    assert "nothex" not in str(error)  # never echo secret material
    error = error_for(tmp_path, PSK_SITE.replace("[secrets.ike-site]", "[secrets.xauth-site]"))
    assert "xauth secrets are not supported" in str(error)


# --------------------------------------------------------------------------- certificates


def _pki(*args: str, stdin: bytes | None = None) -> bytes:
    return subprocess.run(
        ["pki", *args], input=stdin, capture_output=True, check=True, timeout=60
    ).stdout


@pytest.fixture(scope="module")
def pki_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA and a host certificate made by strongSwan's pki tool."""
    require_component("pki")
    base = tmp_path_factory.mktemp("pki")
    ca_key = _pki("--gen", "--type", "ed25519", "--outform", "pem")
    (base / "ca.key").write_bytes(ca_key)
    (base / "ca.key").chmod(0o600)  # a private key: as the docs say to keep one
    ca = _pki(
        "--self",
        "--ca",
        "--lifetime",
        "3650",
        "--in",
        str(base / "ca.key"),
        "--type",
        "ed25519",
        "--dn",
        "C=CH, O=aioipsec test, CN=Test CA",
        "--outform",
        "pem",
    )
    (base / "ca.pem").write_bytes(ca)
    host_key = _pki("--gen", "--type", "ecdsa", "--size", "256", "--outform", "pem")
    (base / "moon.key").write_bytes(host_key)
    os.chmod(base / "moon.key", 0o600)
    public = _pki("--pub", "--in", str(base / "moon.key"), "--type", "ecdsa")
    cert = _pki(
        "--issue",
        "--lifetime",
        "365",
        "--cacert",
        str(base / "ca.pem"),
        "--cakey",
        str(base / "ca.key"),
        "--dn",
        "C=CH, O=aioipsec test, CN=moon.example.org",
        "--san",
        "moon.example.org",
        "--outform",
        "pem",
        stdin=public,
    )
    (base / "moon.pem").write_bytes(cert)
    return base


CERT_SITE = """\
[connections.gw]
remote_addrs = ["192.0.2.2"]

[connections.gw.local]
auth = "pubkey"
certs = ["moon.pem"]
id = "moon.example.org"

[connections.gw.remote]
auth = "pubkey"
id = "sun.example.org"
cacerts = ["ca.pem"]

[connections.gw.children.net]
local_ts = ["10.1.0.0/16"]
remote_ts = ["10.2.0.0/16"]

[secrets.private-moon]
file = "moon.key"
"""


def test_certificate_connection(pki_dir: Path) -> None:
    from cryptography import x509

    path = write(pki_dir, CERT_SITE)
    (ike,) = to_engine_configs(load_configuration(path))
    assert isinstance(ike.local.certs[0], x509.Certificate)
    assert "moon.example.org" in ike.local.certs[0].subject.rfc4514_string()
    assert ike.remote.cacerts[0].subject == ike.local.certs[0].issuer
    assert ike.local.private_key is not None
    assert "PRIVATE" not in repr(ike.local)


CERT_SITE_SWANCTL = """\
connections {
    gw {
        remote_addrs = 192.0.2.2
        local {
            auth = AUTH
            certs = moon.pem
            id = moon.example.org
        }
        remote {
            auth = pubkey
            id = sun.example.org
            cacerts = ca.pem
        }
        children {
            net {
                local_ts = 10.1.0.0/16
                remote_ts = 10.2.0.0/16
            }
        }
    }
}
secrets {
    private-moon {
        file = moon.key
    }
}
"""


@pytest.mark.parametrize(
    ("auth", "rsa_pss"),
    [
        ("pubkey", False),
        ("rsa", False),
        ("rsa/pss", True),
        ("rsa/pss-sha256", True),
        ("ike:rsa/pss-sha384-sha512", True),
        ("rsa-2048-sha256", False),
        ("ecdsa-256-sha256", False),
        ("ed25519", False),
        ("pubkey-sha256-sha512", False),
    ],
)
def test_signature_auth_methods_in_toml_and_swanctl(
    pki_dir: Path, auth: str, rsa_pss: bool
) -> None:
    """swanctl's auth = values for signatures; rsa/pss selects RSASSA-PSS for our key."""
    from aioipsec.config.swanctl import load_swanctl

    toml = write(pki_dir, CERT_SITE.replace('auth = "pubkey"\ncerts', f'auth = "{auth}"\ncerts'))
    swanctl = pki_dir / "swanctl.conf"
    swanctl.write_text(CERT_SITE_SWANCTL.replace("AUTH", auth))
    for configuration in (load_configuration(toml), load_swanctl(swanctl)):
        (ike,) = to_engine_configs(configuration)
        assert ike.local.auth == "pubkey"
        assert ike.local.rsa_pss is rsa_pss
        assert ike.remote.rsa_pss is False


@pytest.mark.parametrize("auth", ["eap-sim", "rsa/pkcs1", "rsa-sha255", "ike:", "xauth", "pss"])
def test_unknown_auth_methods_refused(tmp_path: Path, auth: str) -> None:
    text = PSK_SITE.replace('auth = "psk"', f'auth = "{auth}"', 1)
    assert text != PSK_SITE
    error = error_for(tmp_path, text)
    assert error.key.endswith(".auth"), error
    assert "rsa/pss" in str(error)


def test_private_key_readable_by_others_is_refused(pki_dir: Path) -> None:
    path = write(pki_dir, CERT_SITE)
    os.chmod(pki_dir / "moon.key", 0o640)
    try:
        with pytest.raises(ConfigError) as info:
            load_configuration(path)
    finally:
        os.chmod(pki_dir / "moon.key", 0o600)
    assert info.value.key == "secrets.private-moon.file"
    assert "chmod 600" in str(info.value)


def test_pubkey_without_matching_private_key(pki_dir: Path) -> None:
    path = write(pki_dir, CERT_SITE.split("[secrets.private-moon]")[0])
    with pytest.raises(ConfigError, match="no private key matches"):
        load_configuration(path)


def test_missing_certificate_file(pki_dir: Path) -> None:
    path = write(pki_dir, CERT_SITE.replace('"ca.pem"', '"nope.pem"'))
    with pytest.raises(ConfigError) as info:
        load_configuration(path)
    assert info.value.key == "connections.gw.remote.cacerts"
    assert "nope.pem" in str(info.value)


def test_load_toml_into_existing_configuration(tmp_path: Path) -> None:
    configuration = load_toml(write(tmp_path, PSK_SITE))
    other = PSK_SITE.replace("[daemon]", "[daemon]").replace("site", "site2")
    other = other.split("[connections.site2]")[1]
    load_toml(write(tmp_path, "[connections.site2]" + other, name="b.toml"), configuration)
    assert set(configuration.connections) == {"site", "site2"}
    with pytest.raises(ConfigError, match="also defined in"):
        load_toml(write(tmp_path, PSK_SITE, name="c.toml"), configuration)


def test_shipped_certificate_example(pki_dir: Path, tmp_path: Path) -> None:
    """aioipsec/examples/site-cert.toml with the folder layout its comment describes."""
    for folder in ("x509", "x509ca", "private"):
        (tmp_path / folder).mkdir()
    shutil.copy(pki_dir / "moon.pem", tmp_path / "x509" / "moonCert.pem")
    shutil.copy(pki_dir / "ca.pem", tmp_path / "x509ca" / "caCert.pem")
    shutil.copy(pki_dir / "moon.key", tmp_path / "private" / "moonKey.pem")
    os.chmod(tmp_path / "private" / "moonKey.pem", 0o600)
    config = tmp_path / "site-cert.toml"
    shutil.copy(EXAMPLES / "site-cert.toml", config)
    (ike,) = to_engine_configs(load_configuration(config))
    assert ike.local.auth == ike.remote.auth == "pubkey"
    assert ike.local.private_key is not None and ike.remote.cacerts
    assert ike.children[0].start_action == "trap" and ike.children[0].dpd_action == "restart"


def test_identity_matching_uses_identity_semantics(tmp_path: Path) -> None:
    text = PSK_SITE + textwrap.dedent(
        """
        [secrets.ike-dn]
        id = ["C=CH, O=Example, CN=sun", "2001:db8::1"]
        secret = "dn"
        """
    )
    configuration = load_configuration(write(tmp_path, text))
    assert configuration.psk_lookup("C=CH,O=Example,CN=sun", "x.example") == b"dn"
    assert configuration.psk_lookup("2001:DB8:0::1", "x.example") == b"dn"
    assert configuration.psk_lookup("C=CH, O=Example, CN=moon", "x.example") is None


def test_dns_names_are_resolved_for_the_engine(tmp_path: Path) -> None:
    import socket

    expected = {info[4][0] for info in socket.getaddrinfo("localhost", None)}
    text = PSK_SITE.replace('remote_addrs = "192.0.2.2"', 'remote_addrs = "localhost"')
    (ike,) = to_engine_configs(load_configuration(write(tmp_path, text)))
    assert set(ike.remote_addrs) == expected
    text = PSK_SITE.replace('remote_addrs = "192.0.2.2"', 'remote_addrs = "no-such-host.invalid"')
    with pytest.raises(ConfigError, match=r"cannot resolve 'no-such-host\.invalid'") as info:
        to_engine_configs(load_configuration(write(tmp_path, text)))
    assert info.value.key == "connections.site.remote_addrs"


def test_peer_certificate_needs_a_trust_anchor(pki_dir: Path) -> None:
    text = CERT_SITE.replace('cacerts = ["ca.pem"]\n', "")
    with pytest.raises(ConfigError, match="no CA certificate") as info:
        load_configuration(write(pki_dir, text))
    assert info.value.key == "connections.gw.remote.cacerts"
