"""One memory cgroup per worker, where cgroup v1's memory controller is ours to write.

A run's processes together stay within one limit there: per-process address-space limits
alone let a run that forks many processes hold many times its limit. Under cgroup v2, or
where the hierarchy is not writable (not root, most containers), the executor keeps the
per-process limits plus the process cap, and says so at start and on its /health.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from pathlib import Path

from sinas_executor.namespaces import write_control_file

MEMORY_HIERARCHY = Path("/sys/fs/cgroup/memory")
_OWN_CGROUPS = Path("/proc/self/cgroup")


def _own_memory_path() -> str | None:
    """This process's cgroup in the v1 memory hierarchy ("/" at its top), if it has one."""
    try:
        lines = _OWN_CGROUPS.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _id, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return path
    return None


def create_executor_folder(name: str) -> str | None:
    """Makes the folder that holds this executor's worker cgroups; None where none can be."""
    own = _own_memory_path()
    if own is None or not (MEMORY_HIERARCHY / "memory.limit_in_bytes").exists():
        return None
    folder = MEMORY_HIERARCHY / own.lstrip("/") / name
    try:
        folder.mkdir(mode=0o755)
    except OSError:
        return None
    return str(folder)


def enter_worker_cgroup(folder: str, limit_bytes: int) -> str:
    """Called in a fresh worker, still privileged: a cgroup of its own with `limit_bytes`
    for it and every process it starts. Returns the cgroup's path."""
    path = os.path.join(folder, f"worker-{os.getpid()}")
    os.mkdir(path, 0o755)
    write_control_file(os.path.join(path, "memory.limit_in_bytes"), str(limit_bytes))
    swap_limit = os.path.join(path, "memory.memsw.limit_in_bytes")
    if os.path.exists(swap_limit):
        # Memory plus swap, the same: a run can't swap out past its limit either.
        write_control_file(swap_limit, str(limit_bytes))
    write_control_file(os.path.join(path, "cgroup.procs"), str(os.getpid()))
    return path


def worker_cgroup_path(folder: str, pid: int) -> str:
    return os.path.join(folder, f"worker-{pid}")


def limit_was_reached(path: str) -> bool:
    """Whether the kernel killed a process of this cgroup for its memory limit."""
    try:
        text = Path(path, "memory.oom_control").read_text()
    except OSError:
        return False
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == "oom_kill":
            return int(value) > 0
    return False


def remove(path: str) -> bool:
    """Removes an empty cgroup; False while a task of it still lives (retried later)."""
    try:
        os.rmdir(path)
    except FileNotFoundError:
        return True
    except OSError as exc:
        # Anything but "still busy" won't change by trying again.
        return exc.errno != errno.EBUSY
    return True


def remove_executor_folder(folder: str, *, timeout: float = 5.0) -> bool:
    """At the pool's close, once its workers were killed: their cgroups, then the folder.
    A killed worker's tasks leave their cgroup a moment after the kill: retried until then."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(folder):
                if entry.is_dir(follow_symlinks=False):
                    remove(entry.path)
        if remove(folder) and not os.path.exists(folder):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
