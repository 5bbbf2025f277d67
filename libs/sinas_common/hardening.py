"""Process hardening every service applies to itself first thing at start."""

from __future__ import annotations

import ctypes
import logging
import sys

logger = logging.getLogger(__name__)

PR_SET_DUMPABLE = 4
PR_GET_DUMPABLE = 3


def make_non_dumpable() -> bool:
    """Marks this process non-dumpable; True when it is.

    The kernel then makes /proc/<pid>/environ, mem, maps and fd root's, refuses ptrace from
    any process of the same uid without CAP_SYS_PTRACE, and writes no core dump: the settings
    and keys in our environment and memory stay ours even if a function runs as our uid.
    Inherited across fork, reset by execve. Only Linux has it; elsewhere (and if prctl
    fails) the failure is logged and the service runs on.
    """
    if not sys.platform.startswith("linux"):
        logger.warning(
            "can't mark the process non-dumpable on this platform",
            extra={"action": "harden", "platform": sys.platform},
        )
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        logger.warning(
            "prctl(PR_SET_DUMPABLE) failed", extra={"action": "harden", "errno": ctypes.get_errno()}
        )
        return False
    return True


def is_dumpable() -> bool:
    """What PR_GET_DUMPABLE says of this process (always True off Linux)."""
    if not sys.platform.startswith("linux"):
        return True
    return bool(ctypes.CDLL(None).prctl(PR_GET_DUMPABLE, 0, 0, 0, 0))
