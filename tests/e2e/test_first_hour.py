"""An administrator's first hour (issue 21), scripted: the CLI driven as a user types it.

1. the demo (``python -m aioipsec.demo``: two aioipsec daemons, a tunnel, a ping);
2. a site-to-site tunnel with strongSwan's charon, our side configured from the README's
   example (addresses, socket and one proposal changed), the daemon started *detached*
   with ``--save-keys`` and ``--log-file``;
3. one deliberate break: ESP ``aes256-sha256`` offered to charon's ``aes256gcm16``.
   ``aioipsec initiate`` must fail (exit 1) with NO_PROPOSAL_CHOSEN, as swanctl does;
   meanwhile ``aioipsec --socket S explain --follow`` (global option first) shows the
   live exchanges and where the session keys are;
4. the fix: edit the file, ``aioipsec reload`` says what changed and what that did to the
   running SA; ``initiate`` then succeeds and a ping crosses the tunnel;
5. ``sas`` shows what ``swanctl --list-sas`` shows (rekeying in, reqid, "N s ago"),
   ``stats`` has units and one key style, ``doctor`` does not FAIL on our own daemon;
6. the capture decoded: ``aioipsec decode --brief`` with the key files, and the tshark
   recipe exactly as docs/troubleshooting.md prints it.

    moon (aioipsec, 10.1.0.1) [192.168.72.1] ==veth== [192.168.72.2] sun (charon, 10.2.0.1)
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aioipsec.interop.charon import Charon

from .helpers import REPO, requirements_or_skip

pytestmark = [
    pytest.mark.netns,
    pytest.mark.interop,
    pytest.mark.timeout(150),
    pytest.mark.needs("charon"),
]

MOON, SUN = "192.168.72.1", "192.168.72.2"
MOON_HOST, SUN_HOST = "10.1.0.1", "10.2.0.1"

CHARON_CONF = """\
connections {
   site {
      local_addrs = %(sun)s
      remote_addrs = %(moon)s
      proposals = aes256gcm16-prfsha256-x25519
      local {
         auth = psk
         id = right.example
      }
      remote {
         auth = psk
         id = left.example
      }
      children {
         net {
            local_ts = 10.2.0.0/24
            remote_ts = 10.1.0.0/24
            esp_proposals = aes256gcm16
         }
      }
   }
}
secrets {
   ike-site {
      id-1 = left.example
      id-2 = right.example
      secret = %(secret)s
   }
}
"""


def readme_configuration() -> str:
    """The README's example configuration, as a user copies it."""
    text = (REPO / "README.md").read_text()
    match = re.search(r"^```toml\n(.*?)^```", text, re.M | re.S)
    assert match, "README.md has no toml example"
    return match.group(1)


def run(argv: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False,
                          cwd=REPO)  # fmt: skip


def troubleshooting_tshark_recipe() -> str:
    """The tshark command of docs/troubleshooting.md (continuation lines joined)."""
    text = (REPO / "docs" / "troubleshooting.md").read_text()
    match = re.search(r"^(WIRESHARK_CONFIG_DIR=\S+ tshark .*?)(?<!\\)\n", text, re.M | re.S)
    assert match, "docs/troubleshooting.md has no tshark recipe"
    return match.group(1).replace("\\\n", " ")


