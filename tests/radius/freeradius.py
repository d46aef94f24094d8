"""FreeRADIUS (Debian's ``freeradius``) for the eap-radius tests: a minimal configuration
written next to the test's other files, one RADIUS client (the gateway, on loopback), the
users with their passwords and Class attributes, EAP-MD5 and EAP-MSCHAPv2 (the default)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

from aioipsec.netns import BackgroundProcess, Lab, Namespace, start_process

RADIUSD_CONF = """\
prefix = /usr
exec_prefix = /usr
sysconfdir = /etc
localstatedir = /var
sbindir = /usr/sbin
libdir = /usr/lib/freeradius
logdir = {dir}
raddbdir = {dir}
radacctdir = {dir}
confdir = {dir}
modconfdir = {dir}
run_dir = {dir}
db_dir = {dir}
pidfile = {dir}/radiusd.pid
name = freeradius
max_request_time = 30
cleanup_delay = 5
max_requests = 1024
hostname_lookups = no
log {{
   destination = stdout
   auth = yes
}}
security {{
   allow_core_dumps = no
   max_attributes = 200
   reject_delay = 0
   status_server = no
}}
thread pool {{
   start_servers = 1
   max_servers = 4
   min_spare_servers = 1
   max_spare_servers = 2
}}
client gateway {{
   ipaddr = 127.0.0.1
   secret = {secret}
   require_message_authenticator = yes
}}
modules {{
   files {{
      filename = {dir}/users
   }}
   mschap {{
   }}
   eap {{
      default_eap_type = mschapv2
      timer_expire = 60
      max_sessions = 64
      md5 {{
      }}
      mschapv2 {{
      }}
   }}
}}
server default {{
   listen {{
      type = auth
      ipaddr = 127.0.0.1
      port = {port}
   }}
   authorize {{
      files
      eap {{
         ok = return
      }}
   }}
   authenticate {{
      Auth-Type MS-CHAP {{
         mschap
      }}
      eap
   }}
   post-auth {{
   }}
}}
"""


def start_freeradius(
    lab: Lab | None,
    namespace: Namespace | None,
    directory: Path,
    secret: str,
    users: Mapping[str, tuple[str, str | None]],
    port: int = 1812,
    replies: Mapping[str, list[str]] | None = None,
) -> tuple[BackgroundProcess, float]:
    """FreeRADIUS on 127.0.0.1:PORT in NAMESPACE (None: here, and the caller stops it);
    USERS: name -> (password, Class or None); REPLIES: name -> more reply items of its
    Access-Accept (``Framed-IP-Address := 10.3.0.14``). Returns the process and the seconds it took
    to be ready."""
    directory.mkdir(parents=True, exist_ok=True)
    conf = RADIUSD_CONF.format(dir=directory, secret=secret, port=port)
    (directory / "radiusd.conf").write_text(conf)
    (directory / "dictionary").write_text("")  # the site dictionary: nothing to add
    lines = []
    for name, (password, group) in users.items():
        lines.append(f'{name} Cleartext-Password := "{password}"')
        items = [f"Class := 0x{group.encode().hex()}"] if group is not None else []
        items += (replies or {}).get(name, [])
        if items:
            lines.append("      " + ",\n      ".join(items))
    (directory / "users").write_text("\n".join(lines) + "\n")
    for path in directory.iterdir():
        path.chmod(0o600)
    argv = ["freeradius", "-f", "-d", str(directory), "-l", "stdout"]
    started = time.monotonic()
    if lab is not None and namespace is not None:
        namespace.ip("link", "set", "lo", "up")
        process = lab.start(namespace, argv, log=directory / "radiusd.log")
    else:
        process = start_process(None, argv, directory / "radiusd.log")
    if not process.wait_for_log("Ready to process requests", timeout=30.0):
        process.stop()
        raise RuntimeError(f"FreeRADIUS did not start:\n{process.log_text()[-3000:]}")
    return process, time.monotonic() - started
