"""The sandbox runs handlers in hardened, per-key worker processes and reports every failure."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sinas_executor.models import RunRequest
from sinas_executor.pool import PoolLimits, SandboxRunner, WorkerPool

MakeRequest = Callable[..., RunRequest]


def code(source: str) -> str:
    return textwrap.dedent(source)


async def test_sync_handler_gets_input_and_context(
    runner: SandboxRunner, make_request: MakeRequest
) -> None:
    request = make_request(
        code("""
            def handler(input_data, context):
                return {"doubled": input_data["n"] * 2, "who": context["user_id"], "f": 0.1}
        """),
        input_data={"n": 2**60 + 1},
    )
    result = await runner.run(request)
    assert result.error is None
    assert result.output == {"doubled": (2**60 + 1) * 2, "who": "user-1", "f": 0.1}


async def test_async_handler_is_awaited(runner: SandboxRunner, make_request: MakeRequest) -> None:
    request = make_request(
        code("""
            import asyncio

            async def handler(input_data, context):
                await asyncio.sleep(0.01)
                return {"text": "héllo ✓"}
        """)
    )
    result = await runner.run(request)
    assert result.output == {"text": "héllo ✓"}


async def test_raising_handler_gives_error_and_traceback(
    runner: SandboxRunner, make_request: MakeRequest
) -> None:
    request = make_request(
        code("""
            def helper():
                raise ValueError("no good")

            def handler(input_data, context):
                helper()
        """)
    )
    result = await runner.run(request)
    assert result.error == "ValueError: no good"
    assert "Traceback (most recent call last)" in result.traceback
    assert 'raise ValueError("no good")' in result.traceback
    assert "in helper" in result.traceback
    assert not result.timed_out


async def test_code_that_fails_to_load_is_reported(
    runner: SandboxRunner, make_request: MakeRequest
) -> None:
    broken = await runner.run(make_request("def handler(:\n", function_id="broken"))
    assert broken.error is not None and broken.error.startswith("SyntaxError")
    missing = await runner.run(make_request("x = 1\n", function_id="missing"))
    assert missing.error == "The function code must define handler(input_data, context)"


async def test_unserialisable_output_fails(
    runner: SandboxRunner, make_request: MakeRequest
) -> None:
    result = await runner.run(make_request("def handler(i, c):\n    return {1, 2}\n"))
    assert result.error is not None
    assert result.error.startswith("Output validation failed")


async def test_timeout_kills_the_worker(
    pool: WorkerPool, runner: SandboxRunner, make_request: MakeRequest
) -> None:
    sleeper = code("""
        import time, uuid

        WORKER = uuid.uuid4().hex

        def handler(input_data, context):
            if input_data.get("sleep"):
                time.sleep(60)
            return WORKER
    """)
    first = (await runner.run(make_request(sleeper))).output
    result = await runner.run(make_request(sleeper, input_data={"sleep": True}, timeout_seconds=1))
    assert result.timed_out
    assert result.error == "Function execution timed out after 1 seconds"
    again = await runner.run(make_request(sleeper))
    assert again.error is None
    # The idle worker took the sleeping call and was killed; a fresh one serves the next.
    # (Workers are told apart by a token: in its own PID namespace, every worker is pid 2.)
    assert again.output != first
    assert pool.started_workers == 2


async def test_memory_limit_stops_a_large_allocation(
    runner: SandboxRunner, make_request: MakeRequest
) -> None:
    result = await runner.run(
        make_request(
            "def handler(i, c):\n    block = bytearray(1024 * 1024 * 1024)\n    return 1\n"
        )
    )
    assert result.error is not None
    assert result.error.startswith("MemoryError") or "worker process died" in result.error


async def test_worker_exit_is_reported(runner: SandboxRunner, make_request: MakeRequest) -> None:
    result = await runner.run(make_request("import os\ndef handler(i, c):\n    os._exit(7)\n"))
    assert result.error == "The worker process died during the run (exit code 7)"


async def test_worker_killing_itself_is_reported(
    runner: SandboxRunner, make_request: MakeRequest
) -> None:
    result = await runner.run(
        make_request(
            "import os, signal\ndef handler(i, c):\n    os.kill(os.getpid(), signal.SIGKILL)\n"
        )
    )
    assert result.error == "The worker process died during the run (killed by signal SIGKILL)"


# A name or a value a function must never find in its environment.
SECRET_LOOKING = re.compile(r"://|key|secret|token|passw|credential|auth|dsn", re.IGNORECASE)

# Its environment as Python sees it, and the environ of every process it can see.
ENVIRONMENT_PROBE = code("""
    import os, tempfile

    def _read(path):
        try:
            with open(path, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError as exc:
            return type(exc).__name__

    def handler(input_data, context):
        procs = [_read(f"/proc/{pid}/environ") for pid in os.listdir("/proc") if pid.isdigit()]
        return {
            "env": dict(os.environ),
            "procs": procs,
            "cwd": os.getcwd(),
            "tempdir": tempfile.gettempdir(),
        }
""")


@pytest.fixture
def canary(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fake secret, in place before the test's sandbox starts: in the executor's own
    environment, and in the kernel's copy of a process's environment (/proc/<pid>/environ,
    which a putenv after the start never changes), as another service's secrets are."""
    secret = f"canary-{secrets.token_hex(12)}"
    monkeypatch.setenv("SINAS_TEST_API_TOKEN", secret)
    holder = subprocess.Popen(["sleep", "60"], env={"SINAS_TEST_SECRET": secret})
    try:
        # Read back once the exec is through (an exec under way shows an empty environ).
        deadline = time.monotonic() + 10
        while secret.encode() not in Path(f"/proc/{holder.pid}/environ").read_bytes():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        yield secret
    finally:
        holder.kill()
        holder.wait()


async def test_environment_is_scrubbed(canary: str, make_request: MakeRequest) -> None:
    pool = WorkerPool(PoolLimits(concurrency=1))
    await pool.start()
    try:
        root = pool.root
        result = await SandboxRunner(pool).run(make_request(ENVIRONMENT_PROBE))
    finally:
        await pool.close()
    assert result.error is None, result.traceback
    seen = result.output
    assert set(seen["env"]) == {"PATH", "HOME", "TMPDIR", "LANG"}, seen["env"]
    for name, value in seen["env"].items():
        assert not SECRET_LOOKING.search(name) and not SECRET_LOOKING.search(value), (name, value)
    scratch = seen["env"]["HOME"]
    assert root is not None and scratch.startswith(root + os.sep)
    assert seen["env"]["TMPDIR"] == seen["cwd"] == seen["tempdir"] == scratch
    assert canary not in json.dumps(seen)


async def test_scratch_files_do_not_outlive_a_run(
    runner: SandboxRunner, make_request: MakeRequest
) -> None:
    writer = code("""
        import os

        def handler(input_data, context):
            path = os.path.join(os.getcwd(), "secret.txt")
            with open(path, "w") as f:
                f.write("user one's data")
            return path
    """)
    reader = code("""
        def handler(input_data, context):
            try:
                with open(input_data["path"]) as f:
                    return f.read()
            except OSError as exc:
                return type(exc).__name__
    """)
    written = await runner.run(make_request(writer, user_id="user-a", function_id="w"))
    assert written.error is None
    same_user = await runner.run(
        make_request(reader, user_id="user-a", function_id="r", input_data={"path": written.output})
    )
    other_user = await runner.run(
        make_request(reader, user_id="user-b", function_id="r", input_data={"path": written.output})
    )
    assert same_user.output in {"FileNotFoundError", "PermissionError"}
    assert other_user.output in {"FileNotFoundError", "PermissionError"}


COUNTER = code("""
    import uuid

    WORKER = uuid.uuid4().hex
    calls = 0

    def handler(input_data, context):
        global calls
        calls += 1
        return {"worker": WORKER, "calls": calls}
""")


async def test_worker_is_reused_per_key(
    pool: WorkerPool, runner: SandboxRunner, make_request: MakeRequest
) -> None:
    first = await runner.run(make_request(COUNTER, user_id="alice"))
    second = await runner.run(make_request(COUNTER, user_id="alice"))
    assert first.output["calls"] == 1
    assert second.output == {"worker": first.output["worker"], "calls": 2}
    assert pool.started_workers == 1


async def test_no_state_crosses_between_users(
    runner: SandboxRunner, make_request: MakeRequest
) -> None:
    alice = await runner.run(make_request(COUNTER, user_id="alice"))
    bob = await runner.run(make_request(COUNTER, user_id="bob"))
    assert alice.output["calls"] == 1
    assert bob.output["calls"] == 1
    assert bob.output["worker"] != alice.output["worker"]


async def test_worker_is_recycled_after_max_runs(
    pool: WorkerPool, runner: SandboxRunner, make_request: MakeRequest
) -> None:
    results = [await runner.run(make_request(COUNTER)) for _ in range(4)]
    assert [r.output["calls"] for r in results] == [1, 2, 3, 1]
    assert results[3].output["worker"] != results[0].output["worker"]
    assert pool.started_workers == 2


# Holds on to memory between runs, as a leak does: 140 MiB more per call. The pool's limit is
# 256 MiB, so a second call in the same worker would fail with MemoryError; past a peak of
# 128 MiB the worker is retired instead, and the second call gets a fresh one.
LEAKY = code("""
    import uuid

    WORKER = uuid.uuid4().hex
    kept = []

    def handler(input_data, context):
        kept.append(b"x" * (140 << 20))
        return {"worker": WORKER, "calls": len(kept)}
""")


async def test_a_worker_whose_memory_grew_past_half_its_limit_is_retired(
    pool: WorkerPool, runner: SandboxRunner, make_request: MakeRequest
) -> None:
    first = await runner.run(make_request(LEAKY))
    second = await runner.run(make_request(LEAKY))
    assert first.error is None and second.error is None
    # The first run left its worker past 140 MiB: the second ran in a fresh worker.
    assert (first.output["calls"], second.output["calls"]) == (1, 1)
    assert second.output["worker"] != first.output["worker"]
    assert pool.started_workers == 2


async def test_a_worker_well_within_its_limits_is_kept(
    pool: WorkerPool, runner: SandboxRunner, make_request: MakeRequest
) -> None:
    results = [await runner.run(make_request(COUNTER)) for _ in range(2)]
    assert [r.output["calls"] for r in results] == [1, 2]
    assert pool.started_workers == 1


async def test_idle_worker_of_another_key_is_evicted(
    pool: WorkerPool, runner: SandboxRunner, make_request: MakeRequest
) -> None:
    users = ["u1", "u2", "u3", "u4"]
    for user in users:
        result = await runner.run(make_request(COUNTER, user_id=user))
        assert result.output["calls"] == 1
    # Three slots: the fourth key evicted the oldest idle worker.
    assert pool.idle_workers(make_request(COUNTER, user_id="u1").key) == 0
    assert pool.idle_workers(make_request(COUNTER, user_id="u4").key) == 1


async def test_workers_and_their_zygote_are_non_dumpable(
    runner: SandboxRunner, make_request: MakeRequest
) -> None:
    # Whether workers share the executor's uid (not root) or have their own (root), neither
    # a worker nor the zygote that forks the later ones is open to a function's code.
    request = make_request(
        code("""
            import ctypes
            import os

            def handler(input_data, context):
                dumpable = ctypes.CDLL(None).prctl(3, 0, 0, 0, 0)
                denied = []
                for name in ("environ", "mem"):
                    try:
                        open(f"/proc/{os.getppid()}/{name}", "rb").close()
                    except PermissionError:
                        denied.append(name)
                return {"dumpable": dumpable, "denied": denied}
        """)
    )
    result = await runner.run(request)
    assert result.error is None
    assert result.output == {"dumpable": 0, "denied": ["environ", "mem"]}