def test_first_hour(lab, workdir):
    requirements_or_skip("tcpdump", "tshark", "ping", "ss")
    started = time.monotonic()

    # 1. The demo, as the README says to run it first.
    demo = run([sys.executable, "-m", "aioipsec.demo"], timeout=120)
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert "the ping crossed the tunnel" in demo.stdout

    # 2. moon (us) and sun (charon).
    moon, sun = lab.namespace("moon"), lab.namespace("sun")
    moon_dev, _ = lab.veth(moon, f"{MOON}/24", sun, f"{SUN}/24")
    moon.add_address("lo", f"{MOON_HOST}/32")
    sun.add_address("lo", f"{SUN_HOST}/32")
    readme = readme_configuration()
    secret = re.search(r'^secret = "([^"]+)"', readme, re.M).group(1)
    charon = Charon(lab, sun, workdir / "charon")
    charon.start()
    charon.load(CHARON_CONF % {"sun": SUN, "moon": MOON, "secret": secret})

    socket_path = str(workdir / "aioipsec.sock")
    config = workdir / "site.toml"
    text = (
        readme.replace("192.168.100.1", MOON).replace("192.168.100.2", SUN)
        .replace("/run/aioipsec.sock", socket_path)
        .replace('start_action = "start"', 'start_action = "none"')
    )  # fmt: skip
    broken = text.replace('esp_proposals = ["aes256gcm16"]', 'esp_proposals = ["aes256-sha256"]')
    assert broken != text
    config.write_text(broken)
    config.chmod(0o600)

    def aioipsec(*args: str, expect: int = 0) -> str:
        result = run(moon.exec_argv([sys.executable, "-m", "aioipsec", *args]))
        assert result.returncode == expect, (
            f"aioipsec {shlex.join(args)}: exit {result.returncode}\n{result.stdout}"
            f"{result.stderr}\n--- log ---\n{log_tail()}"
        )
        return result.stdout + result.stderr

    log_file = workdir / "aioipsec.log"

    def log_tail() -> str:
        return "\n".join(log_file.read_text().splitlines()[-40:]) if log_file.exists() else ""

    assert "configuration OK: 1 connection(s)" in aioipsec("check", "-c", str(config))
    keys = workdir / "keys"
    pcap = workdir / "wire.pcap"
    capture = lab.capture(moon, moon_dev, pcap, "ip")
    out = aioipsec("daemon", "-c", str(config), "--save-keys", str(keys), "--log-file",
                   str(log_file))  # fmt: skip
    pid = int(re.search(r"aioipsec daemon running \(pid (\d+)\)", out).group(1))
    follower = None
    try:
        # 3. The deliberate break, watched live with a global option before the command.
        follower = subprocess.Popen(
            [sys.executable, "-m", "aioipsec", "--socket", socket_path, "explain", "--follow",
             "--count", "4"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
        )  # fmt: skip
        # The first line comes once the daemon has registered the subscription.
        header = follower.stdout.readline()
        assert "explain --follow" in header, header + follower.stdout.read()
        err = aioipsec("initiate", "--child", "net", "--socket", socket_path, expect=1)
        assert "NO_PROPOSAL_CHOSEN" in err, err
        print(f"--- aioipsec initiate (broken) ---\n{err}")
        assert "initiated" not in err
        # read() keeps what readline() buffered (communicate() with a timeout would not);
        # --count 4 ends the stream after IKE_SA_INIT and IKE_AUTH (pytest-timeout bounds it).
        ladder = header + follower.stdout.read()
        follower.wait(timeout=30)
        assert follower.returncode == 0, ladder
        assert f"writes them to {keys}/ikev2_decryption_table, {keys}/esp_sa" in ladder, ladder
        assert "<, r, e" not in ladder and "IKE_AUTH response" in ladder, ladder

        # 4. The fix, reloaded; reload says what changed and what that did to the SA.
        config.write_text(text)
        out = aioipsec("reload", "--socket", socket_path)
        print(f"--- aioipsec reload ---\n{out}")
        assert "1 changed" in out and "changed:   site" in out, out
        assert "site: changed; its 1 IKE SA(s) keep running with the old settings" in out, out
        out = aioipsec("initiate", "--child", "net", "--socket", socket_path)
        assert out.startswith("initiated site/net (IKE SA #"), out
        # A new IKE SA (#2) with the new settings: the one set up with the broken ESP
        # proposal stays until it is terminated, as reload said.
        assert "IKE SA #2" in out, out
        aioipsec("terminate", "--ike-id", "1", "--socket", socket_path)
        ping = moon.run("ping", "-n", "-c", "4", "-i", "0.2", "-W", "2", "-I", MOON_HOST,
                        SUN_HOST, check=False)  # fmt: skip
        assert ping.returncode == 0, ping.stdout + log_tail()

        # 5. Listings as an administrator reads them.
        time.sleep(1.5)  # "N s ago" is sampled once a second
        sas = aioipsec("sas", "--socket", socket_path)
        assert re.search(r"established \d+s ago, rekeying in \d+s", sas), sas
        assert re.search(r"net: #\d+, reqid \d+, INSTALLED, TUNNEL-in-UDP", sas), sas
        assert re.search(r"in  \w{8}, +\d+ bytes, +4 packets, +\d+s ago", sas), sas
        assert re.search(r"out \w{8}, +\d+ bytes, +4 packets, +\d+s ago", sas), sas
        stats = aioipsec("stats", "--socket", socket_path)
        print(f"--- aioipsec sas ---\n{sas}--- aioipsec stats ---\n{stats}")
        assert re.search(r"^daemon: pid \d+, uptime \d+(\.\d+)? s$", stats, re.M), stats
        assert not re.search(r": -$", stats, re.M), stats
        assert "-" not in "".join(re.findall(r"^\s*([\w-]+):", stats, re.M)), stats
        # Every counter printed is in docs/cli.md's legend.
        docs = (REPO / "docs" / "cli.md").read_text().split("### `aioipsec stats", 1)[1]
        docs = docs.split("\n### ", 1)[0]
        for key in re.findall(r"^\s*([a-z]\w*):", stats, re.M):
            if not key.startswith(("udp", "esp_v")):  # socket names
                assert f"`{key}`" in docs or f"`{key.removesuffix('out')}" in docs, key
        # doctor may FAIL on other checks here (no firewall rules...): read its udp lines.
        doctor = run(moon.exec_argv([sys.executable, "-m", "aioipsec", "doctor"])).stdout
        assert re.search(r"^OK +udp-500 +UDP port 500 is held by the aioipsec daemon", doctor,
                         re.M), doctor  # fmt: skip
        assert "systemctl stop strongswan" not in doctor, doctor
    finally:
        if follower is not None and follower.poll() is None:
            follower.kill()
            follower.wait()
        capture.stop()
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            time.sleep(0.1)
    assert not Path(f"/proc/{pid}").exists(), "the daemon did not stop on SIGTERM"

    # 6. The capture, decoded with our tool and with tshark as the docs say.
    brief = aioipsec("decode", str(pcap), "--ikev2-keys", str(keys / "ikev2_decryption_table"),
                     "--esp-keys", str(keys / "esp_sa"), "--brief")  # fmt: skip
    assert "NO_PROPOSAL_CHOSEN" in brief, brief
    assert re.search(r"ICMP.*echo", brief, re.I), brief
    recipe = troubleshooting_tshark_recipe()
    recipe = recipe.replace("/run/aioipsec-keys", str(keys)).replace("/tmp/ipsec.pcap", str(pcap))
    assignment, *argv = shlex.split(recipe)
    variable, _, value = assignment.partition("=")
    decoded = subprocess.run(
        [*argv, "-T", "fields", "-e", "isakmp.exchangetype", "-e", "icmp.type"],
        capture_output=True, text=True, timeout=60, check=True,
        env={**os.environ, variable: value},
    ).stdout  # fmt: skip
    rows = [line.split("\t") for line in decoded.splitlines()]
    assert [r for r in rows if r[0] == "35"], decoded  # IKE_AUTH decrypted
    icmp = [r[1] for r in rows if len(r) > 1 and r[1]]
    assert icmp.count("8") >= 4 and icmp.count("0") >= 4, decoded  # ESP decrypted
    # The whole hour in well under two minutes (a report, not a timing threshold).
    print(f"first hour walkthrough: {time.monotonic() - started:.1f} s")
