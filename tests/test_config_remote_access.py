"""Remote-access configuration (issue 14): top-level pools, connections.NAME.pools and vips,
auth = eap..., eap_id and eap secrets; TOML and swanctl.conf give the same model."""

from __future__ import annotations

import textwrap
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from aioipsec.config import ConfigError, load_configuration, to_engine_configs

GATEWAY_TOML = """\
[connections.rw]
local_addrs = ["192.0.2.1"]
pools = ["rw_pool", "rw_pool6"]

[connections.rw.local]
auth = "psk"
id = "moon.example.org"

[connections.rw.remote]
auth = "psk"

[connections.rw.children.net]
local_ts = ["10.1.0.0/16"]

[pools.rw_pool]
addrs = "10.3.0.0/28"
dns = ["10.1.0.53"]
25 = "corp.example.org"

[pools.rw_pool6]
addrs = "fec3::/120"

[secrets.ike-rw]
secret = "0sv+NkxY9LLZvwj4qCC2o/gGrWDF2d21jL"

[secrets.eap-carol]
id = "carol"
secret = "Ar3etTnp"
"""

GATEWAY_SWANCTL = """\
connections {
   rw {
      local_addrs = 192.0.2.1
      pools = rw_pool, rw_pool6
      local {
         auth = psk
         id = moon.example.org
      }
      remote {
         auth = psk
      }
      children {
         net {
            local_ts = 10.1.0.0/16
         }
      }
   }
}
pools {
   rw_pool {
      addrs = 10.3.0.0/28
      dns = 10.1.0.53
      25 = corp.example.org
   }
   rw_pool6 {
      addrs = fec3::/120
   }
}
secrets {
   ike-rw {
      secret = 0sv+NkxY9LLZvwj4qCC2o/gGrWDF2d21jL
   }
   eap-carol {
      id = carol
      secret = Ar3etTnp
   }
}
"""

CLIENT_TOML = """\
[connections.home]
remote_addrs = ["192.0.2.1"]
vips = ["0.0.0.0", "::"]

[connections.home.local]
auth = "eap-mschapv2"
id = "carol@example.org"
eap_id = "carol"

[connections.home.remote]
auth = "psk"
id = "moon.example.org"

[connections.home.children.net]
remote_ts = ["10.1.0.0/16"]

[secrets.ike-home]
secret = "x"

[secrets.eap-carol]
id = "carol"
secret = "Ar3etTnp"
"""


POOLS = 'pools = ["rw_pool", "rw_pool6"]'


def write(tmp_path: Path, text: str, name: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    path.chmod(0o600)
    return path


def test_gateway_toml_and_swanctl_alike(tmp_path: Path) -> None:
    from_toml = load_configuration(write(tmp_path, GATEWAY_TOML, "gw.toml"))
    from_swanctl = load_configuration(swanctl_path=write(tmp_path, GATEWAY_SWANCTL, "sw.conf"))
    for configuration in (from_toml, from_swanctl):
        pool = configuration.pools["rw_pool"]
        assert (str(pool.first), str(pool.last), pool.size) == ("10.3.0.1", "10.3.0.14", 14)
        assert configuration.pools["rw_pool6"].size == 254
        assert configuration.connections["rw"].pools == ["rw_pool", "rw_pool6"]
        assert configuration.eap_lookup("carol") == "Ar3etTnp"
        assert configuration.eap_lookup("dave") is None
        (ike,) = to_engine_configs(configuration)
        assert ike.pools == ["rw_pool", "rw_pool6"] and ike.vips == []
    assert from_toml.pools["rw_pool"].attributes == from_swanctl.pools["rw_pool"].attributes
    assert to_engine_configs(from_toml) == to_engine_configs(from_swanctl)
    # secrets never show in a repr
    assert "Ar3etTnp" not in repr(from_toml)


def test_client_vips_and_eap(tmp_path: Path) -> None:
    configuration = load_configuration(write(tmp_path, CLIENT_TOML, "c.toml"))
    (ike,) = to_engine_configs(configuration)
    assert ike.vips == ["0.0.0.0", "::"]
    assert ike.local.auth == "eap-mschapv2" and ike.local.eap_id == "carol"
    assert ike.remote.eap_id == "%any"


@pytest.mark.parametrize(
    "old, new, key, words",
    [
        (POOLS, 'pools = ["nope"]', "connections.rw.pools", "not defined"),
        ('addrs = "fec3::/120"', 'addrs = "10.3.0.8/29"', "pools.rw_pool6.addrs", "overlaps"),
        ('addrs = "fec3::/120"', 'addrs = "fec3::/129"', "pools.rw_pool6.addrs", "not a subnet"),
        ('dns = ["10.1.0.53"]', 'dns = ["ns.example.org"]', "pools.rw_pool.dns", "dns ="),
        ('[connections.rw.remote]\nauth = "psk"', '[connections.rw.remote]\nauth = "eap-peap"',
         "connections.rw.remote.auth", "eap-mschapv2, eap-tls"),
    ],
)  # fmt: skip
def test_gateway_errors(tmp_path: Path, old: str, new: str, key: str, words: str) -> None:
    assert old in GATEWAY_TOML
    with pytest.raises(ConfigError) as info:
        load_configuration(write(tmp_path, GATEWAY_TOML.replace(old, new), "gw.toml"))
    assert info.value.key == key
    assert words in str(info.value)


def test_client_errors(tmp_path: Path) -> None:
    no_eap_secret = CLIENT_TOML.split("[secrets.eap-carol]")[0]
    with pytest.raises(ConfigError, match="no eap secret is for that identity") as info:
        load_configuration(write(tmp_path, no_eap_secret, "c.toml"))
    assert info.value.key == "connections.home.local"
    bad_vip = CLIENT_TOML.replace('vips = ["0.0.0.0", "::"]', 'vips = ["%config"]')
    with pytest.raises(ConfigError, match="not an address") as info:
        load_configuration(write(tmp_path, bad_vip, "c.toml"))
    assert info.value.key == "connections.home.vips"
    assert IPv4Address("0.0.0.0")  # vips keep strongSwan's spelling, not %config


def test_pools_dhcp_and_radius_load_with_the_dhcp_table(tmp_path: Path) -> None:
    """pools = dhcp / radius name no pools section; [dhcp] holds strongSwan's dhcp plugin
    settings (docs/remote-access.md, "Pools from DHCP and RADIUS")."""
    text = GATEWAY_TOML.replace(POOLS, 'pools = ["dhcp", "rw_pool"]')
    text += '\n[dhcp]\nserver = "10.1.255.255"\nidentity_lease = true\ninterface = "eth1"\n'
    configuration = load_configuration(write(tmp_path, text, "g.toml"))
    assert configuration.connections["rw"].pools == ["dhcp", "rw_pool"]
    assert configuration.dhcp is not None and configuration.dhcp.identity_lease
    assert configuration.dhcp.server == "10.1.255.255" and configuration.dhcp.broadcast
    with pytest.raises(ConfigError) as raised:
        load_configuration(write(tmp_path, text.replace("10.1.255.255", "dhcp.example"), "b.toml"))
    assert "dhcp" in str(raised.value) and "not an IPv4 address" in str(raised.value)
