"""Logs of the embedded servers and the services are readable by their owner only."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from sinas_devstack.embedded import open_private_log


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_log_is_private_whatever_the_umask(tmp_path: Path) -> None:
    previous = os.umask(0)
    try:
        with open_private_log(tmp_path / "new.log") as log:
            log.write(b"line\n")
    finally:
        os.umask(previous)
    assert mode(tmp_path / "new.log") == 0o600


def test_a_log_kept_from_before_is_closed_up_and_appended_to(tmp_path: Path) -> None:
    kept = tmp_path / "kept.log"
    kept.write_bytes(b"old\n")
    kept.chmod(0o644)
    with open_private_log(kept) as log:
        log.write(b"new\n")
    assert mode(kept) == 0o600
    assert kept.read_bytes() == b"old\nnew\n"
