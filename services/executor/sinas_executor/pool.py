"""The worker pool: one warm worker per key while its work lasts, bounded by concurrency."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from sinas_executor.models import InputChannel, InputEnded, RunRequest, RunResult, WorkerKey
from sinas_executor.sandbox import (
    WorkerDied,
    WorkerProcess,
    WorkerSpec,
    ZygoteProcess,
    describe_exit,
)

logger = logging.getLogger(__name__)

# A worker is retired once it has used this share of its lifetime CPU limit, or once its
# peak resident memory reaches this share of its memory limit, so that a hard limit hit is
# rare and never blamed on a run that did not cause it (a function that leaks a little on
# every run gets a fresh worker long before the limit, however many runs that takes).
CPU_RETIRE_SHARE = 0.5
MEMORY_RETIRE_SHARE = 0.5


class FunctionRunner(Protocol):
    """The sandbox port: runs one call of a function's handler."""

    async def run(self, request: RunRequest) -> RunResult: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class PoolLimits:
    """Pool size, worker lifetime and per-worker resource limits."""

    concurrency: int = 8
    max_runs: int = 1000
    idle_seconds: float = 10.0
    memory_mb: int = 512
    cpu_seconds: int = 600
    file_size_mb: int = 64
    open_files: int = 256
    root: str | None = None
    uid_base: int = 61000


class WorkerPool:
    """Hands out workers by key, reusing idle ones and evicting idle workers of other keys."""

    def __init__(self, limits: PoolLimits, zygote: ZygoteProcess | None = None) -> None:
        self.limits = limits
        self._zygote = zygote or ZygoteProcess()
        self._root = limits.root
        self._owns_root = False
        self._idle: dict[WorkerKey, list[tuple[float, WorkerProcess]]] = {}
        self._busy: set[WorkerProcess] = set()
        self._free_slots = list(range(limits.concurrency))
        self._changed = asyncio.Condition()
        self._restart_lock = asyncio.Lock()
        self._reaper: asyncio.Task[None] | None = None
        self.started_workers = 0

    async def start(self) -> None:
        if self._root is None:
            self._root = tempfile.mkdtemp(prefix="sinas-sandbox-")
            self._owns_root = True
        os.makedirs(self._root, exist_ok=True)
        # Workers under their own uid may enter their own folder, never list the others.
        os.chmod(self._root, 0o711)
        await self._zygote.start()
        self._reaper = asyncio.create_task(self._reap_idle(), name="worker-idle-reaper")

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        for entries in self._idle.values():
            for _, worker in entries:
                await worker.stop()
        self._idle.clear()
        for worker in list(self._busy):
            await worker.kill()
        await self._zygote.close()
        if self._owns_root and self._root is not None:
            import shutil

            shutil.rmtree(self._root, ignore_errors=True)

    def idle_workers(self, key: WorkerKey) -> int:
        return len(self._idle.get(key, ()))

    @contextlib.asynccontextmanager
    async def lease(self, key: WorkerKey) -> AsyncIterator[WorkerProcess]:
        """A worker for `key` for the duration of one run."""
        worker = await self._acquire(key)
        try:
            yield worker
        finally:
            await self._release(worker)

    async def _acquire(self, key: WorkerKey) -> WorkerProcess:
        async with self._changed:
            while True:
                entries = self._idle.get(key)
                if entries:
                    _, worker = entries.pop()
                    if not entries:
                        del self._idle[key]
                    self._busy.add(worker)
                    return worker
                if self._free_slots:
                    slot = self._free_slots.pop()
                    break
                evicted = self._oldest_idle()
                if evicted is not None:
                    slot = evicted.spec.slot
                    await evicted.stop()
                    break
                await self._changed.wait()
        try:
            async with self._restart_lock:
                if not self._zygote.running:
                    # The zygote died (killed, OOM): start a fresh one instead of failing runs.
                    await self._zygote.close()
                    await self._zygote.start()
            worker = await self._zygote.spawn(self._spec(slot), key)
        except BaseException:
            async with self._changed:
                self._free_slots.append(slot)
                self._changed.notify_all()
            raise
        self.started_workers += 1
        self._busy.add(worker)
        return worker

    def _oldest_idle(self) -> WorkerProcess | None:
        oldest: tuple[float, WorkerKey, int] | None = None
        for key, entries in self._idle.items():
            for index, (since, _) in enumerate(entries):
                if oldest is None or since < oldest[0]:
                    oldest = (since, key, index)
        if oldest is None:
            return None
        _, key, index = oldest
        _, worker = self._idle[key].pop(index)
        if not self._idle[key]:
            del self._idle[key]
        return worker

    async def _release(self, worker: WorkerProcess) -> None:
        retire = (
            worker.broken
            or worker.runs >= self.limits.max_runs
            or worker.cpu_seconds >= self.limits.cpu_seconds * CPU_RETIRE_SHARE
            or worker.peak_rss_mb >= self.limits.memory_mb * MEMORY_RETIRE_SHARE
        )
        if retire:
            await (worker.kill() if worker.broken else worker.stop())
        async with self._changed:
            self._busy.discard(worker)
            if retire:
                self._free_slots.append(worker.spec.slot)
            else:
                self._idle.setdefault(worker.key, []).append((time.monotonic(), worker))
            self._changed.notify_all()

    async def _reap_idle(self) -> None:
        while True:
            await asyncio.sleep(min(1.0, self.limits.idle_seconds / 2))
            deadline = time.monotonic() - self.limits.idle_seconds
            expired: list[WorkerProcess] = []
            async with self._changed:
                for key in list(self._idle):
                    keep = [(t, w) for t, w in self._idle[key] if t > deadline]
                    expired.extend(w for t, w in self._idle[key] if t <= deadline)
                    if keep:
                        self._idle[key] = keep
                    else:
                        del self._idle[key]
            for worker in expired:
                await worker.stop()
            if expired:
                async with self._changed:
                    self._free_slots.extend(w.spec.slot for w in expired)
                    self._changed.notify_all()

    def _spec(self, slot: int) -> WorkerSpec:
        assert self._root is not None
        root_user = os.geteuid() == 0
        uid = self.limits.uid_base + slot if root_user else None
        return WorkerSpec(
            slot=slot,
            scratch=os.path.join(self._root, f"slot-{slot}"),
            uid=uid,
            gid=uid,
            memory_mb=self.limits.memory_mb,
            cpu_seconds=self.limits.cpu_seconds,
            file_size_mb=self.limits.file_size_mb,
            open_files=self.limits.open_files,
        )


