"""The warm parent of every worker: started once, pre-imports common modules, forks on request.

Run as `python -I -m sinas_executor.zygote <control fd> <executor pid>`. It is started as a
fresh interpreter (never forked from the asyncio/gRPC executor), with a minimal environment,
and talks to the executor over a SOCK_SEQPACKET control socket:

- `{"op": "spawn", "id", "slot", "uid", "gid", "scratch", "limits"}` plus the worker's channel
  as an SCM_RIGHTS descriptor -> `{"event": "spawned", "id", "pid"}`;
- `{"op": "prepare", ...}`, a spawn message but a run's own fields, forks a spare: the next
  worker, made ahead up to its run (`spare`); a spawn of the same preparation takes it;
- `{"op": "kill", "pid"}` kills a live worker's whole session (nothing is answered);
- whenever a worker ends -> `{"event": "exit", "pid", "code" | "signal"}` (a spare that
  ended before a spawn took it was never reported, and is not).

When the executor closes the control socket (or dies), every worker is killed.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import selectors
import signal
import socket
import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

from sinas_common.hardening import make_non_dumpable
from sinas_executor import memory_cgroup, namespaces, spare, worker
from sinas_executor.interpreter_access import expose_interpreter_to_workers
from sinas_executor.network import close_all_but

SetUp = TypeVar("SetUp")

# Imported once here so that forked workers don't pay for them on every start; a worker
# running under a dropped uid may not be able to read the interpreter's files at all.
PREIMPORTED_MODULES = (
    "asyncio",
    "base64",
    "collections",
    "concurrent.futures",
    "csv",
    "dataclasses",
    "datetime",
    "decimal",
    "email.utils",
    "enum",
    "fractions",
    "functools",
    "hashlib",
    "hmac",
    "html",
    "http.client",
    "io",
    "itertools",
    "json",
    "logging",
    "math",
    "operator",
    "pathlib",
    "random",
    "re",
    "secrets",
    "statistics",
    "string",
    "struct",
    "tempfile",
    "textwrap",
    "time",
    "typing",
    "unicodedata",
    "urllib.parse",
    "urllib.request",
    "uuid",
    "zlib",
    "httpx",
    "jsonschema",
)
_CONTROL_BUFFER = 1 << 16
# The exit code of a worker whose sandbox could not be made (namespaces, mounts, limits).
SETUP_FAILED = 71


def _preimport() -> None:
    for name in PREIMPORTED_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            continue


def _send(control: socket.socket, message: dict[str, Any]) -> None:
    control.send(json.dumps(message).encode())


class Zygote:
    """The control loop: spawn, kill, and report exits of worker processes."""

    def __init__(self, control: socket.socket) -> None:
        self.control = control
        self.live: set[int] = set()
        # Each worker's memory cgroup, removed once it is reaped (retried while still busy).
        self.cgroups: dict[int, str] = {}
        self.unremoved_cgroups: list[str] = []
        # The next worker, made ahead, and every spare no spawn took (their exits unreported).
        self.spare: spare.Spare | None = None
        self.unclaimed: set[int] = set()
        self.wake_read, self.wake_write = os.pipe()
        os.set_blocking(self.wake_read, False)
        os.set_blocking(self.wake_write, False)

    def run(self) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGCHLD, lambda _signum, _frame: None)
        signal.set_wakeup_fd(self.wake_write)
        selector = selectors.DefaultSelector()
        selector.register(self.control, selectors.EVENT_READ, "control")
        selector.register(self.wake_read, selectors.EVENT_READ, "wake")
        _send(self.control, {"event": "ready", "pid": os.getpid()})
        while True:
            for key, _mask in selector.select():
                if key.data == "wake":
                    self._drain_wakeups()
                    self._reap()
                elif not self._handle_control():
                    self._kill_all()
                    return

    def _drain_wakeups(self) -> None:
        try:
            while os.read(self.wake_read, 512):
                pass
        except BlockingIOError:
            pass

    def _reap(self) -> None:
        while self.live:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            self.live.discard(pid)
            if pid in self.unclaimed:
                self._forget_spare(pid)
                continue
            event: dict[str, Any] = {"event": "exit", "pid": pid}
            if os.WIFSIGNALED(status):
                event["signal"] = os.WTERMSIG(status)
            else:
                event["code"] = os.waitstatus_to_exitcode(status)
            cgroup = self.cgroups.pop(pid, None)
            if cgroup is not None:
                event["memory_limit_reached"] = memory_cgroup.limit_was_reached(cgroup)
                self.unremoved_cgroups.append(cgroup)
            _send(self.control, event)
        self.unremoved_cgroups = [
            path for path in self.unremoved_cgroups if not memory_cgroup.remove(path)
        ]

    def _handle_control(self) -> bool:
        try:
            data, fds, _flags, _addr = socket.recv_fds(self.control, _CONTROL_BUFFER, 4)
        except ConnectionError:
            return False
        if not data:
            for fd in fds:
                os.close(fd)
            return False
        message = json.loads(data)
        if message["op"] == "spawn" and len(fds) == 1:
            self._spawn(message, fds[0])
        elif message["op"] == "prepare" and not fds:
            self._prepare(message)
        elif message["op"] == "kill":
            self._kill(int(message["pid"]))
        else:
            for fd in fds:
                os.close(fd)
        return True

    def _spawn(self, spec: dict[str, Any], channel_fd: int) -> None:
        pid = self._claim_spare(spec, channel_fd)
        if pid is None:
            zygote_pid = os.getpid()
            pid = os.fork()
            if pid == 0:
                _run_worker(spec, lambda: worker.enter_sandbox(spec, channel_fd, zygote_pid))
            self._track(pid, spec)
        os.close(channel_fd)
        _send(self.control, {"event": "spawned", "id": spec["id"], "pid": pid})

    def _claim_spare(self, spec: dict[str, Any], channel_fd: int) -> int | None:
        """The spare's pid once it took this spawn, or None: no spare, or one made for
        another preparation (discarded), or one that ended (reaped as it is)."""
        made, self.spare = self.spare, None
        if made is None:
            return None
        if made.preparation == spare.preparation(spec) and made.claim(spec, channel_fd):
            self.unclaimed.discard(made.pid)
            return made.pid
        self._discard(made)
        return None

    def _prepare(self, message: dict[str, Any]) -> None:
        if self.spare is not None:
            self._discard(self.spare)
        zygote_pid = os.getpid()
        ours, theirs = spare.channel_pair()
        pid = os.fork()
        if pid == 0:
            ours.close()
            _run_spare(message, theirs, zygote_pid)
        theirs.close()
        self.spare = spare.Spare(pid=pid, socket=ours, preparation=spare.preparation(message))
        self.unclaimed.add(pid)
        self._track(pid, message)

    def _track(self, pid: int, spec: dict[str, Any]) -> None:
        self.live.add(pid)
        folder = spec.get("memory_cgroup")
        if folder is not None:
            self.cgroups[pid] = memory_cgroup.worker_cgroup_path(str(folder), pid)

    def _discard(self, made: spare.Spare) -> None:
        """Ends a spare no spawn will take (it stays unclaimed: its exit is not reported)."""
        made.discard()
        self._kill(made.pid)

    def _forget_spare(self, pid: int) -> None:
        self.unclaimed.discard(pid)
        if self.spare is not None and self.spare.pid == pid:
            self.spare.discard()
            self.spare = None
        cgroup = self.cgroups.pop(pid, None)
        if cgroup is not None:
            self.unremoved_cgroups.append(cgroup)

    def _kill(self, pid: int) -> None:
        # Only a child that is not yet reaped: its pid (and session id) can't be reused yet.
        if pid not in self.live:
            return
        for kill in (os.killpg, os.kill):
            try:
                kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                continue

    def _kill_all(self) -> None:
        for pid in list(self.live):
            self._kill(pid)


def _run_worker(spec: dict[str, Any], set_up: Callable[[], None]) -> NoReturn:
    """A forked worker's life: `set_up` makes its sandbox, then it serves its runs."""
    _set_up(set_up)
    code = 0
    try:
        private = namespaces.PRIVATE_FOLDERS if spec.get("namespaces", True) else ()
        worker.serve(str(spec["scratch"]), private)
    except BaseException:
        code = 70
    os._exit(code)


