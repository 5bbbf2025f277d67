"""Code that runs inside a sandboxed worker process, after the zygote forked it.

`enter_sandbox` hardens the fresh child (session, parent-death signal, limits, scrubbed
environment, private scratch folder, dropped uid, no inherited descriptors); `serve` then
answers run requests for the one function version this worker is bound to.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import ctypes
import inspect
import linecache
import os
import resource
import shutil
import signal
import socket
import tempfile
import threading
import traceback
import types
from collections.abc import Callable
from typing import Any

from sinas_common.jsoncodec import dump_json
from sinas_executor import memory_cgroup, namespaces
from sinas_executor.framing import FrameError, encode_frame, read_frame_blocking
from sinas_executor.network import Network

# The worker's end of its channel always lands on this descriptor.
CHANNEL_FD = 3
PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38
_MIB = 1024 * 1024
SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"


def worker_environment(scratch: str) -> dict[str, str]:
    """The whole environment of a worker, whatever the executor's holds: no variable whose
    name or value is a URL, key, secret, token or password, and the run's scratch folder as
    HOME and TMPDIR (and as its working directory). The zygote, the only other process
    whose environment a worker starts from, gets ZYGOTE_ENVIRONMENT (see `sandbox`)."""
    return {"PATH": SAFE_PATH, "HOME": scratch, "TMPDIR": scratch, "LANG": "C.UTF-8"}


def _prctl(option: int, value: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, value, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}) failed")


def set_parent_death_signal() -> None:
    """Asks the kernel to SIGKILL this process when its parent dies."""
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def wipe_folder(path: str, keep: str | None = None) -> None:
    """Removes everything inside `path`, keeping the folder itself and the folders on the way
    to `keep` (a mount point: the scratch folder may be in /tmp)."""
    with os.scandir(path) as entries:
        for entry in entries:
            if keep is not None and (keep == entry.path or keep.startswith(entry.path + "/")):
                if keep != entry.path:
                    wipe_folder(entry.path, keep)
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)


def _prepare_scratch(path: str, uid: int | None, gid: int | None) -> None:
    # Whatever a previous worker of this slot left behind belongs to another key: start empty.
    shutil.rmtree(path, ignore_errors=True)
    os.mkdir(path, 0o700)
    if uid is not None and gid is not None:
        os.chown(path, uid, gid)
    os.chmod(path, 0o700)


def _set_limits(limits: dict[str, int], *, counted_alone: bool) -> None:
    """`counted_alone`: the worker's processes are counted apart from any other's (its own
    user namespace or uid); otherwise the process cap would count the executor's user's."""
    memory = limits["memory_mb"] * _MIB
    cpu = limits["cpu_seconds"]
    file_size = limits["file_size_mb"] * _MIB
    open_files = limits["open_files"]
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    # The soft limit sends SIGXCPU, which names the limit in the run's error; a process
    # that ignores it gets SIGKILL a second later at the hard one.
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    if counted_alone:
        # Counted per uid in a user namespace: this worker's own, in its namespace or as root.
        processes = limits["max_processes"]
        resource.setrlimit(resource.RLIMIT_NPROC, (processes, processes))
    resource.setrlimit(resource.RLIMIT_FSIZE, (file_size, file_size))
    resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def enter_sandbox(spec: dict[str, Any], channel_fd: int, zygote_pid: int) -> None:
    """Hardens a freshly forked child; afterwards it holds only its channel on CHANNEL_FD."""
    finish_sandbox(spec, channel_fd, begin_sandbox(spec, zygote_pid))


def begin_sandbox(spec: dict[str, Any], zygote_pid: int) -> namespaces.Prepared | None:
    """What a worker's sandbox needs of its spec before its run is known (a spare's message
    has no scratch folder): its session, cgroup and namespaces (`namespaces.prepare`)."""
    for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGPIPE):
        signal.signal(signum, signal.SIG_DFL)
    signal.set_wakeup_fd(-1)
    os.setsid()
    set_parent_death_signal()
    if os.getppid() != zygote_pid:
        # The zygote died before the death signal was armed.
        os._exit(1)
    cgroups: str | None = spec.get("memory_cgroup")
    if cgroups is not None:
        # Before anything else is started: every process of the run is born inside it.
        memory_cgroup.enter_worker_cgroup(cgroups, spec["limits"]["cgroup_memory_mb"] * _MIB)
    if not spec.get("namespaces", True):
        return None
    network = Network.from_message(spec.get("network"))
    return namespaces.prepare(spec.get("uid"), spec.get("gid"), network)


def finish_sandbox(
    spec: dict[str, Any], channel_fd: int, prepared: namespaces.Prepared | None
) -> None:
    """The rest of `enter_sandbox`, once the run's scratch folder and channel are known."""
    uid: int | None = spec.get("uid")
    gid: int | None = spec.get("gid")
    scratch = str(spec["scratch"])
    if prepared is not None:
        # Returns in the function's own process, in its own namespaces, on its own tmpfs.
        namespaces.enter(namespaces.Isolation.from_spec(spec), prepared)
    else:
        _prepare_scratch(scratch, uid, gid)
    os.umask(0o077)
    os.environ.clear()
    os.environ.update(worker_environment(scratch))
    # Computed afresh from TMPDIR, should anything in the zygote have asked for it already.
    tempfile.tempdir = None
    os.chdir(scratch)
    _set_limits(spec["limits"], counted_alone=spec.get("namespaces", True) or uid is not None)
    # (Already so where the namespaces were made under this uid.)
    if uid is not None and gid is not None and os.geteuid() != uid:
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
    _prctl(PR_SET_NO_NEW_PRIVS, 1)
    if channel_fd != CHANNEL_FD:
        os.dup2(channel_fd, CHANNEL_FD)
    devnull = os.open(os.devnull, os.O_RDWR)
    for target in (0, 1, 2):
        os.dup2(devnull, target)
    os.closerange(CHANNEL_FD + 1, resource.getrlimit(resource.RLIMIT_NOFILE)[1] + 1024)