INPUT_ENDED_ERROR = "The execution ended while it waited for input"


def _paused_clock(
    clock: asyncio.Timeout, inputs: InputChannel | None
) -> Callable[[str], Awaitable[Any]] | None:
    """Answers `input()` through `inputs`, with the run's wall clock stopped while it waits:
    the time a person takes to answer is bounded by the input deadline, not the timeout."""
    if inputs is None:
        return None
    channel = inputs

    async def ask(prompt: str) -> Any:
        loop = asyncio.get_running_loop()
        when = clock.when()
        remaining = None if when is None else when - loop.time()
        clock.reschedule(None)
        try:
            return await channel.ask(prompt)
        finally:
            if remaining is not None:
                clock.reschedule(loop.time() + remaining)

    return ask


class SandboxRunner:
    """FunctionRunner over the worker pool: wall-clock timeouts, crashes reported as data."""

    def __init__(self, pool: WorkerPool) -> None:
        self.pool = pool

    async def run(self, request: RunRequest) -> RunResult:
        async with self.pool.lease(request.key) as worker:
            if not worker.loaded:
                worker.send_nowait(
                    {"op": "load", "code": request.code, "filename": request.filename}
                )
                worker.loaded = True
            message = {"op": "run", "input": request.input_data, "context": request.context}
            try:
                async with asyncio.timeout(request.timeout_seconds) as clock:
                    reply = await worker.request(message, _paused_clock(clock, request.inputs))
            except InputEnded:
                # Cancelled or past its input deadline: the scheduler already ended the
                # execution, so this outcome is only the executor's own record of it.
                await worker.kill()
                return RunResult(error=INPUT_ENDED_ERROR)
            except TimeoutError:
                await worker.kill()
                logger.info(
                    "function timed out",
                    extra={
                        "action": "run_timeout",
                        "execution_id": request.context.get("execution_id"),
                    },
                )
                return RunResult(
                    error=(
                        f"Function execution timed out after {request.timeout_seconds:g} seconds"
                    ),
                    timed_out=True,
                )
            except WorkerDied:
                status = await worker.died()
                return RunResult(
                    error=f"The worker process died during the run ({describe_exit(status)})"
                )
            except asyncio.CancelledError:
                await asyncio.shield(worker.kill())
                raise
        if "error" in reply and reply["error"] is not None:
            return RunResult(error=str(reply["error"]), traceback=str(reply.get("traceback", "")))
        return RunResult(output=reply.get("output"))
