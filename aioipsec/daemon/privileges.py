"""Capabilities dropped once the daemon has opened what needs root (sockets, TUN
device, control socket): only CAP_NET_ADMIN stays."""

from __future__ import annotations

import ctypes
import os

import structlog

log = structlog.get_logger("aioipsec.daemon")

# Linux capability numbers (linux/capability.h) and the calls to drop them.
CAP_NET_ADMIN = 12
_PR_CAPBSET_DROP = 24
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


def drop_capabilities(keep: tuple[int, ...] = (CAP_NET_ADMIN,)) -> None:
    """Drop every capability but KEEP, from this thread and every program it starts.

    Once the sockets, the TUN device and the control socket are open, the daemon only
    changes routes, rules and the TUN MTU (CAP_NET_ADMIN, also for the ``ip`` commands it
    runs). The bounding set is cut too: a root process regains its bounding set on
    ``execve``, so without that the ``ip`` children would run with every capability.
    Capabilities are per thread: threads started before this call keep theirs.
    """

    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    try:
        with open("/proc/sys/kernel/cap_last_cap") as file:
            last = int(file.read())
    except OSError:
        last = 40
    for capability in range(last + 1):
        if capability not in keep and libc.prctl(_PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            log.warning(
                "cannot drop capabilities: running with all of them",
                error=os.strerror(ctypes.get_errno()),
            )
            return
    mask = sum(1 << capability for capability in keep)
    header = (ctypes.c_uint32 * 2)(_LINUX_CAPABILITY_VERSION_3, 0)
    # Two {effective, permitted, inheritable} triples: capabilities 0-31, then 32-63.
    data = (ctypes.c_uint32 * 6)(
        mask & 0xFFFFFFFF, mask & 0xFFFFFFFF, mask & 0xFFFFFFFF,
        mask >> 32, mask >> 32, mask >> 32,
    )  # fmt: skip
    if libc.capset(header, data) != 0:
        log.warning(
            "cannot drop capabilities: running with all of them",
            error=os.strerror(ctypes.get_errno()),
        )
        return
    log.info("capabilities dropped", kept=["CAP_NET_ADMIN" if c == CAP_NET_ADMIN else c
                                            for c in keep])  # fmt: skip
