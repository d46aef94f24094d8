"""Remote access with a real strongSwan (issue 14): charon as a road-warrior client
(``vips = 0.0.0.0``) against our daemon as the gateway with an address pool, in namespaces.

Topology (one namespace each)::

    carol (charon) --veth-- moon (aioipsec gateway) --veth-- lan (10.2.0.10)
    dave  (charon) --veth--/

The gateway leases from ``10.3.0.0/28``; the clients ping the LAN host from their virtual IP
(the LAN host routes 10.3.0.0/28 back through the gateway, which forwards between its TUN
device and the LAN). Checked: each client gets its lease (different addresses for two
clients), the Child SA is narrowed to it, the ping goes through, ``aioipsec pools`` lists
the leases, and after a disconnect the client gets the same address back.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from aioipsec.interop.charon import DEFAULT_CHARON_PLUGINS, Charon
from aioipsec.interop.ours import REPO, AioipsecPeer
from aioipsec.netns import Lab

pytestmark = [pytest.mark.needs("charon"), pytest.mark.timeout(240)]

PSK = "road-warrior-interop-psk-0123456789"
EAP_PASSWORD = "Ar3etTnp-interop"
LAN_HOST = "10.2.0.10"

GATEWAY_CONF = """\
connections {
   rw {
      pools = rw_pool
      local {
         auth = psk
         id = moon.example
      }
      remote {
         auth = psk
      }
      children {
         rw {
            local_ts = 10.2.0.0/24
            esp_proposals = aes256gcm16
         }
      }
   }
}
pools {
   rw_pool {
      addrs = 10.3.0.0/28
      dns = 10.2.0.53
   }
}
secrets {
   ike-rw {
      secret = "%(psk)s"
   }
}
"""

CLIENT_CONF = """\
connections {
   home {
      remote_addrs = %(gateway)s
      vips = 0.0.0.0
      local {
         auth = psk
         id = %(identity)s
      }
      remote {
         auth = psk
         id = moon.example
      }
      children {
         home {
            remote_ts = 10.2.0.0/24
            esp_proposals = aes256gcm16
         }
      }
   }
}
secrets {
   ike-home {
      id-1 = %(identity)s
      id-2 = moon.example
      secret = "%(psk)s"
   }
}
"""


def _pools(gateway: AioipsecPeer) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "aioipsec", "--socket", str(gateway.control_socket), "pools"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def _vip(charon: Charon) -> str:
    sas = charon.list_sas()
    (ike,) = sas.values()
    return str(ike["local-vips"][0])


def _ping(namespace, source: str) -> str:
    return namespace.sh(f"ping -n -c 3 -W 2 -I {source} {LAN_HOST}", timeout=20)


def test_charon_road_warriors_against_our_gateway(tmp_path: Path) -> None:
    with Lab("rw") as lab:
        moon = lab.namespace("moon")
        lan = lab.namespace("lan")
        clients = {"carol": lab.namespace("carol"), "dave": lab.namespace("dave")}
        outer = {"carol": ("10.200.1.1", "10.200.1.2"), "dave": ("10.200.2.1", "10.200.2.2")}
        for name, namespace in clients.items():
            gw_side, client_side = outer[name]
            lab.veth(moon, f"{gw_side}/24", namespace, f"{client_side}/24")
        lab.veth(moon, "10.2.0.1/24", lan, f"{LAN_HOST}/24")
        moon.enable_forwarding()
        lan.ip("route", "add", "10.3.0.0/28", "via", "10.2.0.1")

        gateway = AioipsecPeer(lab, moon, tmp_path / "moon")
        gateway.load(GATEWAY_CONF % {"psk": PSK})

        charons = {}
        for name, namespace in clients.items():
            charon = Charon(lab, namespace, tmp_path / name, plugins=DEFAULT_CHARON_PLUGINS)
            charon.start()
            charon.load(
                CLIENT_CONF % {"gateway": outer[name][0], "identity": f"{name}@example", "psk": PSK}
            )
            charons[name] = charon

        # carol, then dave: two leases, in pool order
        charons["carol"].initiate("home", "home")
        charons["dave"].initiate("home", "home")
        vips = {name: _vip(charon) for name, charon in charons.items()}
        assert vips == {"carol": "10.3.0.1", "dave": "10.3.0.2"}, vips

        # the gateway's Child SAs are narrowed to the leases
        remote_ts = sorted(
            ts
            for entry in gateway.call("sas")
            for ike in entry.values()
            for child in ike["child-sas"].values()
            for ts in child["remote-ts"]
        )
        assert remote_ts == ["10.3.0.1", "10.3.0.2"], remote_ts

        # the VIPs reach the LAN host behind the gateway, through the tunnel
        for name, namespace in clients.items():
            output = _ping(namespace, vips[name])
            assert " 0% packet loss" in output, output

        listing = _pools(gateway)
        lines = listing.splitlines()
        assert lines[0].split()[:2] == ["rw_pool", "10.3.0.0"] and lines[0].endswith("2 / 0 / 14")
        assert "online   'carol@example'" in lines[1] and "10.3.0.1" in lines[1]
        assert "online   'dave@example'" in lines[2] and "10.3.0.2" in lines[2]

        # carol disconnects: her lease goes offline, and she gets it back
        charons["carol"].swanctl("--terminate", "--ike", "home", "--timeout", "10", timeout=15)
        deadline = time.monotonic() + 10
        while "offline  'carol@example'" not in _pools(gateway) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "offline  'carol@example'" in _pools(gateway)
        charons["carol"].initiate("home", "home")
        assert _vip(charons["carol"]) == "10.3.0.1"
        output = _ping(clients["carol"], "10.3.0.1")
        assert " 0% packet loss" in output, output

        log = (tmp_path / "moon" / "daemon.log").read_text()
        leased = [json.loads(line) for line in log.splitlines() if "virtual IP leased" in line]
        assert [entry["identity"] for entry in leased] == [
            "carol@example",
            "dave@example",
            "carol@example",
        ]
        assert textwrap.dedent  # the configurations above are swanctl.conf text as written


EAP_GATEWAY_CONF = """\
connections {
   rw-eap {
      pools = rw_pool
      local {
         auth = pubkey
         certs = %(cert)s
         id = moon.example
      }
      remote {
         auth = %(auth)s
         eap_id = %%any
      }
      children {
         rw {
            local_ts = 10.2.0.0/24
            esp_proposals = aes256gcm16
         }
      }
   }
}
pools {
   rw_pool {
      addrs = 10.3.0.0/28
   }
}
secrets {
   eap-carol {
      id = carol
      secret = "%(password)s"
   }
}
"""

EAP_CLIENT_CONF = """\
connections {
   home {
      remote_addrs = 10.200.1.1
      vips = 0.0.0.0
      local {
         auth = %(auth)s
         id = carol@example
         eap_id = carol
      }
      remote {
         auth = pubkey
         id = moon.example
      }
      children {
         home {
            remote_ts = 10.2.0.0/24
            esp_proposals = aes256gcm16
         }
      }
   }
}
secrets {
   eap-carol {
      id = carol
      secret = "%(password)s"
   }
}
"""

EAP_PLUGINS = DEFAULT_CHARON_PLUGINS + " eap-identity eap-mschapv2 md4 des"


def _eap_lab(lab: Lab, tmp_path: Path, client_password: str):
    from aioipsec.interop.pki import Pki

    moon, lan, carol = lab.namespace("moon"), lab.namespace("lan"), lab.namespace("carol")
    lab.veth(moon, "10.200.1.1/24", carol, "10.200.1.2/24")
    lab.veth(moon, "10.2.0.1/24", lan, f"{LAN_HOST}/24")
    moon.enable_forwarding()
    lan.ip("route", "add", "10.3.0.0/28", "via", "10.2.0.1")
    pki = Pki(tmp_path / "pki")
    gateway = AioipsecPeer(lab, moon, tmp_path / "moon")
    cert = pki.install("moon.example", gateway.workdir)
    gateway.load(
        EAP_GATEWAY_CONF % {"cert": cert, "auth": "eap-mschapv2", "password": EAP_PASSWORD}
    )
    charon = Charon(lab, carol, tmp_path / "carol", plugins=EAP_PLUGINS)
    pki.install("carol@example", charon.workdir)  # the CA in x509ca/ (carol's own unused)
    charon.start()
    charon.load(EAP_CLIENT_CONF % {"auth": "eap-mschapv2", "password": client_password})
    return gateway, charon, carol


def test_charon_eap_mschapv2_road_warrior(tmp_path: Path) -> None:
    with Lab("rwe") as lab:
        gateway, charon, carol = _eap_lab(lab, tmp_path, EAP_PASSWORD)
        charon.initiate("home", "home")
        assert _vip(charon) == "10.3.0.1"
        output = _ping(carol, "10.3.0.1")
        assert " 0% packet loss" in output, output
        # the lease belongs to the EAP identity, as strongSwan's would
        assert "online   'carol'" in _pools(gateway)
        assert "EAP method EAP_MSCHAPV2 succeeded, MSK established" in charon.log_tail(200)


def test_charon_eap_mschapv2_wrong_password(tmp_path: Path) -> None:
    with Lab("rwf") as lab:
        gateway, charon, _carol = _eap_lab(lab, tmp_path, "not-the-password")
        with pytest.raises(Exception):  # noqa: B017 - swanctl --initiate fails, any way
            charon.initiate("home", "home")
        deadline = time.monotonic() + 5
        log = ""
        while "wrong MS-CHAPv2 password" not in log and time.monotonic() < deadline:
            time.sleep(0.1)
            log = (tmp_path / "moon" / "daemon.log").read_text()
        failures = [
            json.loads(line)
            for line in log.splitlines()
            if line.startswith("{") and '"authentication failed"' in line
        ]
        assert failures and "wrong MS-CHAPv2 password for 'carol'" in failures[0]["reason"]
        established = [e for e in gateway.call("sas") for ike in e.values()
                       if ike.get("state") == "ESTABLISHED"]  # fmt: skip
        assert not established
        assert _pools(gateway).splitlines()[1:] == []  # no lease taken


class LoggingDnsPeer(AioipsecPeer):
    """Our daemon with dns_hook = log: a test never touches the machine's resolver."""

    def daemon_table(self) -> str:
        return super().daemon_table() + 'dns_hook = "log"\n'


