"""EAP-only gateways in swanctl.conf (RFC 5998, docs/remote-access.md): the gateway's own
round is an EAP method, as strongSwan writes it. Such a gateway needs no EAP secret of its
own, and only a mutual, key-generating method among ``remote auth`` makes sense: with
EAP-MSCHAPv2 alone the configuration is refused when it loads, saying why."""

from __future__ import annotations

from pathlib import Path

import pytest

from aioipsec.config import ConfigError, load_configuration, to_engine_configs

GATEWAY = """\
connections {
   rw {
      pools = rw_pool
      local {
         auth = %(local)s
         id = moon.example.org
      }
      remote {
         auth = %(remote)s
         eap_id = %%any
      }
      children {
         rw {
            local_ts = 10.1.0.0/16
         }
      }
   }
}
pools {
   rw_pool {
      addrs = 10.3.0.0/24
   }
}
secrets {
   eap-carol {
      id = carol
      secret = "Ar3etTnp"
   }
}
"""


def load(tmp_path: Path, local: str, remote: str):
    path = tmp_path / "swanctl.conf"
    path.write_text(GATEWAY % {"local": local, "remote": remote})
    path.chmod(0o600)
    return to_engine_configs(load_configuration(None, path))


def test_eap_only_gateway_needs_no_secret_of_its_own(tmp_path: Path) -> None:
    # local eap-mschapv2 only says "EAP-only"; the method run is remote's (EAP-TTLS).
    (config,) = load(tmp_path, "eap-mschapv2", "eap-ttls")
    assert (config.local.auth, config.remote.auth) == ("eap-mschapv2", "eap-ttls")


@pytest.mark.parametrize("remote", ["eap-mschapv2", "eap-md5"])
def test_eap_only_gateway_without_a_safe_method_is_refused(tmp_path: Path, remote: str) -> None:
    with pytest.raises(ConfigError, match="RFC 5998") as refused:
        load(tmp_path, "eap-mschapv2", remote)
    assert f"remote auth = {remote} offers none" in str(refused.value)
    assert "local auth = pubkey" in str(refused.value)


def test_a_client_with_eap_still_needs_its_secret(tmp_path: Path) -> None:
    text = GATEWAY.replace("pools = rw_pool", "remote_addrs = 192.0.2.1\n      pools = rw_pool")
    path = tmp_path / "swanctl.conf"
    path.write_text(text % {"local": "eap-mschapv2", "remote": "eap-mschapv2"})
    path.chmod(0o600)
    with pytest.raises(ConfigError, match="no eap secret"):
        load_configuration(None, path)
