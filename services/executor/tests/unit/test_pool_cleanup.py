"""The pool's folder goes away at close, whatever a function did to keep its files."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from sinas_executor.pool import PoolLimits, WorkerPool, remove_tree

UNPRIVILEGED = 65534


def _lock_in(top: Path) -> None:
    """What a hostile function does to keep its files: folders it can't list or write."""
    locked = top / "locked"
    (locked / "inner" / "deeper").mkdir(parents=True)
    (locked / "inner" / "deeper" / "kept.txt").write_text("left behind")
    (locked / "inner" / "kept.txt").write_text("left behind")
    os.symlink("/etc/hostname", locked / "link")
    os.chmod(locked / "inner" / "deeper", 0)
    os.chmod(locked / "inner", 0)
    os.chmod(locked, 0o500)


def _remove_as_owner(top: Path) -> int:
    """Locks then removes `top` in a fork; as root, under an unprivileged uid, for whom the
    modes are binding (root ignores them). Returns the child's exit code: 0 when removed."""
    child = os.fork()
    if child == 0:
        code = 1
        try:
            if os.geteuid() == 0:
                os.setgroups([])
                os.setgid(UNPRIVILEGED)
                os.setuid(UNPRIVILEGED)
            top.mkdir()
            _lock_in(top)
            remove_tree(str(top))
            code = 0 if not top.exists() else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(child, 0)
    return os.waitstatus_to_exitcode(status)


def _exists(path: str) -> bool:
    return os.path.lexists(path)


def test_remove_tree_removes_folders_made_unreadable_and_unwritable() -> None:
    base = tempfile.mkdtemp(prefix="sinas-cleanup-")
    os.chmod(base, 0o777)
    try:
        target = Path(base) / "pool"
        hostname = os.stat("/etc/hostname")
        assert _remove_as_owner(target) == 0
        assert not target.exists()
        # A symlink is removed, never followed: its target keeps its mode.
        assert os.stat("/etc/hostname").st_mode == hostname.st_mode
    finally:
        os.chmod(base, stat.S_IRWXU)
        remove_tree(base)


async def test_close_removes_the_pools_folder_and_the_root_it_made(tmp_path: Path) -> None:
    root = tmp_path / "sandbox"
    pool = WorkerPool(PoolLimits(concurrency=1, root=str(root)))
    await pool.start()
    own = pool.root
    assert own is not None and os.path.dirname(own) == str(root)
    await pool.close()
    assert not _exists(own)
    assert not _exists(str(root))


async def test_close_keeps_a_shared_root_another_executor_uses(tmp_path: Path) -> None:
    root = tmp_path / "sandbox"
    first = WorkerPool(PoolLimits(concurrency=1, root=str(root)))
    second = WorkerPool(PoolLimits(concurrency=1, root=str(root)))
    await first.start()
    await second.start()
    assert first.root != second.root
    await first.close()
    assert second.root is not None and _exists(second.root)
    await second.close()
    assert not _exists(str(root))
