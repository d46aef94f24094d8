"""auth = eap-md5 | eap-ttls | eap-dynamic | eap in swanctl.conf and TOML (the same model),
with the eap secrets as swanctl writes them; EAP-PEAP stays refused, naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from aioipsec.config import ConfigError, load_configuration, to_engine_configs
from tests.test_config_remote_access import CLIENT_TOML, GATEWAY_SWANCTL, GATEWAY_TOML, write

METHODS = ["eap-md5", "eap-ttls", "eap-dynamic", "eap"]


@pytest.mark.parametrize("auth", METHODS)
def test_gateway_methods_toml_and_swanctl_alike(tmp_path: Path, auth: str) -> None:
    toml = GATEWAY_TOML.replace('[connections.rw.remote]\nauth = "psk"',
                                f'[connections.rw.remote]\nauth = "{auth}"')  # fmt: skip
    swanctl = GATEWAY_SWANCTL.replace("remote {\n         auth = psk",
                                      f"remote {{\n         auth = {auth}")  # fmt: skip
    assert toml != GATEWAY_TOML and swanctl != GATEWAY_SWANCTL
    from_toml = load_configuration(write(tmp_path, toml, "gw.toml"))
    from_swanctl = load_configuration(swanctl_path=write(tmp_path, swanctl, "sw.conf"))
    (ike,) = to_engine_configs(from_toml)
    assert ike.remote.auth == auth and ike.remote.eap_id == "%any"
    assert to_engine_configs(from_toml) == to_engine_configs(from_swanctl)
    assert from_swanctl.eap_lookup("carol") == "Ar3etTnp"


@pytest.mark.parametrize("auth", METHODS)
def test_client_methods(tmp_path: Path, auth: str) -> None:
    text = CLIENT_TOML.replace('auth = "eap-mschapv2"', f'auth = "{auth}"')
    (ike,) = to_engine_configs(load_configuration(write(tmp_path, text, "c.toml")))
    assert ike.local.auth == auth and ike.local.eap_id == "carol"


def test_eap_md5_client_needs_its_secret(tmp_path: Path) -> None:
    text = CLIENT_TOML.replace('auth = "eap-mschapv2"', 'auth = "eap-md5"')
    no_secret = text.split("[secrets.eap-carol]")[0]
    with pytest.raises(ConfigError, match="EAP-MD5 as 'carol', but no eap secret") as info:
        load_configuration(write(tmp_path, no_secret, "c.toml"))
    assert info.value.key == "connections.home.local"


@pytest.mark.parametrize("auth", ["eap-peap", "eap-sim", "eap-aka"])
def test_other_methods_refused_by_key(tmp_path: Path, auth: str) -> None:
    text = CLIENT_TOML.replace('auth = "eap-mschapv2"', f'auth = "{auth}"')
    with pytest.raises(ConfigError) as info:
        load_configuration(write(tmp_path, text, "c.toml"))
    assert info.value.key == "connections.home.local.auth"
    assert f"auth = {auth} is not supported" in str(info.value)
    assert "eap-md5, eap-mschapv2, eap-tls, eap-ttls, eap-dynamic" in str(info.value)
