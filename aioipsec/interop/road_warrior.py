"""Remote access against strongSwan (issue 14): scripted rows of the interop matrix.

Topology (one namespace each; the gateway leases from ``10.3.0.0/28``)::

    carol (client) --veth-- moon (gateway) --veth-- lan (10.2.0.10)
    dave  (client) --veth--/

The LAN host routes the pool back through the gateway, which forwards between its TUN
device and the LAN. Rows with charon as the road warrior against our gateway check the
lease (two clients get different addresses; a reconnect gets the same one back), the Child
SA narrowed to it, ``aioipsec pools`` and traffic from the VIP to the LAN host; rows with our
client against a charon gateway check the VIP on our TUN device, the route that uses it
and traffic to the LAN host. TCP rows send 4 MiB from the VIP to the LAN host and compare
SHA-256 at both ends (:func:`aioipsec.interop.traffic.tcp_transfer`).

EAP-only rows (RFC 5998): the gateway's own round is ``auth = eap-tls`` (no certificate
AUTH), as strongSwan configures it; charon 5.9.8 does it in both roles (its client always
announces EAP_ONLY_AUTHENTICATION and logs "allow mutual EAP-only authentication", for
EAP-TLS but not EAP-MSCHAPv2; its gateway omits AUTH whenever its local round is EAP, with
any method, which our client refuses for EAP-MSCHAPv2).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aioipsec.interop.charon import DEFAULT_CHARON_PLUGINS, Charon
from aioipsec.interop.ours import REPO, AioipsecPeer
from aioipsec.interop.pki import Pki
from aioipsec.interop.scenario import ScenarioRun
from aioipsec.interop.scripted import ScriptedRow, record_sa
from aioipsec.interop.traffic import tcp_transfer
from aioipsec.netns import Lab, Namespace

PSK = "road-warrior-interop-psk-0123456789"
EAP_PASSWORD = "Ar3etTnp-interop"
LAN_HOST = "10.2.0.10"
GATEWAY = "10.200.1.1"
OUTER = {"carol": ("10.200.1.1", "10.200.1.2"), "dave": ("10.200.2.1", "10.200.2.2")}
EAP_PLUGINS = DEFAULT_CHARON_PLUGINS + " eap-identity eap-mschapv2 md4 des"
EAP_TLS_PLUGINS = DEFAULT_CHARON_PLUGINS + " eap-identity eap-tls"

# swanctl.conf as strongSwan writes it; the same text configures charon and our daemon.
GATEWAY_CONF = """\
connections {
   %(name)s {
      pools = rw_pool
      local {
         auth = %(local_auth)s
         id = moon.example
      }
      remote {
         auth = %(remote_auth)s
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
   %(secret)s
}
"""

CLIENT_CONF = """\
connections {
   home {
      remote_addrs = %(gateway)s
      vips = 0.0.0.0
      local {
         auth = %(local_auth)s
         id = %(identity)s
      }
      remote {
         auth = %(remote_auth)s
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
   %(secret)s
}
"""
_LINE = "\n         "  # the next setting of a local/remote section (one per line)


def _eap_secret(password: str) -> str:
    return f'eap-carol {{\n      id = carol\n      secret = "{password}"\n   }}'


def psk_gateway() -> str:
    secret = f'ike-rw {{\n      secret = "{PSK}"\n   }}'
    return GATEWAY_CONF % {"name": "rw", "local_auth": "psk", "remote_auth": "psk",
                           "secret": secret}  # fmt: skip


def eap_gateway(local_auth: str, auth: str, password: str = EAP_PASSWORD) -> str:
    """LOCAL_AUTH: "pubkey" plus its certs line (a certificate), or an EAP method (EAP-only)."""
    return GATEWAY_CONF % {"name": "rw-eap", "local_auth": local_auth,
                           "remote_auth": f"{auth}{_LINE}eap_id = %any",
                           "secret": _eap_secret(password)}  # fmt: skip


def psk_client(gateway: str, identity: str) -> str:
    secret = (f"ike-home {{\n      id-1 = {identity}\n      id-2 = moon.example\n"
              f'      secret = "{PSK}"\n   }}')  # fmt: skip
    return CLIENT_CONF % {"gateway": gateway, "local_auth": "psk", "identity": identity,
                          "remote_auth": "psk", "secret": secret}  # fmt: skip


def eap_client(auth: str, cert: str, password: str, remote_auth: str = "pubkey") -> str:
    """carol@example with EAP (EAP identity carol; with EAP-TLS her certificate CERT)."""
    tls = auth == "eap-tls"
    identity = f"carol@example{_LINE}certs = {cert}" if tls else "carol@example"
    eap_id = "carol@example" if tls else "carol"
    return CLIENT_CONF % {"gateway": GATEWAY, "local_auth": auth,
                          "identity": f"{identity}{_LINE}eap_id = {eap_id}",
                          "remote_auth": remote_auth, "secret": _eap_secret(password)}  # fmt: skip


class LoggingDnsPeer(AioipsecPeer):
    """Our daemon with dns_hook = log: a row never touches the machine's resolver."""

    def daemon_table(self) -> str:
        return super().daemon_table() + 'dns_hook = "log"\n'


@dataclass
class RwLab:
    moon: Namespace
    lan: Namespace
    clients: dict[str, Namespace]


def build(lab: Lab, clients: tuple[str, ...] = ("carol",)) -> RwLab:
    moon, lan = lab.namespace("moon"), lab.namespace("lan")
    spaces = {name: lab.namespace(name) for name in clients}
    for name, namespace in spaces.items():
        gw_side, client_side = OUTER[name]
        lab.veth(moon, f"{gw_side}/24", namespace, f"{client_side}/24")
    lab.veth(moon, "10.2.0.1/24", lan, f"{LAN_HOST}/24")
    moon.enable_forwarding()
    lan.ip("route", "add", "10.3.0.0/28", "via", "10.2.0.1")
    return RwLab(moon, lan, spaces)


def pools(gateway: AioipsecPeer) -> str:
    """``aioipsec pools`` of our gateway, as a user runs it."""
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


def charon_vip(charon: Charon) -> str:
    (ike,) = charon.list_sas().values()
    return str(ike["local-vips"][0])


def ping_lan(namespace: Namespace, source: str | None = None) -> str:
    """Three pings to the LAN host (from SOURCE); raises unless all came back."""
    option = f"-I {source} " if source else ""
    output = namespace.sh(f"ping -n -c 3 -W 2 {option}{LAN_HOST}", timeout=20, check=False)
    assert " 0% packet loss" in output, f"ping to the LAN host: {output}"
    return "ping 3/3"


def log_entries(path: Path, message: str) -> list[dict[str, Any]]:
    """Our daemon's JSON log lines with this message."""
    text = path.read_text()
    return [
        json.loads(line)
        for line in text.splitlines()
        if line.startswith("{") and f'"{message}"' in line
    ]


def wait_until(check: Any, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


# --- charon road warriors against our gateway --------------------------------------------


def charon_psk_pool(lab: Lab, workdir: Path, run: ScenarioRun) -> None:
    """Two charon clients (PSK), different leases, narrowing, ping and TCP from the VIPs,
    ``aioipsec pools``, and a reconnect that gets the same address back."""
    net = build(lab, ("carol", "dave"))
    gateway = AioipsecPeer(lab, net.moon, workdir / "moon")
    gateway.load(psk_gateway())
    charons = {}
    for name, namespace in net.clients.items():
        charon = Charon(lab, namespace, workdir / name)
        charon.start()
        charon.load(psk_client(OUTER[name][0], f"{name}@example"))
        charons[name] = charon
    started = time.monotonic()
    charons["carol"].initiate("home", "home")
    run.establish_seconds = time.monotonic() - started
    charons["dave"].initiate("home", "home")
    record_sa(run, charons["carol"].list_sas(), "home")
    vips = {name: charon_vip(charon) for name, charon in charons.items()}
    assert vips == {"carol": "10.3.0.1", "dave": "10.3.0.2"}, vips
    remote_ts = sorted(
        ts
        for entry in gateway.call("sas")
        for ike in entry.values()
        for child in ike["child-sas"].values()
        for ts in child["remote-ts"]
    )
    assert remote_ts == ["10.3.0.1", "10.3.0.2"], f"gateway's Child SAs: {remote_ts}"
    for name, namespace in net.clients.items():
        ping_lan(namespace, vips[name])
    lines = pools(gateway).splitlines()
    assert lines[0].split()[:2] == ["rw_pool", "10.3.0.0"] and lines[0].endswith("2 / 0 / 14")
    assert "online   'carol@example'" in lines[1] and "10.3.0.1" in lines[1], lines
    assert "online   'dave@example'" in lines[2] and "10.3.0.2" in lines[2], lines
    tcp = tcp_transfer(lab, net.clients["carol"], net.lan, LAN_HOST, workdir, source=vips["carol"])
    # carol disconnects: her lease goes offline, and she gets it back
    charons["carol"].swanctl("--terminate", "--ike", "home", "--timeout", "10", timeout=15)
    wait_until(lambda: "offline  'carol@example'" in pools(gateway), "carol's lease offline")
    charons["carol"].initiate("home", "home")
    assert charon_vip(charons["carol"]) == "10.3.0.1", "carol got another address back"
    ping_lan(net.clients["carol"], "10.3.0.1")
    leased = log_entries(workdir / "moon" / "daemon.log", "virtual IP leased")
    identities = [entry["identity"] for entry in leased]
    assert identities == ["carol@example", "dave@example", "carol@example"], identities
    run.details += [
        "leases 10.3.0.1, 10.3.0.2 to two clients, Child SAs narrowed to them",
        "ping 3/3 from each VIP to a LAN host",
        tcp,
        "reconnect: 10.3.0.1 again",
    ]


def _our_eap_gateway(
    lab: Lab, net: RwLab, workdir: Path, pki: Pki, auth: str, *, eap_only: bool = False
) -> AioipsecPeer:
    gateway = AioipsecPeer(lab, net.moon, workdir / "moon")
    cert = pki.install("moon.example", gateway.workdir)
    local_auth = auth if eap_only else f"pubkey{_LINE}certs = {cert}"
    if eap_only and auth == "eap-tls":
        local_auth = f"eap-tls{_LINE}certs = {cert}"
    gateway.load(eap_gateway(local_auth, auth))
    return gateway


def _charon_eap_client(
    lab: Lab,
    net: RwLab,
    workdir: Path,
    pki: Pki,
    auth: str,
    password: str,
    remote_auth: str = "pubkey",
) -> Charon:
    plugins = EAP_TLS_PLUGINS if auth == "eap-tls" else EAP_PLUGINS
    charon = Charon(lab, net.clients["carol"], workdir / "carol", plugins=plugins)
    cert = pki.install("carol@example", charon.workdir)  # and the CA in x509ca/
    charon.start()
    charon.load(eap_client(auth, cert, password, remote_auth))
    return charon


def _charon_eap_row(
    lab: Lab, workdir: Path, run: ScenarioRun, auth: str, *, eap_only: bool = False
) -> None:
    net, pki = build(lab), Pki(workdir / "pki")
    gateway = _our_eap_gateway(lab, net, workdir, pki, auth, eap_only=eap_only)
    charon = _charon_eap_client(
        lab, net, workdir, pki, auth, EAP_PASSWORD, remote_auth=auth if eap_only else "pubkey"
    )
    started = time.monotonic()
    charon.initiate("home", "home")
    run.establish_seconds = time.monotonic() - started
    record_sa(run, charon.list_sas(), "home")
    assert charon_vip(charon) == "10.3.0.1"
    ping_lan(net.clients["carol"], "10.3.0.1")
    method = "EAP_TLS" if auth == "eap-tls" else "EAP_MSCHAPV2"
    log = charon.log_text()
    assert f"EAP method {method} succeeded, MSK established" in log, "charon: no MSK"
    identity = "carol@example" if auth == "eap-tls" else "carol"
    # the lease belongs to the EAP identity, as strongSwan's would
    assert f"online   '{identity}'" in pools(gateway), pools(gateway)
    run.details += [
        f"charon: {method} succeeded, MSK established",
        f"lease 10.3.0.1 for '{identity}'",
        "ping 3/3 from the VIP to a LAN host",
    ]
    if eap_only:
        first = _first_auth_response(log, "parsed")
        assert " AUTH " not in first and " CERT " not in first, f"not EAP-only: {first}"
        assert "allow mutual EAP-only authentication" in log, "charon did not do EAP-only"
        run.details.append("charon: allow mutual EAP-only authentication (no gateway AUTH)")


def charon_eap_mschapv2(lab: Lab, workdir: Path, run: ScenarioRun) -> None:
    _charon_eap_row(lab, workdir, run, "eap-mschapv2")


def charon_eap_tls(lab: Lab, workdir: Path, run: ScenarioRun) -> None:
    _charon_eap_row(lab, workdir, run, "eap-tls")


def charon_eap_only(lab: Lab, workdir: Path, run: ScenarioRun) -> None:
    _charon_eap_row(lab, workdir, run, "eap-tls", eap_only=True)


def charon_eap_wrong_password(lab: Lab, workdir: Path, run: ScenarioRun) -> None:
    net = build(lab)
    pki = Pki(workdir / "pki")
    gateway = _our_eap_gateway(lab, net, workdir, pki, "eap-mschapv2")
    charon = _charon_eap_client(lab, net, workdir, pki, "eap-mschapv2", "not-the-password")
    try:
        charon.initiate("home", "home")
    except Exception:  # swanctl --initiate fails, whichever way it says so
        pass
    else:
        raise AssertionError("charon established with a wrong password")
    log_path = workdir / "moon" / "daemon.log"
    wait_until(lambda: "wrong MS-CHAPv2 password" in log_path.read_text(), "no refusal logged")
    failures = log_entries(log_path, "authentication failed")
    assert failures and "wrong MS-CHAPv2 password for 'carol'" in failures[0]["reason"], failures
    established = [
        ike
        for entry in gateway.call("sas")
        for ike in entry.values()
        if ike.get("state") == "ESTABLISHED"
    ]
    assert not established, established
    assert pools(gateway).splitlines()[1:] == [], "a lease was taken"
    assert "EAP_MSCHAPV2 method failed" in charon.log_text(), "charon did not see the failure"
    run.details.append("gateway log: wrong MS-CHAPv2 password for 'carol'; no IKE SA, no lease")


# --- our client against charon gateways ----------------------------------------------------


def _check_our_vip(net: RwLab, client: AioipsecPeer, charon: Charon, workdir: Path) -> list[str]:
    carol = net.clients["carol"]
    addresses = carol.sh("ip -4 -o addr show dev ipsec0")
    assert "inet 10.3.0.1/32" in addresses, f"our TUN device: {addresses}"
    route = carol.sh("ip route show table 220")
    assert "10.2.0.0/24 dev ipsec0" in route and "src 10.3.0.1" in route, route
    ping_lan(carol)
    (ike,) = charon.list_sas().values()
    remote_ts = [str(ts) for child in ike["child-sas"].values() for ts in child["remote-ts"]]
    assert remote_ts == ["10.3.0.1/32"], f"charon's Child SA: {remote_ts}"
    assigned = log_entries(workdir / "carol" / "daemon.log", "virtual IP assigned")
    assert assigned and assigned[0]["addresses"] == ["10.3.0.1"], assigned
    assert assigned[0]["dns"] == ["10.2.0.53"], assigned
    return [
        "VIP 10.3.0.1 from charon's pool on our TUN device (table-220 route src)",
        "DNS 10.2.0.53 from the CFG_REPLY",
        "ping 3/3 to a LAN host",
    ]


def _down(net: RwLab, client: AioipsecPeer) -> str:
    client.terminate("home")
    wait_until(
        lambda: "10.3.0.1" not in net.clients["carol"].sh("ip -4 -o addr show dev ipsec0"),
        "the VIP stayed on the TUN device",
    )
    return "VIP removed on terminate"


def ours_psk_charon_gateway(lab: Lab, workdir: Path, run: ScenarioRun) -> None:
    net = build(lab)
    charon = Charon(lab, net.moon, workdir / "moon")
    charon.start()
    charon.load(psk_gateway())
    client = LoggingDnsPeer(lab, net.clients["carol"], workdir / "carol")
    client.load(psk_client(GATEWAY, "carol@example"))
    started = time.monotonic()
    client.initiate("home", "home")
    run.establish_seconds = time.monotonic() - started
    record_sa(run, client.list_sas(), "home")
    run.details += _check_our_vip(net, client, charon, workdir)
    run.details.append(_down(net, client))


def _first_auth_response(log: str, verb: str) -> str:
    """charon's log line of the first IKE_AUTH response it generated or parsed."""
    lines = [line for line in log.splitlines() if f"{verb} IKE_AUTH response 1 [" in line]
    assert lines, f"charon logged no IKE_AUTH response 1 ({verb})"
    return lines[0]


def _ours_against_charon_eap(
    lab: Lab, workdir: Path, auth: str, *, eap_only: bool = False
) -> tuple[RwLab, Charon, AioipsecPeer]:
    """A charon gateway (certificate, or EAP-only: its local round is AUTH) with a pool, and
    our client configured for AUTH, loaded and not yet initiated."""
    net = build(lab)
    tls = auth == "eap-tls"
    charon = Charon(
        lab, net.moon, workdir / "moon", plugins=EAP_TLS_PLUGINS if tls else EAP_PLUGINS
    )
    pki = Pki(workdir / "pki")
    cert = pki.install("moon.example", charon.workdir)
    local_auth = f"pubkey{_LINE}certs = {cert}"
    if eap_only:
        local_auth = f"{auth}{_LINE}certs = {cert}" if tls else auth
    charon.start()
    charon.load(eap_gateway(local_auth, auth))
    client = LoggingDnsPeer(lab, net.clients["carol"], workdir / "carol")
    client_cert = pki.install("carol@example", client.workdir)  # and the CA in x509ca/
    client.load(eap_client(auth, client_cert, EAP_PASSWORD, auth if eap_only else "pubkey"))
    return net, charon, client


def _ours_eap_row(
    lab: Lab, workdir: Path, run: ScenarioRun, auth: str, *, eap_only: bool = False
) -> None:
    net, charon, client = _ours_against_charon_eap(lab, workdir, auth, eap_only=eap_only)
    started = time.monotonic()
    client.initiate("home", "home")
    run.establish_seconds = time.monotonic() - started
    record_sa(run, client.list_sas(), "home")
    run.details += _check_our_vip(net, client, charon, workdir)
    method = "EAP_TLS" if auth == "eap-tls" else "EAP_MSCHAPV2"
    log = charon.log_text()
    assert f"EAP method {method} succeeded, MSK established" in log, "charon: no MSK"
    run.details.append(f"charon: {method} succeeded, MSK established")
    if eap_only:
        first = _first_auth_response(log, "generating")
        assert " AUTH " not in first and " CERT " not in first, f"not EAP-only: {first}"
        run.details.append("charon's first IKE_AUTH response: IDr and EAP, no AUTH (EAP-only)")
    run.details.append(tcp_transfer(lab, net.clients["carol"], net.lan, LAN_HOST, workdir))
    run.details.append(_down(net, client))


def ours_eap_mschapv2_charon_gateway(lab: Lab, workdir: Path, run: ScenarioRun) -> None:
    _ours_eap_row(lab, workdir, run, "eap-mschapv2")


def ours_eap_tls_charon_gateway(lab: Lab, workdir: Path, run: ScenarioRun) -> None:
    _ours_eap_row(lab, workdir, run, "eap-tls")


def ours_eap_only_charon_gateway(lab: Lab, workdir: Path, run: ScenarioRun) -> None:
    _ours_eap_row(lab, workdir, run, "eap-tls", eap_only=True)


def ours_refuse_eap_only_mschapv2(lab: Lab, workdir: Path, run: ScenarioRun) -> None:
    """charon's gateway does EAP-only with EAP-MSCHAPv2 (it checks no method as server); our
    client runs the method, then refuses the gateway (RFC 5998 sec. 4: not a safe method),
    as charon's own client does."""
    net, charon, client = _ours_against_charon_eap(lab, workdir, "eap-mschapv2", eap_only=True)
    try:
        client.initiate("home", "home")
    except Exception:  # the control socket reports the failed initiation
        pass
    log_path = workdir / "carol" / "daemon.log"
    wait_until(lambda: "key-generating EAP method" in log_path.read_text(), "no refusal logged")
    failures = log_entries(log_path, "authentication failed")
    assert failures and "MSCHAPV2 is not" in failures[0]["reason"], failures
    first = _first_auth_response(charon.log_text(), "generating")
    assert " AUTH " not in first, f"charon was not EAP-only: {first}"
    wait_until(lambda: not client.list_sas(), "our client kept an IKE SA")
    assert "10.3.0.1" not in net.clients["carol"].sh("ip -4 -o addr show dev ipsec0", check=False)
    run.details.append(
        "charon gateway EAP-only with EAP-MSCHAPv2: our client refuses it after the method "
        "(not mutual and dictionary-safe), no IKE SA, no VIP"
    )


ROWS = (
    ScriptedRow("charon-rw-psk-pool", "charon", "aioipsec", charon_psk_pool),
    ScriptedRow("charon-rw-eap-mschapv2", "charon", "aioipsec", charon_eap_mschapv2),
    ScriptedRow(
        "charon-rw-eap-mschapv2-wrong-password",
        "charon",
        "aioipsec",
        charon_eap_wrong_password,
        expect_failure="AUTHENTICATION_FAILED",
    ),
    ScriptedRow("charon-rw-eap-tls", "charon", "aioipsec", charon_eap_tls),
    ScriptedRow("charon-rw-eap-only-tls", "charon", "aioipsec", charon_eap_only),
    ScriptedRow("ours-rw-psk-charon-gateway", "aioipsec", "charon", ours_psk_charon_gateway),
    ScriptedRow(
        "ours-rw-eap-mschapv2-charon-gateway",
        "aioipsec",
        "charon",
        ours_eap_mschapv2_charon_gateway,
    ),
    ScriptedRow(
        "ours-rw-eap-tls-charon-gateway", "aioipsec", "charon", ours_eap_tls_charon_gateway
    ),
    ScriptedRow(
        "ours-rw-eap-only-tls-charon-gateway", "aioipsec", "charon", ours_eap_only_charon_gateway
    ),
    ScriptedRow(
        "ours-rw-eap-only-mschapv2-refused",
        "aioipsec",
        "charon",
        ours_refuse_eap_only_mschapv2,
        expect_failure="AUTHENTICATION_FAILED",
    ),
)