def _run_spare(message: dict[str, Any], claims: socket.socket, zygote_pid: int) -> NoReturn:
    """A spare's life: its sandbox made up to its run, then a worker once a spawn takes it."""
    # Nothing of the zygote's (its control socket, its selector) waits with it.
    close_all_but(claims.fileno())

    def begin() -> namespaces.Prepared | None:
        prepared = worker.begin_sandbox(message, zygote_pid)
        if prepared is not None:
            # Before any spawn takes it: a failure is seen now, not by a run.
            prepared.await_network()
        return prepared

    prepared = _set_up(begin)
    claim = spare.await_claim(claims)
    if claim is None:
        os._exit(0)
    spec, channel_fd = claim
    _run_worker(spec, lambda: worker.finish_sandbox(spec, channel_fd, prepared))


def _set_up(step: Callable[[], SetUp]) -> SetUp:
    """A step of a worker's sandbox, or its end with SETUP_FAILED, said in the executor's log
    (still its stderr): why no worker could start here."""
    try:
        return step()
    except BaseException as exc:
        _report_setup_failure(exc)
        os._exit(SETUP_FAILED)


def _report_setup_failure(exc: BaseException) -> None:
    line = {"level": "error", "message": "sandbox worker set-up failed", "error": repr(exc)}
    with contextlib.suppress(OSError):
        os.write(2, json.dumps(line).encode() + b"\n")


def main(argv: list[str]) -> int:
    # execve made us dumpable again. Non-dumpable, and every worker with us (fork inherits it):
    # a function's code can't ptrace or read the memory of the zygote (which forks every
    # later worker) or of another worker, even when all of them share the executor's uid.
    # Workers that drop to their own uid would be anyway: a uid change resets the flag to
    # fs.suid_dumpable, 0 by default. A worker never reads its own /proc/self entries, which
    # then become root's.
    make_non_dumpable()
    control = socket.socket(fileno=int(argv[1]))
    worker_pdeathsig(int(argv[2]))
    expose_interpreter_to_workers()
    _preimport()
    Zygote(control).run()
    return 0


def worker_pdeathsig(executor_pid: int) -> None:
    """The zygote dies with the executor, and its workers die with it."""
    worker.set_parent_death_signal()
    if os.getppid() != executor_pid:
        os._exit(1)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
