"""Hostile functions against a worker's own namespaces: processes, files, hidden paths, mounts."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from sinas_executor.models import RunRequest
from sinas_executor.pool import PoolLimits, SandboxRunner, WorkerPool
from sinas_executor.sandbox import SandboxUnavailable

MakeRequest = Callable[..., RunRequest]
# Set by `unprivileged.py` for the copy of this module it runs under an unprivileged uid: a
# folder outside every private mount, made by root for that uid, holding a secret.
HIDDEN_ENV = "SINAS_TEST_HIDDEN_FOLDER"
# Likewise a folder anyone may write to, outside the worker's own tmpfs.
OPEN_ENV = "SINAS_TEST_OPEN_FOLDER"
SECRET = "the executor's own secret"


def code(source: str) -> str:
    return textwrap.dedent(source)


@pytest.fixture
def hidden_folder() -> Iterator[Path]:
    """A folder with a world-readable secret, outside /tmp, /var/tmp and /dev/shm."""
    given = os.environ.get(HIDDEN_ENV)
    if given:
        yield Path(given)
        return
    folder = Path(tempfile.mkdtemp(prefix="sinas-hidden-", dir="/run"))
    try:
        make_hidden_folder(folder)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def open_folder() -> Iterator[Path]:
    given = os.environ.get(OPEN_ENV)
    if given:
        yield Path(given)
        return
    folder = Path(tempfile.mkdtemp(prefix="sinas-open-", dir="/run"))
    folder.chmod(0o1777)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def make_hidden_folder(folder: Path) -> None:
    folder.chmod(0o755)
    (folder / "secret.txt").write_text(SECRET)
    (folder / "secret.txt").chmod(0o644)
    # The sandbox root lives here too: other workers' folders must not be in view either.
    (folder / "sandbox").mkdir(mode=0o755)


@pytest.fixture
async def hiding_pool(hidden_folder: Path) -> AsyncIterator[WorkerPool]:
    pool = WorkerPool(
        PoolLimits(
            concurrency=3,
            max_runs=3,
            memory_mb=256,
            cpu_seconds=60,
            disk_mb=16,
            root=str(hidden_folder / "sandbox"),
            hide_paths=(str(hidden_folder),),
        )
    )
    await pool.start()
    yield pool
    await pool.close()


@pytest.fixture
def hiding_runner(hiding_pool: WorkerPool) -> SandboxRunner:
    return SandboxRunner(hiding_pool)


async def test_a_worker_sees_only_its_own_processes(
    runner: SandboxRunner, make_request: MakeRequest
) -> None:
    result = await runner.run(
        make_request(
            code("""
                import os, subprocess

                def handler(input_data, context):
                    child = subprocess.Popen(["sleep", "5"])
                    pids = sorted(int(name) for name in os.listdir("/proc") if name.isdigit())
                    child.kill()
                    child.wait()
                    return {"pids": pids, "me": os.getpid(), "child": child.pid}
            """)
        )
    )
    assert result.error is None, result.traceback
    # Its namespace's init, itself and its own child: not the executor, nor the test itself.
    assert result.output["pids"] == sorted({1, result.output["me"], result.output["child"]})


LEAVE_BEHIND = code("""
    import os

    def handler(input_data, context):
        read, write = os.pipe()
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                os.close(read)
                os.write(write, b"x")
                os.execv("/bin/sleep", ["sleep", input_data["marker"]])
            os._exit(0)
        os.close(write)
        os.wait()
        return os.read(read, 1).decode()
""")


def _marked(marker: str) -> list[int]:
    """Pids (as the test sees them) of processes whose command line holds `marker`."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{name}/cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline:
            found.append(int(name))
    return found


