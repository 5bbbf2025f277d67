"""A non-dumpable process: its /proc entries become root's, and its forks inherit that."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import time
from collections.abc import Iterator

import pytest

from sinas_common.hardening import PR_SET_DUMPABLE, is_dumpable, make_non_dumpable

UNPRIVILEGED = 65534


def _child(harden: bool, report: int) -> None:
    """Runs in the fork: an ordinary uid (when we are root), hardened or not, with a fork of
    its own; writes both pids and then waits to be killed."""
    try:
        if os.geteuid() == 0:
            os.setgroups([])
            os.setgid(UNPRIVILEGED)
            os.setuid(UNPRIVILEGED)
            # The uid change itself made us non-dumpable (fs.suid_dumpable): start from the
            # ordinary state a service has after execve.
            ctypes.CDLL(None).prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)
        if harden:
            assert make_non_dumpable()
            assert not is_dumpable()
        grandchild = os.fork()
        if grandchild == 0:
            time.sleep(60)
            os._exit(0)
        os.write(report, f"{os.getpid()} {grandchild}\n".encode())
        time.sleep(60)
    finally:
        os._exit(0)


@pytest.fixture
def spawn() -> Iterator[list[int]]:
    pids: list[int] = []
    yield pids
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    # Only the children are ours to reap; each grandchild goes to init when its parent dies.
    for pid in pids[::2]:
        os.waitpid(pid, 0)


def _start(harden: bool, pids: list[int]) -> tuple[int, int]:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        _child(harden, write)
    os.close(write)
    with os.fdopen(read) as pipe:
        child, grandchild = (int(part) for part in pipe.readline().split())
    pids.extend([child, grandchild])
    return child, grandchild


def _owner(pid: int) -> int:
    return os.stat(f"/proc/{pid}/environ").st_uid


@pytest.mark.parametrize("harden", [True, False])
def test_non_dumpable_hands_proc_entries_to_root_and_is_inherited(
    spawn: list[int], harden: bool
) -> None:
    uid = UNPRIVILEGED if os.geteuid() == 0 else os.geteuid()
    child, grandchild = _start(harden, spawn)
    # An ordinary process owns its /proc entries; a non-dumpable one's belong to root, so a
    # process of its uid (another worker, say) can't read its environ or memory.
    expected = 0 if harden else uid
    assert (_owner(child), _owner(grandchild)) == (expected, expected)
