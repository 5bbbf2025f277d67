"""The executor's side of the sandbox: the zygote process and the workers it forks."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from sinas_executor.framing import encode_frame, read_frame
from sinas_executor.models import WorkerKey
from sinas_executor.network import Network

logger = logging.getLogger(__name__)

_CONTROL_BUFFER = 1 << 16
# How long to wait for the zygote to report a killed or crashed worker's exit.
EXIT_REPORT_SECONDS = 10.0
ZYGOTE_START_SECONDS = 60.0
# The zygote's whole environment; each worker then sets `worker.worker_environment`.
ZYGOTE_ENVIRONMENT = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}


class SandboxUnavailable(Exception):
    """The zygote is not running, so no worker can be started."""


class WorkerDied(Exception):
    """The worker's channel closed before it answered."""


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerSpec:
    """Where and how one worker process runs."""

    slot: int
    scratch: str
    uid: int | None
    gid: int | None
    memory_mb: int
    cpu_seconds: int
    file_size_mb: int
    open_files: int
    # The size of the one tmpfs holding the worker's scratch, /tmp, /var/tmp and /dev/shm.
    disk_mb: int = 256
    # Paths the worker must not see: covered by an empty read-only tmpfs in its namespace.
    hide: tuple[str, ...] = ()
    # Off only where the machine can't make namespaces and the operator chose to run anyway.
    namespaces: bool = True
    max_processes: int = 64
    # The pool's folder of per-worker memory cgroups, where it has one (`memory_cgroup`).
    memory_cgroup: str | None = None
    # Its own network namespace (see `network`), or the host's.
    network: Network = field(default_factory=Network)

    def to_message(self, request_id: int) -> dict[str, Any]:
        return {
            "op": "spawn",
            "id": request_id,
            "slot": self.slot,
            "uid": self.uid,
            "gid": self.gid,
            "scratch": self.scratch,
            "hide": list(self.hide),
            "namespaces": self.namespaces,
            "network": self.network.to_message(),
            "memory_cgroup": self.memory_cgroup,
            "limits": {
                "max_processes": self.max_processes,
                # Files on the worker's tmpfs are memory too, charged to its cgroup.
                "cgroup_memory_mb": self.memory_mb + self.disk_mb,
                "disk_mb": self.disk_mb,
                "memory_mb": self.memory_mb,
                "cpu_seconds": self.cpu_seconds,
                "file_size_mb": self.file_size_mb,
                "open_files": self.open_files,
            },
        }


def describe_exit(status: dict[str, Any] | None, spec: WorkerSpec) -> str:
    """How a worker ended, for the execution's error message: a limit it hit by name."""
    if status is None:
        return "exit status unknown"
    if "signal" in status:
        number = int(status["signal"])
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = str(number)
        if status.get("memory_limit_reached"):
            return (
                f"killed by signal {name}: the run's processes together reached its memory "
                f"limit, EXECUTOR_MEMORY_LIMIT_MB={spec.memory_mb} plus "
                f"EXECUTOR_DISK_LIMIT_MB={spec.disk_mb} for its files"
            )
        if number == signal.SIGXCPU:
            return (
                f"killed by signal {name}: a process reached the CPU time limit, "
                f"EXECUTOR_CPU_LIMIT_SECONDS={spec.cpu_seconds}"
            )
        return f"killed by signal {name}"
    return f"exit code {status.get('code')}"


