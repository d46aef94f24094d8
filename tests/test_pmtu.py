"""aioipsec.runtime.pmtu on real sockets in a namespace: DF refuses what exceeds the link
MTU with EMSGSIZE (and tells the socket's owner), an IKE send may still be fragmented."""

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


def test_df_emsgsize_and_ike_fragments() -> None:
    require_component("root", "ip")
    with Lab("pmtu") as lab:
        a, b = lab.namespace("a"), lab.namespace("b")
        left, _ = lab.veth(a, "10.203.0.1/24", b, "10.203.0.2/24")
        a.ip("link", "set", "dev", left, "mtu", "1280")
        result = a.run(sys.executable, "-c", SCRIPT, check=False)
        assert result.stdout.strip() == "ok", result.stdout + result.stderr
