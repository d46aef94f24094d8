"""remote auth = eap-radius end to end: strongSwan's charon as road warrior (EAP-MSCHAPv2),
our gateway relaying EAP to a real FreeRADIUS, in network namespaces.

One lab serves every check (FreeRADIUS, the daemon and charon start once):
carol authenticates (MSK from MS-MPPE-Recv/Send-Key keys both AUTH payloads, a VIP leased,
ping through the tunnel), erin's wrong password is refused by the RADIUS server, and dave,
whose Class is not in the connection's groups, is refused by our gateway; frank's client
does EAP-MD5 only, so the server switches methods on its Nak and no MSK results (the AUTH
payloads are keyed with SK_pi/SK_pr). The connection's pools are ``radius, rw_pool``:
grace's Access-Accept carries a Framed-IP-Address and an MS-Primary-DNS-Server, which she
gets; carol's carries none, so she gets an address of rw_pool.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from aioipsec.interop.charon import Charon
from aioipsec.interop.pki import Pki
from aioipsec.interop.road_warrior import (
    EAP_PLUGINS,
    LoggingDnsPeer,
    RwLab,
    build,
    charon_vip,
    eap_gateway,
    log_entries,
    ping_lan,
    wait_until,
)
from aioipsec.netns import Lab
from tests.radius.freeradius import start_freeradius

pytestmark = [
    pytest.mark.interop,
    pytest.mark.needs("root", "charon", "swanctl", "pki", "freeradius", "pyrad"),
]

SECRET = "radius-shared-secret-0123456789"
PASSWORD = "Ar3etTnp-radius"
USERS = {
    "carol": (PASSWORD, "Research"),
    "dave": (PASSWORD, "Accounting"),
    "erin": (PASSWORD, "Research"),
    "frank": (PASSWORD, "Research"),
    "grace": (PASSWORD, "Research"),
}
FRAMED_IP = "10.3.0.14"  # routed to the gateway by the LAN (10.3.0.0/28), unused by carol
REPLIES = {"grace": [f"Framed-IP-Address := {FRAMED_IP}", "MS-Primary-DNS-Server := 10.2.0.99"]}

LINE = "\n         "  # the next setting of a local/remote section

CLIENT_CONNECTION = """\
   home-%(name)s {
      remote_addrs = 10.200.1.1
      vips = 0.0.0.0
      local {
         auth = %(auth)s
         id = %(name)s@example
         eap_id = %(name)s
      }
      remote {
         auth = pubkey
         id = moon.example
      }
      children {
         home-%(name)s {
            remote_ts = 10.2.0.0/24
            esp_proposals = aes256gcm16
         }
      }
   }
"""

# frank's client does EAP-MD5 only: it Naks the server's MS-CHAPv2, the server then runs
# MD5 (the Nak goes through the gateway like any Response), and no MSK results.
AUTH = {"frank": "eap-md5"}

CLIENT_SECRET = """\
   eap-%(name)s {
      id = %(name)s
      secret = "%(password)s"
   }