class _LoadedFunction:
    """The function module as executed once in this worker."""

    def __init__(self, code: str, filename: str) -> None:
        self.handler: Callable[..., Any] | None = None
        self.error: str | None = None
        self.traceback = ""
        # Registering the source lets tracebacks show the function's own lines.
        linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
        module = types.ModuleType("sinas_function")
        module.__file__ = filename
        try:
            exec(compile(code, filename, "exec"), module.__dict__)
        except BaseException as exc:
            self.error, self.traceback = _describe(exc, skip_frames=1)
            return
        handler = module.__dict__.get("handler")
        if not callable(handler):
            self.error = "The function code must define handler(input_data, context)"
            return
        self.handler = handler


def _describe(exc: BaseException, *, skip_frames: int) -> tuple[str, str]:
    tb = exc.__traceback__
    for _ in range(skip_frames):
        if tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
    text = "".join(traceback.format_exception(type(exc), exc, tb))
    return f"{type(exc).__name__}: {exc}", text


def _call(handler: Callable[..., Any], input_data: Any, context: dict[str, Any]) -> Any:
    if inspect.iscoroutinefunction(handler):
        return asyncio.run(handler(input_data, context))
    result = handler(input_data, context)
    if inspect.iscoroutine(result):
        return asyncio.run(result)
    return result


def _run(loaded: _LoadedFunction, request: dict[str, Any]) -> dict[str, Any]:
    if loaded.handler is None:
        return {"error": loaded.error, "traceback": loaded.traceback}
    try:
        output = _call(loaded.handler, request["input"], request["context"])
    except BaseException as exc:
        error, text = _describe(exc, skip_frames=2)
        return {"error": error, "traceback": text}
    try:
        dump_json(output)
    except (TypeError, ValueError) as exc:
        return {
            "error": f"Output validation failed: output is not JSON serialisable ({exc})",
            "traceback": "",
        }
    return {"output": output}


def _input_over(channel: socket.socket) -> Callable[..., Any]:
    """`input()` for functions: asks the executor and blocks until the answer comes.

    A string answer comes back as the string, like the built-in; any other JSON value comes
    back as that value. The executor ends this process when the execution is cancelled or its
    input deadline passes, so a closed channel can only mean the run is over.
    """

    def ask(prompt: object = "") -> Any:
        channel.sendall(encode_frame({"op": "input", "prompt": str(prompt)}))
        answer = read_frame_blocking(channel)
        if not isinstance(answer, dict) or answer.get("op") != "input_reply":
            raise EOFError("no input will come: the execution was ended")
        return answer.get("input")

    return ask


def _usage() -> dict[str, float]:
    """What this worker has used so far, for the pool's decision to retire it: CPU seconds,
    and its peak resident memory in MiB (`ru_maxrss` is in KiB on Linux)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"cpu_seconds": usage.ru_utime + usage.ru_stime, "peak_rss_mb": usage.ru_maxrss / 1024}


def _left_behind() -> bool:
    """Whether anything but this thread, this process and its namespace's init still runs
    (only asked in a worker with a PID namespace of its own: /proc then shows just it)."""
    if threading.active_count() > 1:
        return True
    own = {1, os.getpid()}
    return any(name.isdigit() and int(name) not in own for name in os.listdir("/proc"))


def _free_inodes(path: str) -> int:
    return os.statvfs(path).f_ffree


def serve(scratch: str, private_folders: tuple[str, ...] = ()) -> None:
    """Answers requests on CHANNEL_FD until the executor closes it; after each run, empties
    the scratch folder and `private_folders` (the worker's own /tmp, /var/tmp, /dev/shm)."""
    channel = socket.socket(fileno=CHANNEL_FD)
    builtins.input = _input_over(channel)
    loaded: _LoadedFunction | None = None
    clean = _free_inodes(scratch) if private_folders else None
    while True:
        message = read_frame_blocking(channel)
        if message is None:
            return
        if message["op"] == "load":
            loaded = _LoadedFunction(str(message["code"]), str(message["filename"]))
            continue
        if loaded is None:
            reply: dict[str, Any] = {"error": "No function loaded", "traceback": ""}
        else:
            os.chdir(scratch)
            reply = _run(loaded, message)
        # All of these are one tmpfs, whose folders and mount points the function can't
        # remove: while its count of free inodes is unchanged, nothing was left in any of them.
        if clean is None or _free_inodes(scratch) != clean:
            wipe_folder(scratch)
            for folder in private_folders:
                wipe_folder(folder, keep=scratch)
            clean = _free_inodes(scratch) if private_folders else None
        reply.update(_usage())
        if private_folders and _left_behind():
            # A thread or process the run started outlives it only until the executor, told
            # so, kills this worker and with it its PID namespace: no later run meets it.
            reply["left_behind"] = True
        try:
            frame = encode_frame(reply)
        except (TypeError, ValueError, FrameError) as exc:
            frame = encode_frame({"error": f"Output could not be sent: {exc}", **_usage()})
        channel.sendall(frame)
