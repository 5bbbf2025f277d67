"""`python -m sinas_devstack.run_as UID MODULE [ARGS]`: a service as an unprivileged uid.

Started as root, it drops to UID (group UID, no others) and becomes `python -m MODULE`: how
tests run the executor as a developer's `make run` would, without a second account. The
interpreter may live in a folder only root may enter; it is made visible first, in a mount
namespace of this process's own, as the executor's zygote does for its workers.

`UID` may be `no-user-namespaces`: the service then runs as a uid other than root on a
"machine" that allows no user namespaces (a user namespace of its own whose limit of nested
ones is 0), the case where the executor can't isolate its workers at all.
"""

from __future__ import annotations

import ctypes
import os
import sys

from sinas_executor.interpreter_access import expose_interpreter_to_workers

NO_USER_NAMESPACES = "no-user-namespaces"
CLONE_NEWUSER = 0x10000000
# The uid this process has inside its own user namespace: its root's, outside.
INSIDE_UID = 1000


def _write(path: str, text: str) -> None:
    with open(path, "w", encoding="ascii") as file:
        file.write(text)


def _forbid_user_namespaces() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    outer_uid, outer_gid = os.geteuid(), os.getegid()
    if libc.unshare(CLONE_NEWUSER) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWUSER)")
    _write("/proc/self/uid_map", f"{INSIDE_UID} {outer_uid} 1\n")
    _write("/proc/self/setgroups", "deny")
    _write("/proc/self/gid_map", f"{INSIDE_UID} {outer_gid} 1\n")
    # Still holding the namespace creator's capabilities in it, until the exec below drops
    # them (the uid inside is not 0).
    _write("/proc/sys/user/max_user_namespaces", "0")


def main(argv: list[str]) -> None:
    who, module, args = argv[1], argv[2], argv[3:]
    if who == NO_USER_NAMESPACES:
        # Root or not: any uid may make a user namespace (where this machine allows any).
        _forbid_user_namespaces()
    elif os.geteuid() == 0:
        expose_interpreter_to_workers()
        os.setgroups([])
        os.setgid(int(who))
        os.setuid(int(who))
    os.execv(sys.executable, [sys.executable, "-m", module, *args])


if __name__ == "__main__":
    main(sys.argv)