async def _within(seconds: float, condition: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def _gone(marker: str) -> bool:
    return await _within(5.0, lambda: not _marked(marker))


async def test_a_process_left_behind_ends_with_the_run(
    pool: WorkerPool, runner: SandboxRunner, make_request: MakeRequest
) -> None:
    # A sleep length no other process has: how the test finds the one the function left.
    marker = f"{3000 + uuid.uuid4().int % 1000}.{uuid.uuid4().int % 10**6:06d}"
    request = make_request(LEAVE_BEHIND, input_data={"marker": marker})
    result = await runner.run(request)
    assert result.output == "x", result.traceback
    # Detached into its own session, it still ends with the run: its worker is killed, and
    # with it the worker's PID namespace, instead of serving the next run beside it.
    assert await _gone(marker)
    await runner.run(request)
    assert pool.started_workers == 2


async def test_a_thread_left_behind_ends_with_the_run(
    pool: WorkerPool, runner: SandboxRunner, make_request: MakeRequest
) -> None:
    lingering = code("""
        import os, threading, time

        def handler(input_data, context):
            if input_data.get("start"):
                threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
            return {"threads": threading.active_count(), "pid": os.getpid()}
    """)
    first = await runner.run(make_request(lingering, input_data={"start": True}))
    second = await runner.run(make_request(lingering))
    assert first.output["threads"] == 2, first.traceback
    # A fresh worker: the thread could have watched (or changed) what the next run does.
    assert second.output["threads"] == 1
    assert pool.started_workers == 2


async def test_a_process_left_behind_ends_when_its_worker_is_killed(
    runner: SandboxRunner, make_request: MakeRequest
) -> None:
    marker = f"{4000 + uuid.uuid4().int % 1000}.{uuid.uuid4().int % 10**6:06d}"
    timed_out = await runner.run(
        make_request(
            LEAVE_BEHIND + "\nimport time\n_run = handler\n"
            "def handler(input_data, context):\n"
            "    _run(input_data, context)\n"
            "    time.sleep(60)\n",
            input_data={"marker": marker},
            timeout_seconds=2,
        )
    )
    assert timed_out.timed_out
    assert await _gone(marker)


TMP_PROBE = code("""
    import os

    FOLDERS = ("/tmp", "/var/tmp", "/dev/shm")

    def handler(input_data, context):
        name = input_data["name"]
        if input_data.get("write"):
            for folder in FOLDERS:
                with open(os.path.join(folder, name), "w") as f:
                    f.write("user one's data")
        return [folder for folder in FOLDERS if os.path.exists(os.path.join(folder, name))]
""")


def _on_host(name: str, folders: list[str]) -> list[str]:
    return [folder for folder in folders if os.path.exists(os.path.join(folder, name))]


async def test_tmp_files_reach_neither_the_next_worker_nor_the_next_run(
    pool: WorkerPool, runner: SandboxRunner, make_request: MakeRequest
) -> None:
    name = f"left-{uuid.uuid4().hex}"
    everywhere = ["/tmp", "/var/tmp", "/dev/shm"]
    written = await runner.run(
        make_request(TMP_PROBE, user_id="a", input_data={"name": name, "write": True})
    )
    assert written.error is None, written.traceback
    assert written.output == everywhere
    # Not on the host's /tmp either.
    assert not _on_host(name, everywhere)
    same_worker = await runner.run(make_request(TMP_PROBE, user_id="a", input_data={"name": name}))
    other_user = await runner.run(make_request(TMP_PROBE, user_id="b", input_data={"name": name}))
    same_user = await runner.run(
        make_request(TMP_PROBE, user_id="a", function_id="fn-2", input_data={"name": name})
    )
    assert pool.started_workers == 3
    assert (same_worker.output, other_user.output, same_user.output) == ([], [], [])


async def test_hidden_paths_and_other_workers_folders_are_not_visible(
    hiding_pool: WorkerPool,
    hiding_runner: SandboxRunner,
    make_request: MakeRequest,
    hidden_folder: Path,
) -> None:
    assert (hidden_folder / "secret.txt").read_text() == SECRET
    probe = code("""
        import os

        def handler(input_data, context):
            folder = input_data["folder"]
            try:
                with open(os.path.join(folder, "secret.txt")) as f:
                    secret = f.read()
            except OSError as exc:
                secret = type(exc).__name__
            sandbox = os.path.dirname(os.getcwd())
            return {
                "secret": secret,
                "listing": sorted(os.listdir(folder)),
                "neighbours": sorted(os.listdir(sandbox)),
                "mine": os.path.basename(os.getcwd()),
            }
    """)
    first = await hiding_runner.run(make_request(probe, input_data={"folder": str(hidden_folder)}))
    second = await hiding_runner.run(
        make_request(probe, user_id="user-2", input_data={"folder": str(hidden_folder)})
    )
    assert first.error is None, first.traceback
    assert first.output["secret"] == "FileNotFoundError"
    assert first.output["listing"] == ["sandbox"]
    # The first worker's folder exists on the host while it lives; the second sees only its own.
    assert second.output["neighbours"] == [second.output["mine"]]
    assert first.output["neighbours"] == [first.output["mine"]]


async def test_a_worker_can_not_undo_its_mounts(
    hiding_runner: SandboxRunner, make_request: MakeRequest, hidden_folder: Path
) -> None:
    result = await hiding_runner.run(
        make_request(
            code("""
                import ctypes, os

                libc = ctypes.CDLL(None, use_errno=True)

                def errno_of(result):
                    return 0 if result == 0 else ctypes.get_errno()

                def handler(input_data, context):
                    folder = input_data["folder"].encode()
                    with open("/proc/self/status") as f:
                        caps = [line.split()[1] for line in f if line.startswith("CapEff")]
                    return {
                        "caps": caps,
                        "umount": [
                            errno_of(libc.umount2(path, 2)) for path in (folder, b"/tmp", b"/proc")
                        ],
                        "mount": errno_of(libc.mount(b"x", b"/tmp", b"tmpfs", 0, None)),
                        "unshare": errno_of(libc.unshare(0x00020000)),
                    }
            """),
            input_data={"folder": str(hidden_folder)},
        )
    )
    assert result.error is None, result.traceback
    eperm = 1
    assert result.output == {
        "caps": ["0000000000000000"],
        "umount": [eperm, eperm, eperm],
        "mount": eperm,
        "unshare": eperm,
    }


async def test_the_host_is_read_only_to_a_worker(
    runner: SandboxRunner, make_request: MakeRequest, open_folder: Path
) -> None:
    assert _writable_by_all_and_empty(open_folder)
    result = await runner.run(
        make_request(
            code("""
                import os

                def handler(input_data, context):
                    outcomes = []
                    for path in (input_data["folder"] + "/planted", "/tmp/mine", "mine"):
                        try:
                            with open(path, "w") as f:
                                f.write("x")
                            outcomes.append("written")
                        except OSError as exc:
                            outcomes.append(os.strerror(exc.errno))
                    return outcomes
            """),
            input_data={"folder": str(open_folder)},
        )
    )
    assert result.output == ["Read-only file system", "written", "written"], result.traceback
    assert _writable_by_all_and_empty(open_folder)


def _writable_by_all_and_empty(folder: Path) -> bool:
    return folder.stat().st_mode & 0o777 == 0o777 and not list(folder.iterdir())


async def test_scratch_and_tmp_share_the_disk_limit(
    hiding_runner: SandboxRunner, make_request: MakeRequest
) -> None:
    result = await hiding_runner.run(
        make_request(
            code("""
                import errno, os

                def handler(input_data, context):
                    chunk = b"x" * (1 << 20)
                    written = 0
                    try:
                        for index in range(64):
                            folder = ("/tmp", "/dev/shm", ".")[index % 3]
                            with open(os.path.join(folder, f"f{index}"), "wb") as f:
                                f.write(chunk)
                            written += 1
                    except OSError as exc:
                        return {"written": written, "errno": exc.errno == errno.ENOSPC}
                    return {"written": written, "errno": None}
            """)
        )
    )
    assert result.error is None, result.traceback
    # The pool's tmpfs is 16 MiB: all three folders count against it together.
    assert result.output["errno"] is True
    # (Each on a tmpfs of its own, /tmp alone would have taken 16 files: 46 in all.)
    assert 14 <= result.output["written"] <= 16


async def test_as_root_each_live_worker_has_a_uid_of_its_own(make_request: MakeRequest) -> None:
    pool = WorkerPool(PoolLimits(concurrency=2, uid_base=70000, uid_count=2))
    await pool.start()
    try:
        runner = SandboxRunner(pool)
        whoami = "import os\ndef handler(i, c):\n    return os.getuid()\n"
        uids = [(await runner.run(make_request(whoami, user_id=user))).output for user in "abac"]
    finally:
        await pool.close()
    if os.geteuid() != 0:
        # Unprivileged, every worker maps the executor's own uid, in a user namespace each.
        assert uids == [os.geteuid()] * 4
        return
    # Two slots, two uids, taken in turn: the start's sandbox check had 70000, a's worker
    # 70001, b's 70000 again (the check's worker had ended). c's worker took the slot of b's
    # (idle longest) and would have had a's uid next: not while a's worker lives, so b's.
    assert uids == [70001, 70000, 70001, 70000]
    assert pool.started_workers == 3


async def test_a_pool_whose_workers_can_not_be_sandboxed_refuses_to_start(
    capfd: pytest.CaptureFixture[str],
) -> None:
    # tmpfs takes size=0 for no limit at all: refused, and said so in the executor's log.
    pool = WorkerPool(PoolLimits(concurrency=1, disk_mb=0))
    try:
        with pytest.raises(SandboxUnavailable, match="EXECUTOR_SANDBOX=unsafe-none") as refused:
            await pool.start()
    finally:
        await pool.close()
    assert "exit code 71" in str(refused.value)
    assert "sandbox worker set-up failed" in capfd.readouterr().err


async def test_without_namespaces_the_same_pool_starts_and_runs(make_request: MakeRequest) -> None:
    # What EXECUTOR_SANDBOX=unsafe-none chooses: no namespaces, so no tmpfs to refuse.
    pool = WorkerPool(PoolLimits(concurrency=1, disk_mb=0, namespaces=False))
    await pool.start()
    try:
        result = await SandboxRunner(pool).run(make_request("def handler(i, c):\n    return 1\n"))
    finally:
        await pool.close()
    assert result.output == 1


@pytest.mark.parametrize("mode", ["nobody", "root-without-sys-admin"])
def test_all_of_the_above_holds_for_an_unprivileged_executor(
    mode: str, rerun_unprivileged: Callable[..., str]
) -> None:
    """This module again, with the executor (and so the zygote) under an unprivileged uid, or
    as root without CAP_SYS_ADMIN: workers then make their namespaces in a user namespace of
    their own (as root, under their own uid first)."""
    hidden = Path(tempfile.mkdtemp(prefix="sinas-hidden-", dir="/run" if _root() else None))
    writable = Path(tempfile.mkdtemp(prefix="sinas-open-", dir="/run" if _root() else None))
    try:
        writable.chmod(0o1777)
        make_hidden_folder(hidden)
        if _root():
            os.chown(hidden / "sandbox", 65534, 65534)
        rerun_unprivileged(
            __file__, mode, deselected=2, env={HIDDEN_ENV: str(hidden), OPEN_ENV: str(writable)}
        )
    finally:
        shutil.rmtree(hidden, ignore_errors=True)
        shutil.rmtree(writable, ignore_errors=True)


def _root() -> bool:
    return os.geteuid() == 0