class ZygoteProcess:
    """Starts the zygote as a fresh interpreter and relays spawn, kill and exit messages."""

    def __init__(self) -> None:
        self._control: socket.socket | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._ids = itertools.count(1)
        self._spawns: dict[int, asyncio.Future[int]] = {}
        self._exits: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._ready: asyncio.Future[None] | None = None
        self._closing = False

    @property
    def running(self) -> bool:
        return self._reader is not None and not self._reader.done()

    async def start(self) -> None:
        self._closing = False
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        parent.setblocking(False)
        # Not the executor's environment (NATS password, certificate paths, addresses):
        # what the zygote holds, every worker it forks starts with.
        env = dict(ZYGOTE_ENVIRONMENT)
        loop = asyncio.get_running_loop()
        self._ready = loop.create_future()
        self._control = parent
        try:
            self._process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-I",
                "-m",
                "sinas_executor.zygote",
                str(child.fileno()),
                str(os.getpid()),
                pass_fds=(child.fileno(),),
                env=env,
                stdin=subprocess.DEVNULL,
                cwd="/",
            )
        finally:
            child.close()
        self._reader = asyncio.create_task(self._read_events(), name="zygote-events")
        await asyncio.wait_for(asyncio.shield(self._ready), ZYGOTE_START_SECONDS)
        logger.info("sandbox zygote started", extra={"action": "zygote_start"})

    async def close(self) -> None:
        """Closing the control socket makes the zygote kill every worker and exit."""
        self._closing = True
        if self._control is not None:
            self._control.close()
            self._control = None
        if self._process is not None:
            try:
                await asyncio.wait_for(self._process.wait(), EXIT_REPORT_SECONDS)
            except TimeoutError:
                self._process.kill()
                await self._process.wait()
            self._process = None
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None
        self._spawns.clear()
        self._exits.clear()

    async def _read_events(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._control is not None
        control = self._control
        try:
            while True:
                data = await loop.sock_recv(control, _CONTROL_BUFFER)
                if not data:
                    break
                self._dispatch(json.loads(data))
        except OSError:
            pass
        finally:
            self._fail_pending()

    def _dispatch(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "ready" and self._ready is not None and not self._ready.done():
            self._ready.set_result(None)
        elif kind == "spawned":
            future = self._spawns.pop(int(event["id"]), None)
            if future is not None and not future.done():
                future.set_result(int(event["pid"]))
        elif kind == "exit":
            exit_future = self._exit_future(int(event["pid"]))
            if not exit_future.done():
                exit_future.set_result(event)

    def _fail_pending(self) -> None:
        error = SandboxUnavailable("the sandbox zygote exited")
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(error)
        for future in self._spawns.values():
            if not future.done():
                future.set_exception(error)
        self._spawns.clear()
        for exit_future in self._exits.values():
            if not exit_future.done():
                exit_future.set_result({"lost": True})
        if not self._closing:
            logger.error("sandbox zygote exited", extra={"action": "zygote_lost"})

    def _exit_future(self, pid: int) -> asyncio.Future[dict[str, Any]]:
        future = self._exits.get(pid)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._exits[pid] = future
        return future

    async def _send(self, message: dict[str, Any], fds: list[int] | None = None) -> None:
        if self._control is None or not self.running:
            raise SandboxUnavailable()
        payload = json.dumps(message).encode()
        while True:
            try:
                socket.send_fds(self._control, [payload], fds or [])
                return
            except BlockingIOError:
                await asyncio.sleep(0.001)

    async def spawn(self, spec: WorkerSpec, key: WorkerKey) -> WorkerProcess:
        """Forks a hardened worker for `key` and returns its handle."""
        request_id = next(self._ids)
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._spawns[request_id] = future
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            await self._send(spec.to_message(request_id), [theirs.fileno()])
        except BaseException:
            self._spawns.pop(request_id, None)
            ours.close()
            raise
        finally:
            theirs.close()
        try:
            pid = await future
            reader, writer = await asyncio.open_unix_connection(sock=ours)
        except BaseException:
            ours.close()
            raise
        return WorkerProcess(pid=pid, key=key, spec=spec, zygote=self, reader=reader, writer=writer)

    async def prepare(self, spec: WorkerSpec) -> None:
        """Has the zygote make the next worker ahead (`spare`): a later spawn of a spec that
        differs only in its slot and scratch folder takes it. Its slot is not used."""
        await self._send({**spec.to_message(0), "op": "prepare"})

    async def kill(self, pid: int) -> None:
        with contextlib.suppress(SandboxUnavailable, OSError):
            await self._send({"op": "kill", "pid": pid})

    async def wait_exit(
        self, pid: int, timeout: float = EXIT_REPORT_SECONDS
    ) -> dict[str, Any] | None:
        """The reported exit of a worker, or None when no report came in time."""
        future = self._exit_future(pid)
        try:
            status = await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            return None
        self._exits.pop(pid, None)
        return None if status.get("lost") else status


class WorkerProcess:
    """One sandboxed worker bound to one key; answers one request at a time."""

    def __init__(
        self,
        *,
        pid: int,
        key: WorkerKey,
        spec: WorkerSpec,
        zygote: ZygoteProcess,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.pid = pid
        self.key = key
        self.spec = spec
        self.runs = 0
        self.cpu_seconds = 0.0
        self.peak_rss_mb = 0.0
        self.loaded = False
        self.broken = False
        self.exited = False
        self.exit_status: dict[str, Any] | None = None
        self._zygote = zygote
        self._reader = reader
        self._writer = writer

    async def request(
        self,
        message: dict[str, Any],
        on_input: Callable[[str], Awaitable[Any]] | None = None,
    ) -> dict[str, Any]:
        """Sends one run request and waits for its reply; raises WorkerDied on EOF.

        Each `input(prompt)` the function calls meanwhile is answered with what `on_input`
        returns (without one, the call gets EOFError, like `input()` with no stdin).
        """
        await self._send(message)
        while True:
            reply = await read_frame(self._reader)
            if not isinstance(reply, dict):
                self.broken = True
                raise WorkerDied()
            if reply.get("op") != "input":
                break
            if on_input is None:
                await self._send({"op": "no_input"})
                continue
            answer = await on_input(str(reply.get("prompt", "")))
            await self._send({"op": "input_reply", "input": answer})
        self.runs += 1
        if reply.pop("left_behind", False):
            # Killed at release, never given another run (see worker._left_behind).
            self.broken = True
        self.cpu_seconds = float(reply.pop("cpu_seconds", self.cpu_seconds))
        self.peak_rss_mb = float(reply.pop("peak_rss_mb", self.peak_rss_mb))
        return reply

    async def _send(self, message: dict[str, Any]) -> None:
        try:
            self._writer.write(encode_frame(message))
            await self._writer.drain()
        except ConnectionError as exc:
            self.broken = True
            raise WorkerDied() from exc

    def send_nowait(self, message: dict[str, Any]) -> None:
        self._writer.write(encode_frame(message))

    async def kill(self) -> dict[str, Any] | None:
        """SIGKILLs the worker's session and returns how it ended."""
        self.broken = True
        if not self.exited:
            await self._zygote.kill(self.pid)
            await self._await_exit(EXIT_REPORT_SECONDS)
        self._close_channel()
        return self.exit_status

    async def died(self) -> dict[str, Any] | None:
        """How a worker that closed its channel ended."""
        self.broken = True
        if not await self._await_exit(EXIT_REPORT_SECONDS):
            await self._zygote.kill(self.pid)
        self._close_channel()
        return self.exit_status

    async def stop(self) -> None:
        """Closing the channel ends the worker's serve loop; kill in case it does not."""
        self._close_channel()
        if not await self._await_exit(2.0):
            await self.kill()

    async def _await_exit(self, timeout: float) -> bool:
        if not self.exited:
            status = await self._zygote.wait_exit(self.pid, timeout=timeout)
            if status is not None:
                self.exited = True
                self.exit_status = status
        return self.exited

    def _close_channel(self) -> None:
        with contextlib.suppress(Exception):
            self._writer.close()
