"""Runs `python <args>` as an executor with less than root (tests of the sandbox without it).

    python unprivileged.py nobody <args>                  as uid 65534
    python unprivileged.py root-without-sys-admin <args>  as root without CAP_SYS_ADMIN, as
                                                          a container's default set has it

Started by a user other than root, it runs `python <args>` as that user in both modes.
Test modules use the `rerun_unprivileged` fixture to run their own tests again so.
"""

from __future__ import annotations

import ctypes
import os
import sys

from sinas_executor.interpreter_access import expose_interpreter_to_workers

NOBODY = 65534
PR_CAPBSET_DROP = 24
CAP_SYS_ADMIN = 21


def main() -> None:
    mode, args = sys.argv[1], sys.argv[2:]
    if os.geteuid() == 0:
        # The interpreter may live in a folder only root may enter, as the zygote's may.
        expose_interpreter_to_workers()
        if mode == "nobody":
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
        else:
            # Out of the bounding set, it is out of the next program's capabilities too.
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(PR_CAPBSET_DROP, CAP_SYS_ADMIN, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")
    print(f"running as uid {os.geteuid()} ({mode})", flush=True)
    os.execv(sys.executable, [sys.executable, *args])


if __name__ == "__main__":
    main()