def test_our_client_against_a_charon_gateway_with_pools(tmp_path: Path) -> None:
    with Lab("rwc") as lab:
        moon, lan, carol = lab.namespace("moon"), lab.namespace("lan"), lab.namespace("carol")
        lab.veth(moon, "10.200.1.1/24", carol, "10.200.1.2/24")
        lab.veth(moon, "10.2.0.1/24", lan, f"{LAN_HOST}/24")
        moon.enable_forwarding()
        lan.ip("route", "add", "10.3.0.0/28", "via", "10.2.0.1")
        charon = Charon(lab, moon, tmp_path / "moon")
        charon.start()
        charon.load(GATEWAY_CONF % {"psk": PSK})
        client = LoggingDnsPeer(lab, carol, tmp_path / "carol")
        client.load(
            CLIENT_CONF % {"gateway": "10.200.1.1", "identity": "carol@example", "psk": PSK}
        )
        client.initiate("home", "home")
        # the VIP charon's pool gave us is on our TUN device, the route uses it as source
        addresses = carol.sh("ip -4 -o addr show dev ipsec0")
        assert "inet 10.3.0.1/32" in addresses, addresses
        route = carol.sh("ip route show table 220")
        assert "10.2.0.0/24 dev ipsec0" in route and "src 10.3.0.1" in route, route
        output = carol.sh(f"ping -n -c 3 -W 2 {LAN_HOST}", timeout=20)
        assert " 0% packet loss" in output, output
        (ike,) = charon.list_sas().values()
        assert [str(ts) for child in ike["child-sas"].values() for ts in child["remote-ts"]] == [
            "10.3.0.1/32"
        ]
        log = (tmp_path / "carol" / "daemon.log").read_text()
        assigned = [
            json.loads(line)
            for line in log.splitlines()
            if line.startswith("{") and '"virtual IP assigned"' in line
        ]
        assert assigned and assigned[0]["addresses"] == ["10.3.0.1"]
        assert assigned[0]["dns"] == ["10.2.0.53"]
        assert "DNS from the gateway (not applied" in log
        # down: the VIP leaves the TUN device
        client.terminate("home")
        deadline = time.monotonic() + 10
        while "10.3.0.1" in carol.sh("ip -4 -o addr show dev ipsec0"):
            assert time.monotonic() < deadline, "the VIP stayed on the TUN device"
            time.sleep(0.2)


