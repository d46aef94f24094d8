"""Configuration of remote auth = eap-radius: swanctl.conf's auth, groups and aaa_id, the
daemon configuration's [radius] table, and what `check` says without a server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from aioipsec.config import ConfigError, load_configuration, to_engine_configs

REPO = Path(__file__).resolve().parents[2]

GATEWAY = """\
connections {
   research {
      local {
         auth = psk
         id = moon.example.org
      }
      remote {
         auth = eap-radius
         eap_id = %any
         groups = Research, Lab
      }
      children {
         net {
            local_ts = 10.1.0.0/16
         }
      }
   }
}
secrets {
   ike-moon {
      secret = "0sv+NkxY9LLZvwj4qCC2o/gGrWDF2d21jL"
   }
}
"""

CLIENT = """\
connections {
   home {
      remote_addrs = 192.0.2.1
      local {
         auth = eap-mschapv2
         id = carol@example.org
         eap_id = carol
         aaa_id = aaa.example.org
      }
      remote {
         auth = psk
         id = moon.example.org
      }
      children {
         home {
            remote_ts = 10.1.0.0/16
         }
      }
   }
}
secrets {
   eap-carol {
      id = carol
      secret = Ar3etTnp
   }
   ike-moon {
      secret = "0sv+NkxY9LLZvwj4qCC2o/gGrWDF2d21jL"
   }
}
"""


def write(directory: Path, text: str, name: str, mode: int = 0o600) -> Path:
    path = directory / name
    path.write_text(text)
    path.chmod(mode)
    return path


def radius_toml(directory: Path, secret_mode: int = 0o600) -> Path:
    secret = write(directory, "s3cret-shared\n", "radius.secret", secret_mode)
    return write(
        directory,
        f'[radius]\nservers = ["127.0.0.1", "[::1]:1645"]\nsecret_file = "{secret}"\n'
        'timeout = "1s"\ntries = 2\n',
        "daemon.toml",
    )


def test_eap_radius_groups_and_aaa_id_load(tmp_path: Path) -> None:
    configuration = load_configuration(
        radius_toml(tmp_path), swanctl_path=write(tmp_path, GATEWAY, "gw.conf")
    )
    radius = configuration.radius
    assert radius is not None and radius.secret == b"s3cret-shared" and radius.tries == 2
    assert [str(s) for s in radius.parsed_servers()] == ["127.0.0.1:1812", "[::1]:1645"]
    assert "s3cret" not in repr(radius)
    (config,) = to_engine_configs(configuration)
    assert config.remote.auth == "eap-radius" and config.remote.groups == ["Research", "Lab"]
    assert not configuration.warnings
    client = load_configuration(swanctl_path=write(tmp_path, CLIENT, "c.conf"))
    (home,) = to_engine_configs(client)
    assert home.local.aaa_id == "aaa.example.org"


def test_without_a_radius_server_it_loads_and_check_warns(tmp_path: Path) -> None:
    path = write(tmp_path, GATEWAY, "gw.conf")
    configuration = load_configuration(swanctl_path=path)
    (warning,) = [w for w in configuration.warnings if "eap-radius" in w]
    assert "no RADIUS server is configured" in warning and "[radius]" in warning
    result = subprocess.run(
        [sys.executable, "-m", "aioipsec", "check", "--swanctl-conf", str(path)],
        capture_output=True, text=True, timeout=60, cwd=REPO, check=False,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "no RADIUS server is configured" in result.stdout + result.stderr


def test_a_readable_secret_file_is_refused(tmp_path: Path) -> None:
    toml = radius_toml(tmp_path, secret_mode=0o644)
    with pytest.raises(ConfigError) as caught:
        load_configuration(toml, swanctl_path=write(tmp_path, GATEWAY, "gw.conf"))
    text = str(caught.value)
    assert "radius.secret_file" in text and "chmod 600" in text


@pytest.mark.parametrize(
    ("table", "wanted"),
    [
        ('servers = ["radius.example.org"]\n', "is not an IP address"),
        ('servers = ["127.0.0.1:0"]\n', "bad port"),
        ("", "needs servers"),
    ],
)
def test_bad_radius_tables_name_the_key(tmp_path: Path, table: str, wanted: str) -> None:
    secret = write(tmp_path, "x\n", "radius.secret")
    toml = write(tmp_path, f'[radius]\n{table}secret_file = "{secret}"\n', "d.toml")
    with pytest.raises(ConfigError) as caught:
        load_configuration(toml)
    assert wanted in str(caught.value) and "radius.servers" in str(caught.value)


def test_eap_radius_and_groups_belong_in_remote(tmp_path: Path) -> None:
    local_radius = GATEWAY.replace(
        "auth = psk\n         id = moon", "auth = eap-radius\n         id = moon"
    )
    with pytest.raises(ConfigError, match="in the local section"):
        load_configuration(swanctl_path=write(tmp_path, local_radius, "a.conf"))
    local_groups = CLIENT.replace("aaa_id = aaa.example.org", "groups = x")
    with pytest.raises(ConfigError, match="groups in the local section"):
        load_configuration(swanctl_path=write(tmp_path, local_groups, "b.conf"))


def test_groups_without_eap_radius_warn_that_peers_are_refused(tmp_path: Path) -> None:
    text = GATEWAY.replace("auth = eap-radius\n         eap_id = %any", "auth = psk")
    configuration = load_configuration(swanctl_path=write(tmp_path, text, "g.conf"))
    (warning,) = [w for w in configuration.warnings if "groups" in w]
    assert "attribute certificates are not supported" in warning
