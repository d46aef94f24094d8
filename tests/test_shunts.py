"""strongSwan's shunt children (``mode = pass | drop``) as our kernel state, in network
namespaces: a "tunnel" route in table 220 that swallows the peer (into a device behind our
policy-routing rule, as while a 0.0.0.0/0 tunnel is up), a pass shunt that takes its
traffic around the tunnel by BYPASS_MARK, a drop shunt that drops it anyway, and the
table gone when no shunt is left. The swanctl.conf side: shunt-only connections load, and
are no IKE connection."""

from __future__ import annotations

from pathlib import Path

import pytest

from aioipsec.config import ConfigError, load_configuration, to_engine_configs
from aioipsec.netns import Lab
from aioipsec.runtime import shunts
from aioipsec.runtime.sockets import BYPASS_MARK

pytestmark = pytest.mark.needs("root", "ip", "nftables", "ping", "tun")

CONF = """connections {
   home {
      remote_addrs = 192.0.2.2
      local { auth = psk
      }
      remote { auth = psk
      }
      children { home { remote_ts = 0.0.0.0/0
      } }
   }
   local-net {
      children {
         lan { local_ts = 10.9.0.0/24
               remote_ts = 10.9.0.0/24
               mode = pass
         }
         ssh { local_ts = 0.0.0.0/0[tcp/22]
               remote_ts = 0.0.0.0/0[tcp]
               mode = %s
         }
      }
   }
}
secrets { ike { secret = 0x00112233445566778899aabbccddeeff } }
"""


def _ping(namespace, address: str) -> bool:
    return namespace.run("ping", "-c1", "-W1", address, check=False).returncode == 0


def test_pass_and_drop_in_the_kernel() -> None:
    with Lab("sh") as lab:
        a, b = lab.namespace("a"), lab.namespace("b")
        lab.veth(a, "10.9.0.1/24", b, "10.9.0.2/24")
        # What a tunnel to 0.0.0.0/0 does to this peer (aioipsec.runtime.routes): table 220
        # behind "not fwmark BYPASS_MARK", a route into the tunnel device (a TUN device
        # here that no daemon reads, which swallows what it gets).
        a.ip("tuntap", "add", "dev", "tunnel0", "mode", "tun")
        a.ip("link", "set", "tunnel0", "up")
        a.ip("rule", "add", "pref", "220", "not", "fwmark", hex(BYPASS_MARK), "table", "220")
        a.ip("route", "add", "10.9.0.0/24", "dev", "tunnel0", "table", "220")
        assert not _ping(a, "10.9.0.2")
        lan = shunts.Shunt("local-net/lan", "pass", ("10.9.0.0/24",), ("10.9.0.0/24",))
        with a.entered():
            shunts.apply([lan])
        assert _ping(a, "10.9.0.2")  # around the tunnel, in clear
        drop = shunts.Shunt("local-net/peer", "drop", ("10.9.0.1/32",), ("10.9.0.2/32[icmp]",))
        with a.entered():
            shunts.apply([lan, drop])
        assert not _ping(a, "10.9.0.2")
        listing = a.run("nft", "list", "table", "inet", shunts.TABLE).stdout
        assert "counter packets 1" in listing and "drop" in listing, listing
        with a.entered():
            shunts.remove()
        assert shunts.TABLE not in a.run("nft", "list", "tables").stdout
        assert not _ping(a, "10.9.0.2")  # the tunnel route again


@pytest.mark.parametrize("mode", ["pass", "drop"])
def test_shunt_only_connection_loads_and_is_not_negotiated(tmp_path: Path, mode: str) -> None:
    conf = tmp_path / "swanctl.conf"
    conf.write_text(CONF % mode)
    conf.chmod(0o600)
    configuration = load_configuration(swanctl_path=conf)
    assert [c.name for c in to_engine_configs(configuration)] == ["home"]
    found = shunts.shunts_of(configuration.connections)
    assert [(s.name, s.action) for s in found] == [("local-net/lan", "pass"),
                                                   ("local-net/ssh", mode)]  # fmt: skip
    script = shunts.table_script(found)
    assert "tcp sport 22" in script and "tcp dport 22" in script


def test_a_shunt_needs_written_selectors(tmp_path: Path) -> None:
    conf = tmp_path / "swanctl.conf"
    conf.write_text((CONF % "pass").replace("local_ts = 0.0.0.0/0[tcp/22]", "local_ts = dynamic"))
    conf.chmod(0o600)
    with pytest.raises(ConfigError) as caught:
        load_configuration(swanctl_path=conf)
    assert caught.value.key == "connections.local-net.children.ssh"
    assert "dynamic" in caught.value.reason


def test_the_daemon_installs_its_shunts(tmp_path: Path) -> None:
    """Our daemon with a shunt-only connection beside a tunnel: the shunt table is there
    while it runs (and stays after the stop, with the fail-closed rules)."""
    from aioipsec.interop.ours import AioipsecPeer

    with Lab("sd") as lab:
        a, b = lab.namespace("a"), lab.namespace("b")
        lab.veth(a, "10.9.0.1/24", b, "10.9.0.2/24")
        ours = AioipsecPeer(lab, a, tmp_path / "ours")
        ours.load((CONF % "drop").replace("192.0.2.2", "10.9.0.2"))
        try:
            listing = a.run("nft", "list", "table", "inet", shunts.TABLE).stdout
        finally:
            ours.stop()
        assert "meta mark set 0x00002200" in listing and "tcp dport 22" in listing, listing
        assert "drop" in listing, listing