def test_charon_eap_tls_road_warrior(tmp_path: Path) -> None:
    from aioipsec.interop.pki import Pki

    with Lab("rwt") as lab:
        moon, lan, carol = lab.namespace("moon"), lab.namespace("lan"), lab.namespace("carol")
        lab.veth(moon, "10.200.1.1/24", carol, "10.200.1.2/24")
        lab.veth(moon, "10.2.0.1/24", lan, f"{LAN_HOST}/24")
        moon.enable_forwarding()
        lan.ip("route", "add", "10.3.0.0/28", "via", "10.2.0.1")
        pki = Pki(tmp_path / "pki")
        gateway = AioipsecPeer(lab, moon, tmp_path / "moon")
        cert = pki.install("moon.example", gateway.workdir)
        gateway.load(EAP_GATEWAY_CONF % {"cert": cert, "auth": "eap-tls", "password": "unused"})
        charon = Charon(lab, carol, tmp_path / "carol", plugins=DEFAULT_CHARON_PLUGINS +
                        " eap-identity eap-tls")  # fmt: skip
        carol_cert = pki.install("carol@example", charon.workdir)
        client_conf = (
            EAP_CLIENT_CONF.replace("eap_id = carol", "eap_id = carol@example").replace(
                "id = carol@example\n", f"id = carol@example\n         certs = {carol_cert}\n", 1
            )
        ) % {"auth": "eap-tls", "password": "unused"}
        charon.start()
        charon.load(client_conf)
        charon.initiate("home", "home")
        assert _vip(charon) == "10.3.0.1"
        output = _ping(carol, "10.3.0.1")
        assert " 0% packet loss" in output, output
        assert "EAP method EAP_TLS succeeded, MSK established" in charon.log_tail(300)
        assert "online   'carol@example'" in _pools(gateway)
