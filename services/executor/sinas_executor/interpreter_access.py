"""Lets workers under dropped uids read the interpreter when it lives in a root-only folder.

A Python installed under a folder that only root may enter (a per-user install in /root, say)
can't import anything once a worker drops to its own uid. Rather than run workers as root, the
zygote takes a private mount namespace in which each such blocking folder is covered by an
empty tmpfs that others may traverse but not list, holding read-only bind mounts of just the
children on the interpreter's paths. Those children keep their own permissions, so nothing
becomes readable that their modes don't already allow; the rest of the blocking folder stays
hidden from workers. Nothing changes outside the zygote's namespace.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import stat
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

logger = logging.getLogger(__name__)

CLONE_NEWNS = 0x00020000
MS_RDONLY = 1
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MNT_DETACH = 2


def interpreter_paths() -> set[Path]:
    """Every folder the interpreter may import from."""
    candidates = [sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(sys.executable)]
    candidates += [entry for entry in sys.path if entry]
    return {Path(os.path.realpath(path)) for path in candidates if os.path.isdir(path)}


def _blocks_others(folder: Path) -> bool:
    return not folder.stat().st_mode & stat.S_IXOTH


def blocked_children(paths: Iterable[Path]) -> dict[Path, set[str]]:
    """For each folder others can't traverse, the names of its children the paths go through."""
    blocked: dict[Path, set[str]] = {}
    for path in paths:
        parts = path.parts
        for depth in range(1, len(parts)):
            folder = Path(*parts[:depth])
            if _blocks_others(folder):
                blocked.setdefault(folder, set()).add(parts[depth])
                break
    return blocked


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _mount(libc: ctypes.CDLL, source: str, target: str, fstype: str, flags: int, data: str) -> None:
    _check(
        libc.mount(source.encode(), target.encode(), fstype.encode(), flags, data.encode()),
        f"mount {target}",
    )


def _cover(libc: ctypes.CDLL, folder: Path, children: set[str]) -> None:
    staging = Path(tempfile.mkdtemp(prefix="sinas-interp-"))
    try:
        staged: dict[str, Path] = {}
        for name in sorted(children):
            source = folder / name
            target = staging / name
            if source.is_dir():
                target.mkdir()
            else:
                target.touch()
            _mount(libc, str(source), str(target), "", MS_BIND | MS_REC, "")
            staged[name] = target
        _mount(libc, "sinas-interp", str(folder), "tmpfs", 0, "mode=0711,size=1m")
        for name, source in staged.items():
            target = folder / name
            if source.is_dir():
                target.mkdir(mode=0o755)
            else:
                target.touch(mode=0o644)
            _mount(libc, str(source), str(target), "", MS_BIND | MS_REC, "")
            _mount(libc, "", str(target), "", MS_BIND | MS_REMOUNT | MS_RDONLY, "")
            _check(libc.umount2(str(source).encode(), MNT_DETACH), f"umount {source}")
    finally:
        for entry in staging.iterdir():
            entry.rmdir() if entry.is_dir() else entry.unlink()
        staging.rmdir()


def expose_interpreter_to_workers() -> None:
    """Called once in the zygote, as root, before any worker is forked. Never raises: without
    it, workers under dropped uids can still use every module the zygote pre-imported."""
    if os.geteuid() != 0:
        return
    blocked = blocked_children(interpreter_paths())
    if not blocked:
        return
    libc = _libc()
    try:
        _check(libc.unshare(CLONE_NEWNS), "unshare")
        # Keep every mount made here inside this namespace.
        _mount(libc, "", "/", "", MS_REC | MS_PRIVATE, "")
        for folder, children in blocked.items():
            _cover(libc, folder, children)
    except OSError as exc:
        logger.warning(
            "interpreter folder not readable by sandbox uids",
            extra={
                "action": "expose_interpreter",
                "error": str(exc),
                "folders": sorted(map(str, blocked)),
            },
        )
