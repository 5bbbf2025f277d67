"""The worker pool: one warm worker per key while its work lasts, bounded by concurrency."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import shutil
import stat
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from sinas_executor import memory_cgroup
from sinas_executor.models import (
    HandedBack,
    InputChannel,
    InputEnded,
    RunRequest,
    RunResult,
    WorkerKey,
)
from sinas_executor.network import Network
from sinas_executor.network import resolve as resolve_network
from sinas_executor.sandbox import (
    SandboxUnavailable,
    WorkerDied,
    WorkerProcess,
    WorkerSpec,
    ZygoteProcess,
    describe_exit,
)

logger = logging.getLogger(__name__)

# The worker made at start to check the sandbox: a slot and key of no run's.
PROBE_SLOT = -1
PROBE_KEY = WorkerKey(user_id="", function_id="sandbox-check", function_version=0)
PROBE_SECONDS = 30.0

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
    # As root, each worker gets a uid of its own from [uid_base, uid_base + uid_count).
    uid_count: int = 65536
    disk_mb: int = 256
    # Besides the pool's own folder (other workers' scratch), what workers must not see.
    hide_paths: tuple[str, ...] = ("/run/postgresql", "/var/run/postgresql")
    namespaces: bool = True
    max_processes: int = 64
    # EXECUTOR_SANDBOX_NETWORK: auto is isolated where available, else the host's (warned).
    network: str = "auto"
    # The API functions call (context["api_url"]): its port, on loopback, stays reachable.
    api_url: str | None = None
    # The next isolated worker made ahead (`spare`): its start then skips the wait for pasta.
    # Off only to measure a start without one (bench/worker_start.py).
    spare_worker: bool = True


def remove_tree(path: str) -> None:
    """Removes `path` and everything in it, including folders a function made unreadable
    or unwritable to keep its files (`chmod 0`): their owner may always change that back."""

    def unlock(function: Callable[..., Any], failed: str, _exc: object) -> None:
        for folder in (os.path.dirname(failed), failed):
            # Never through a symlink: that would change the mode of whatever it points to.
            with contextlib.suppress(OSError):
                if stat.S_ISDIR(os.lstat(folder).st_mode):
                    os.chmod(folder, 0o700)
        with contextlib.suppress(FileNotFoundError):
            if function in (os.open, os.scandir, os.listdir):
                shutil.rmtree(failed, onerror=unlock)
            elif function in (os.rmdir, os.unlink, os.remove):
                function(failed)

    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(path, onerror=unlock)


class WorkerPool:
    """Hands out workers by key, reusing idle ones and evicting idle workers of other keys."""

    def __init__(self, limits: PoolLimits, zygote: ZygoteProcess | None = None) -> None:
        self.limits = limits
        self._zygote = zygote or ZygoteProcess()
        # This executor's own folder (slot folders inside), made at start, removed at close.
        self._root: str | None = None
        self._idle: dict[WorkerKey, list[tuple[float, WorkerProcess]]] = {}
        self._busy: set[WorkerProcess] = set()
        self._free_slots = list(range(limits.concurrency))
        self._changed = asyncio.Condition()
        self._restart_lock = asyncio.Lock()
        self._reaper: asyncio.Task[None] | None = None
        self.started_workers = 0
        # As root: the worker last given each uid, so that no uid is given again while a
        # process of its previous holder may live (a worker's exit ends its whole namespace).
        self._uid_holders: dict[int, WorkerProcess] = {}
        self._next_uid = 0
        # The network workers actually get, settled at start: `network.mode` is one of
        # `network.MODES`.
        self.network = Network()
        # Where the machine lets us: the folder of one memory cgroup per worker.
        self.memory_cgroup: str | None = None
        # What the zygote's spare was made for (its uid is held for it), until a spawn takes it.
        self._spare: WorkerSpec | None = None

    def sandbox_report(self) -> dict[str, Any]:
        """How runs are isolated here, as settled at start: for the executor's /health."""
        return {
            "isolation": "namespaces" if self.limits.namespaces else "unsafe-none",
            "network": self.network.mode,
            # Across a run's processes where a cgroup is ours; else each process alone.
            "memory_limit": "cgroup" if self.memory_cgroup is not None else "per-process",
            "max_processes": self.limits.max_processes,
            "disk_limit_mb": self.limits.disk_mb if self.limits.namespaces else None,
        }

    @property
    def root(self) -> str | None:
        """The folder holding this pool's scratch folders while it runs."""
        return self._root

    async def start(self) -> None:
        # Before anything is made: a network asked for and unavailable stops the start.
        self.network = resolve_network(
            self.limits.network, namespaces=self.limits.namespaces, api_url=self.limits.api_url
        )
        parent = self.limits.root
        if parent is not None:
            os.makedirs(parent, mode=0o711, exist_ok=True)
        # A folder of this executor's own, even in a shared EXECUTOR_SANDBOX_ROOT: two
        # executors on one host never share (nor wipe) each other's slot folders.
        self._root = tempfile.mkdtemp(prefix="sinas-sandbox-", dir=parent)
        # Workers under their own uid may enter their own folder, never list the others.
        os.chmod(self._root, 0o711)
        if parent is not None:
            os.chmod(parent, 0o711)
        self.memory_cgroup = memory_cgroup.create_executor_folder(os.path.basename(self._root))
        try:
            await self._zygote.start()
            await self._check_sandbox()
        except BaseException:
            # A refused start leaves nothing behind: no folder, cgroup or zygote.
            await self.close()
            raise
        self._reaper = asyncio.create_task(self._reap_idle(), name="worker-idle-reaper")

    async def _check_sandbox(self) -> None:
        """One worker made and asked before any run: a machine where no worker can be
        sandboxed as configured stops the start, instead of failing every run later."""
        worker = await self.start_probe()
        await worker.stop()

    async def start_probe(self) -> WorkerProcess:
        """A worker of no run's, forked and answering: the start's check, and what the bench
        times as a worker's start (fork to ready). The caller stops it."""
        worker = await self._spawn(PROBE_SLOT, PROBE_KEY)
        try:
            reply = await asyncio.wait_for(
                worker.request({"op": "run", "input": None, "context": {}}), PROBE_SECONDS
            )
        except (WorkerDied, TimeoutError) as exc:
            # A worker that died is not killed: that would hide how it ended (its exit code).
            status = await (worker.died() if isinstance(exc, WorkerDied) else worker.kill())
            await worker.stop()
            raise SandboxUnavailable(
                "no sandboxed worker could start here "
                f"({describe_exit(status, worker.spec)}; the executor's log says why). "
                "Grant what the README's security model needs, or set "
                "EXECUTOR_SANDBOX=unsafe-none to run functions without isolation"
            ) from exc
        except BaseException:
            await worker.stop()
            raise
        logger.debug("sandbox checked", extra={"action": "sandbox_check", "reply": reply})
        return worker

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        # All at once: a stop is bounded by the grace period, not by the number of workers.
        idle = [worker for entries in self._idle.values() for _, worker in entries]
        self._idle.clear()
        await asyncio.gather(
            *(worker.stop() for worker in idle),
            *(worker.kill() for worker in list(self._busy)),
            return_exceptions=True,
        )
        await self._zygote.close()
        self._spare = None
        if self.memory_cgroup is not None:
            memory_cgroup.remove_executor_folder(self.memory_cgroup)
            self.memory_cgroup = None
        if self._root is not None:
            remove_tree(self._root)
            self._root = None
        if self.limits.root is not None:
            # Gone when nothing else is in it (another executor's folder keeps it).
            with contextlib.suppress(OSError):
                os.rmdir(self.limits.root)

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
            worker = await self._spawn(slot, key)
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

    async def _spawn(self, slot: int, key: WorkerKey) -> WorkerProcess:
        worker = await self._zygote.spawn(self._spec(slot), key)
        self._hold_uid(worker)
        await self._prepare_spare()
        return worker

    async def _prepare_spare(self) -> None:
        """Has the zygote make the next worker ahead, where that spares its start the wait
        for pasta: the one network that needs it."""
        if self._spare is not None or not self.limits.spare_worker or self.network.pasta is None:
            return
        try:
            uid = self._fresh_uid()
        except RuntimeError:
            # Every uid is held: the next worker is made afresh, once one is free.
            return
        self._spare = self._make_spec(PROBE_SLOT, uid)
        with contextlib.suppress(SandboxUnavailable):
            # A zygote that is gone took its spare along: the next spawn is made afresh.
            await self._zygote.prepare(self._spare)

    def _spec(self, slot: int) -> WorkerSpec:
        """The spec of the next worker: the spare's, where there is one, for it to take."""
        made, self._spare = self._spare, None
        if made is not None:
            return dataclasses.replace(made, slot=slot, scratch=self._scratch(slot))
        return self._make_spec(slot, self._fresh_uid())

    def _fresh_uid(self) -> int | None:
        """As root, a uid no live worker (nor the spare) holds; otherwise None: the executor's."""
        return self._free_uid() if os.geteuid() == 0 else None

    def _scratch(self, slot: int) -> str:
        assert self._root is not None
        return os.path.join(self._root, "check" if slot == PROBE_SLOT else f"slot-{slot}")

    def _make_spec(self, slot: int, uid: int | None) -> WorkerSpec:
        assert self._root is not None
        return WorkerSpec(
            slot=slot,
            scratch=self._scratch(slot),
            uid=uid,
            gid=uid,
            memory_mb=self.limits.memory_mb,
            cpu_seconds=self.limits.cpu_seconds,
            file_size_mb=self.limits.file_size_mb,
            open_files=self.limits.open_files,
            disk_mb=self.limits.disk_mb,
            # The shared EXECUTOR_SANDBOX_ROOT where there is one: other executors' too.
            hide=(self.limits.root or self._root, *self.limits.hide_paths),
            namespaces=self.limits.namespaces,
            max_processes=self.limits.max_processes,
            memory_cgroup=self.memory_cgroup,
            network=self.network,
        )

    def _free_uid(self) -> int:
        count = self.limits.uid_count
        for _ in range(count):
            uid = self.limits.uid_base + self._next_uid
            self._next_uid = (self._next_uid + 1) % count
            if self._spare is not None and uid == self._spare.uid:
                continue
            holder = self._uid_holders.get(uid)
            if holder is None or holder.exited:
                self._uid_holders.pop(uid, None)
                return uid
        raise RuntimeError("every sandbox uid is held by a live worker")

    def _hold_uid(self, worker: WorkerProcess) -> None:
        if worker.spec.uid is None:
            return
        self._uid_holders[worker.spec.uid] = worker
        if len(self._uid_holders) > 2 * self.limits.concurrency:
            # Only live holders matter: the map stays as small as the pool.
            self._uid_holders = {
                uid: holder for uid, holder in self._uid_holders.items() if not holder.exited
            }


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
            except HandedBack:
                # No outcome: the attempt is released and runs again from the start elsewhere.
                await worker.kill()
                raise
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
                ended = describe_exit(await worker.died(), worker.spec)
                return RunResult(error=f"The worker process died during the run ({ended})")
            except asyncio.CancelledError:
                await asyncio.shield(worker.kill())
                raise
        if "error" in reply and reply["error"] is not None:
            return RunResult(error=str(reply["error"]), traceback=str(reply.get("traceback", "")))
        return RunResult(output=reply.get("output"))
