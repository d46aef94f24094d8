"""Running updown scripts (strongSwan's ``updown = COMMAND``) without blocking the loop.

The daemon tells :class:`UpdownRunner` when a Child SA comes up (``child_up``), is replaced by
a rekey (``child_rekeyed``: strongSwan calls no script then, and neither do we) and goes
down (``child_down``). Each call of the script (one per policy, see
:mod:`aioipsec.updown_env`) is queued; one task runs them in order, so a ``down`` never
overtakes its ``up``. Like charon, the command line goes through ``sh -c`` with stderr
joined to stdout; every output line is logged, then the exit status. A script still running
after ``timeout`` seconds is killed (its whole process group) and that is logged too.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from dataclasses import dataclass, replace

import structlog

from aioipsec.updown_env import UpdownCall, build_environment, policy_pairs
from ikev2 import events as ev
from ikev2.enums import ProtocolId

log = structlog.get_logger("aioipsec.updown")

DEFAULT_TIMEOUT = 30.0  # seconds one call of a script may take
_MAX_LINE = 4096  # an output line longer than this is cut in the log


@dataclass(frozen=True)
class _Job:
    command: str
    call: UpdownCall


def calls_for(
    ike: ev.IkeSaEstablished | None,
    child: ev.ChildSaEstablished,
    *,
    interface: str,
    reqid: int,
    host_access: bool,
) -> list[UpdownCall]:
    """The ``up`` calls for one Child SA, one per policy (strongSwan's order: each local
    selector with each remote one of the same IP version)."""
    return [
        UpdownCall(
            up=True,
            connection=child.child,
            interface=interface,
            reqid=reqid,
            protocol="ah" if child.protocol == ProtocolId.AH else "esp",
            unique_id=child.ike_sa_id,
            me=child.local_addr[0],
            my_id=ike.local_id if ike is not None else "%any",
            peer=child.remote_addr[0],
            peer_id=ike.remote_id if ike is not None else "%any",
            my_ts=mine,
            peer_ts=theirs,
            udp_encap_port=child.remote_addr[1] if child.udp_encap else None,
            host_access=host_access,
        )
        for mine, theirs in policy_pairs(child.local_ts, child.remote_ts)
    ]


class UpdownRunner:
    def __init__(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.timeout = timeout
        self._queue: asyncio.Queue[_Job | None] = asyncio.Queue()
        # child_sa_id -> the command and the calls made when it came up (reused for down).
        self._up: dict[int, tuple[str, list[UpdownCall]]] = {}
        self._task: asyncio.Task[None] | None = None
        self.calls = 0
        self.failures = 0

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._task = loop.create_task(self._run(), name="updown")

    # ------------------------------------------------------------------ Child SA life

    def child_up(self, child_sa_id: int, command: str, calls: list[UpdownCall]) -> None:
        self._up[child_sa_id] = (command, calls)
        for call in calls:
            self._queue.put_nowait(_Job(command, call))

    def child_rekeyed(self, old_child_sa_id: int, new_child_sa_id: int) -> None:
        """The new Child SA carries on the old one's policies: no script, and its
        ``down`` follows when the new one goes (strongSwan does the same)."""
        entry = self._up.pop(old_child_sa_id, None)
        if entry is not None:
            self._up[new_child_sa_id] = entry

    def child_down(self, child_sa_id: int) -> None:
        entry = self._up.pop(child_sa_id, None)
        if entry is None:
            return  # never up, or replaced by a rekey
        command, calls = entry
        for call in calls:
            self._queue.put_nowait(_Job(command, replace(call, up=False)))

    # ------------------------------------------------------------------ the worker

    async def _run(self) -> None:
        while True:
            job = await self._queue.get()
            if job is None:
                return
            try:
                await self._call(job)
            except Exception:
                self.failures += 1
                log.exception("updown script could not be run", command=job.command)

    async def _call(self, job: _Job) -> None:
        env = build_environment(job.call, os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"))
        verb = env["PLUTO_VERB"]
        self.calls += 1
        process = await asyncio.create_subprocess_exec(
            "/bin/sh",
            "-c",
            f"2>&1 {job.command}",
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # its own process group: a timeout kills all of it
        )
        assert process.stdout is not None
        fields = {"connection": job.call.connection, "verb": verb, "reqid": job.call.reqid}

        async def relay() -> None:
            assert process.stdout is not None
            while line := await process.stdout.readline():
                text = line.decode(errors="replace").rstrip("\n")[:_MAX_LINE]
                log.info("updown: " + text, **fields)
            await process.wait()

        try:
            await asyncio.wait_for(relay(), self.timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
            self.failures += 1
            log.error(
                f"updown script killed after {self.timeout:g} s",
                command=job.command,
                hint="the script must return; long work belongs in the background",
                **fields,
            )
            return
        if process.returncode == 0:
            log.info("updown script done", status=0, **fields)
        else:
            self.failures += 1
            log.warning(
                "updown script failed", status=process.returncode, command=job.command, **fields
            )

    async def close(self, timeout: float | None = None) -> None:
        """Run what is queued (the ``down`` calls of a shutdown), then stop."""
        if self._task is None:
            return
        self._queue.put_nowait(None)
        limit = timeout if timeout is not None else self.timeout * max(1, self._queue.qsize())
        try:
            await asyncio.wait_for(asyncio.shield(self._task), limit)
        except TimeoutError:
            self._task.cancel()
            log.error("updown calls still queued at shutdown were dropped")
        self._task = None
