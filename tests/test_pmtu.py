"""aioipsec.runtime.pmtu on real sockets in a namespace: DF refuses what exceeds the link
MTU with EMSGSIZE (and tells the socket's owner), an IKE send may still be fragmented; the
send-only twins without DF (copy_df) send from the same port and never receive."""

from __future__ import annotations

import sys

from aioipsec.netns import Lab
from tests.components import require_component

SCRIPT = """
import errno, socket, sys
from aioipsec.runtime.pmtu import dont_fragment, fragments_allowed
from aioipsec.runtime.sockets import DrainingSocket
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
assert dont_fragment(sock)
told = []
drain = DrainingSocket(sock, lambda view, addr: None, "t")
drain.on_too_big = told.append
drain.sendto(b"x" * 1000, ("10.203.0.2", 9))
drain.sendto(b"x" * 2000, ("10.203.0.2", 9))
assert told == ["10.203.0.2"], told
with fragments_allowed(sock):
    sock.sendto(b"x" * 2000, ("10.203.0.2", 9))  # fragmented by IP, no error
try:
    sock.sendto(b"x" * 2000, ("10.203.0.2", 9))
except OSError as exc:
    assert exc.errno == errno.EMSGSIZE  # DF is back
else:
    sys.exit("DF was not restored")
print("ok")
"""


def _run_beside_a_1280_link(script: str) -> None:
    """SCRIPT in namespace a, whose link to b (10.203.0.2) has MTU 1280; it prints "ok"."""
    require_component("root", "ip")
    with Lab("pmtu") as lab:
        a, b = lab.namespace("a"), lab.namespace("b")
        left, _ = lab.veth(a, "10.203.0.1/24", b, "10.203.0.2/24")
        a.ip("link", "set", "dev", left, "mtu", "1280")
        a.ip("link", "set", "dev", "lo", "up")
        result = a.run(sys.executable, "-c", script, check=False)
        assert result.stdout.strip() == "ok", result.stdout + result.stderr


def test_df_emsgsize_and_ike_fragments() -> None:
    _run_beside_a_1280_link(SCRIPT)


TWINS = """
import errno, socket, sys
from aioipsec.runtime.pmtu import dont_fragment
from aioipsec.runtime.sockets import DrainingSocket, RawEspSocket, open_udp_socket
got = []
udp = DrainingSocket(open_udp_socket("10.203.0.1", 4500), lambda v, a: got.append(a), "u")
raw = RawEspSocket(socket.AF_INET, lambda v, a: got.append(a))
for sock in (udp, raw):
    assert dont_fragment(sock.sock)
    assert sock.no_df is sock
    assert sock.open_no_df() is sock.no_df and sock.no_df is not sock
# Another process cannot join the port's group by accident: a plain bind still fails.
try:
    open_udp_socket("10.203.0.1", 4500)
except OSError as exc:
    assert exc.errno == errno.EADDRINUSE, exc
else:
    sys.exit("port 4500 bound twice")
# The twin sends from the same address and port; nothing sent to them reaches the twin.
peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
peer.bind(("127.0.0.1", 0))
peer.settimeout(5)
udp.no_df.sendto(b"\\x01" * 12, peer.getsockname())
assert peer.recvfrom(100)[1] == ("10.203.0.1", 4500)
for _ in range(40):  # new source ports: the reuseport hash would spread them
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.sendto(b"\\x01" * 12, ("10.203.0.1", 4500))
        client.sendto(b"\\x01" * 12, ("10.203.0.1", 4500))
esp = socket.socket(socket.AF_INET, socket.SOCK_RAW, 50)
for _ in range(10):
    esp.sendto(b"\\x02" * 40, ("10.203.0.1", 0))
import time; time.sleep(0.2)
udp._drain(); raw._drain()
assert udp.datagrams_in == 80 and raw.datagrams_in == 10, (udp.datagrams_in, raw.datagrams_in)
for twin in (udp.no_df.sock, raw.no_df.sock):
    twin.setblocking(False)
    try:
        twin.recv(100)
    except BlockingIOError:
        pass
    else:
        sys.exit(f"the twin {twin} received a packet")
# DF: the sockets refuse what exceeds the 1280 link, their twins send it (IP fragments).
for sock in (udp, raw):
    told = []
    sock.on_too_big = told.append
    sock.sendto(b"\\x03" * 2000, ("10.203.0.2", 9))
    assert told == ["10.203.0.2"], told
    sock.no_df.sendto(b"\\x03" * 2000, ("10.203.0.2", 9))
    assert sock.no_df.send_errors == 0
print("ok")
"""


def test_no_df_twins_send_from_the_same_port_and_receive_nothing() -> None:
    _run_beside_a_1280_link(TWINS)