"""


class RadiusGateway(LoggingDnsPeer):
    """Our daemon with a [radius] table (the secret in a 0600 file)."""

    def daemon_table(self) -> str:
        secret_file = self.workdir / "radius.secret"
        secret_file.write_text(SECRET + "\n")
        secret_file.chmod(0o600)
        return super().daemon_table() + (
            f'\n[radius]\nservers = ["127.0.0.1"]\nsecret_file = "{secret_file}"\n'
            'timeout = "2s"\ntries = 3\n'
        )


@dataclass
class RadiusLab:
    lab: Lab
    net: RwLab
    gateway: RadiusGateway
    charon: Charon
    workdir: Path
    radius_seconds: float

    def refusals(self) -> list[str]:
        entries = log_entries(self.gateway.log_path, "authentication failed")
        return [entry["reason"] for entry in entries]


@pytest.fixture(scope="module")
def radius_lab() -> Iterator[RadiusLab]:
    workdir = Path(tempfile.mkdtemp(prefix="aioipsec-radius-", dir="/tmp"))
    passed = False
    try:
        with Lab("rad") as lab:
            net = build(lab)
            _, seconds = start_freeradius(
                lab, net.moon, workdir / "raddb", SECRET, USERS, replies=REPLIES
            )
            pki = Pki(workdir / "pki")
            gateway = RadiusGateway(lab, net.moon, workdir / "moon")
            cert = pki.install("moon.example", gateway.workdir)
            conf = eap_gateway(f"pubkey{LINE}certs = {cert}", f"eap-radius{LINE}groups = Research")
            gateway.load(conf.replace("pools = rw_pool", "pools = radius, rw_pool"))
            charon = Charon(
                lab, net.clients["carol"], workdir / "carol", plugins=EAP_PLUGINS + " eap-md5"
            )
            pki.install("carol@example", charon.workdir)  # the CA in x509ca/
            charon.start()
            passwords = {
                "carol": PASSWORD,
                "dave": PASSWORD,
                "erin": "not-the-password",
                "frank": PASSWORD,
                "grace": PASSWORD,
            }
            charon.load(
                "connections {\n"
                + "".join(
                    CLIENT_CONNECTION % {"name": name, "auth": AUTH.get(name, "eap-mschapv2")}
                    for name in passwords
                )
                + "}\nsecrets {\n"
                + "".join(
                    CLIENT_SECRET % {"name": name, "password": password}
                    for name, password in passwords.items()
                )
                + "}\n"
            )
            yield RadiusLab(lab, net, gateway, charon, workdir, seconds)
            passed = True
    finally:
        if passed:
            shutil.rmtree(workdir, ignore_errors=True)


def _refused(lab: RadiusLab, name: str) -> str:
    """charon initiates NAME's connection, which must fail; the gateway's logged reason."""
    try:
        lab.charon.initiate(f"home-{name}", f"home-{name}")
    except Exception:  # swanctl --initiate fails, whichever way it says so
        pass
    else:
        raise AssertionError(f"charon established home-{name}, which must be refused")
    mine = f"'{name}'"
    wait_until(lambda: any(mine in r for r in lab.refusals()), f"{name}'s refusal logged")
    assert f"home-{name}" not in lab.charon.list_sas()
    (reason,) = [r for r in lab.refusals() if mine in r]
    return reason


@pytest.mark.timeout(120)
def test_member_authenticates_through_freeradius(radius_lab: RadiusLab) -> None:
    lab = radius_lab
    started = time.monotonic()
    lab.charon.initiate("home-carol", "home-carol")
    assert time.monotonic() - started < 60
    log = lab.charon.log_text()
    assert "EAP method EAP_MSCHAPV2 succeeded, MSK established" in log, "charon: no MSK"
    # charon checked our AUTH, keyed with the MSK FreeRADIUS sent us in MS-MPPE-*-Key
    assert "authentication of 'moon.example' with EAP successful" in log, log[-3000:]
    (ike,) = [v for k, v in lab.charon.list_sas().items() if k == "home-carol"]
    assert ike["state"] == "ESTABLISHED"
    assert charon_vip(lab.charon) == "10.3.0.1"
    accepted = log_entries(lab.gateway.log_path, "RADIUS Access-Accept")
    assert accepted and accepted[0]["identity"] == "carol"
    assert accepted[0]["groups"] == ["Research"]
    wait_until(
        lambda: log_entries(lab.gateway.log_path, "virtual IP leased"),
        f"no lease logged:\n{lab.gateway.log_tail(60)}",
    )
    leased = log_entries(lab.gateway.log_path, "virtual IP leased")
    assert [entry["identity"] for entry in leased] == ["carol"]
    ping_lan(lab.net.clients["carol"], "10.3.0.1")
    lab.charon.terminate("home-carol")


@pytest.mark.timeout(120)
def test_wrong_password_is_refused_by_the_radius_server(radius_lab: RadiusLab) -> None:
    reason = _refused(radius_lab, "erin")
    assert "RADIUS server 127.0.0.1:1812 rejected 'erin'" in reason, reason


@pytest.mark.timeout(120)
def test_group_mismatch_is_refused_by_the_gateway(radius_lab: RadiusLab) -> None:
    reason = _refused(radius_lab, "dave")
    assert "groups [Accounting]" in reason and "admits only [Research]" in reason, reason
    leased = log_entries(radius_lab.gateway.log_path, "virtual IP leased")
    assert "dave" not in [entry["identity"] for entry in leased]
    print(f"FreeRADIUS ready after {radius_lab.radius_seconds:.2f} s")


@pytest.mark.timeout(120)
def test_eap_md5_through_freeradius_without_an_msk(radius_lab: RadiusLab) -> None:
    lab = radius_lab
    lab.charon.initiate("home-frank", "home-frank")
    log = lab.charon.log_text()
    assert "EAP method EAP_MD5 succeeded, no MSK established" in log, log[-3000:]
    assert lab.charon.list_sas()["home-frank"]["state"] == "ESTABLISHED"
    lab.charon.terminate("home-frank")


@pytest.mark.timeout(120)
def test_pools_radius_gives_the_access_accept_address(radius_lab: RadiusLab) -> None:
    lab = radius_lab
    lab.charon.initiate("home-grace", "home-grace")
    assert charon_vip(lab.charon) == FRAMED_IP
    accepted = [e for e in log_entries(lab.gateway.log_path, "RADIUS Access-Accept")
                if e["identity"] == "grace"]  # fmt: skip
    assert accepted[-1]["framed"] == [FRAMED_IP] and accepted[-1]["dns"] == ["10.2.0.99"]
    wait_until(
        lambda: log_entries(
            lab.gateway.log_path, f"pools: assigned {FRAMED_IP} from pool radius to grace"
        ),
        f"no radius lease logged:\n{lab.gateway.log_tail(60)}",
    )
    # The CFG_REPLY carried the Access-Accept's DNS server (MS-Primary-DNS-Server)
    (leased,) = [e for e in log_entries(lab.gateway.log_path, "virtual IP leased")
                 if e["identity"] == "grace"]  # fmt: skip
    assert leased["addresses"] == [FRAMED_IP] and leased["dns"] == ["10.2.0.99"], leased
    ping_lan(lab.net.clients["carol"], FRAMED_IP)
    lab.charon.terminate("home-grace")
    # Released under the IKE identity grace@example although leased to the EAP identity
    wait_until(
        lambda: log_entries(
            lab.gateway.log_path, f"pools: lease {FRAMED_IP} of grace from pool radius released"
        ),
        f"radius lease not released:\n{lab.gateway.log_tail(40)}",
    )
