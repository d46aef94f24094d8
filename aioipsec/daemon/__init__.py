"""The aioipsec daemon: one asyncio program composing engine, data plane, TUN and sockets.

``aioipsec daemon`` (``aioipsec.cli``) calls :func:`run_daemon`. Start-up order, each step
undone in reverse if a later one fails, so a bad start leaves nothing behind:

1. the crypto self-test (:func:`aioipsec.selftest.run_selftest`): refuse to start on failure;
2. the configuration (TOML and/or swanctl.conf) into engine configs: a ``ConfigError``
   names the file, key and reason, and the daemon exits 1 before touching the system;
3. optional key export (``--save-keys``), with a warning;
4. the IKE ports; then the fail-closed rules (:mod:`aioipsec.runtime.failclosed`: traffic
   to every loaded connection's remote selectors is dropped unless it enters the tunnel,
   taking over what an earlier daemon left); the TUN device, the tunnel routing rule, the
   ESP sockets (UDP 500 via asyncio-dgram, UDP 4500 and raw ESP as plain non-blocking
   sockets, see docs/daemon.md);
5. the control socket and the VICI socket (``[daemon] vici_socket``, strongSwan's protocol
   for swanctl, see docs/vici.md: the same command handlers), the engine timer task,
   ``start_action = start`` / ``trap``.

SIGTERM/SIGINT: every IKE SA is deleted (DELETE sent, answers awaited briefly), routes and
the TUN device removed, exit status 0; the fail-closed rules stay unless
``fail_closed_after_stop = false``. SIGHUP: the ``--log-file`` is reopened (log
rotation) and the configuration reloaded.

Modules (a module imports only modules above it in this list, never this ``__init__``,
which re-exports the public names)::

    state       DaemonState (what the parts share, declared once), IkeSaState, StartupError
    privileges  capabilities dropped after start-up (CAP_NET_ADMIN kept)
    stream      the ``subscribe`` stream: IKE message and event records
    transport   UDP 500/4500 and raw ESP sockets, sending IKE, NAT keepalives
    children    Child SA glue: child_spec, install, updown, proxy ARP, traps, inactivity
    failclosed  fail-closed rules and shunts over the daemon's life (start, SAs, reload)
    events      _on_event: the engine's events acted on, keyingtries
    reload      SIGHUP and ``reload``, log file reopened
    handlers    the one command table (control_handlers) and the core commands
    core        Daemon: the parts composed; start-up in order, stop and teardown
    run         run_daemon, main (``python -m aioipsec.daemon``)
"""

from aioipsec.daemon.children import child_spec
from aioipsec.daemon.core import Daemon
from aioipsec.daemon.privileges import CAP_NET_ADMIN, drop_capabilities
from aioipsec.daemon.reload import engine_configs
from aioipsec.daemon.run import main, run_daemon
from aioipsec.daemon.state import (
    DEFAULT_KEEPALIVE_INTERVAL,
    SHUTDOWN_DELETE_WAIT,
    IkeSaState,
    StartupError,
)
from aioipsec.daemon.stream import SUBSCRIBER_QUEUE, event_record, ike_message_record
from aioipsec.daemon.transport import NON_ESP_MARKER

__all__ = [
    "CAP_NET_ADMIN",
    "DEFAULT_KEEPALIVE_INTERVAL",
    "NON_ESP_MARKER",
    "SHUTDOWN_DELETE_WAIT",
    "SUBSCRIBER_QUEUE",
    "Daemon",
    "IkeSaState",
    "StartupError",
    "child_spec",
    "drop_capabilities",
    "engine_configs",
    "event_record",
    "ike_message_record",
    "main",
    "run_daemon",
]
