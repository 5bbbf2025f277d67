"""Resident memory of processes from /proc: a process's peak (VmHWM) and current RSS, its
proportional share (PSS), and its children."""

from __future__ import annotations

import contextlib
from pathlib import Path

PROC = Path("/proc")


def _status_kb(pid: int, field: str) -> int | None:
    with contextlib.suppress(OSError):
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    return None


def peak_rss_mb(pid: int) -> float | None:
    """The kernel's high-water mark of the process's resident set, in MiB."""
    kb = _status_kb(pid, "VmHWM")
    return None if kb is None else kb / 1024


def rss_mb(pid: int) -> float | None:
    kb = _status_kb(pid, "VmRSS")
    return None if kb is None else kb / 1024


def pss_mb(pid: int) -> float | None:
    """Proportional set size: pages shared with the zygote count by their share only."""
    with contextlib.suppress(OSError):
        for line in (PROC / str(pid) / "smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    return None


def command_name(pid: int) -> str:
    with contextlib.suppress(OSError):
        return (PROC / str(pid) / "comm").read_text().strip()
    return ""


def children(pid: int) -> list[int]:
    """Live child processes of `pid`, from each process's parent id."""
    found: list[int] = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text()
            # The command name is parenthesised and may hold spaces; fields follow the last ')'.
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            if parent == pid:
                found.append(int(entry.name))
    return sorted(found)


def descendants(pid: int) -> list[int]:
    """Every live process below `pid`: children, their children, and so on."""
    found: list[int] = []
    for child in children(pid):
        found += [child, *descendants(child)]
    return found
