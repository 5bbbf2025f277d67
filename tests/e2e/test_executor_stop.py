"""An executor stopped with SIGTERM hands back running and paused work within its grace
period and leaves no sandbox folder behind."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sinas_devstack.stack import Stack

from .conftest import StackFactory, admin_client_for
from .helpers import TERMINAL, enqueue, make_function_factory, query_one, wait_for_status
from .test_interactive import ASKING, paused_at

pytestmark = pytest.mark.slow

GRACE_SECONDS = 3.0
# What a stop may take past the grace period: releasing, closing connections, removing the
# sandbox folder. Far below the 30 s after which a supervisor used to SIGKILL it.
STOP_MARGIN_SECONDS = 5.0
# The busy run sleeps until this long after it was submitted: well past the stop's grace
# period (the run can't finish on the executor stopped), and then done on the next executor,
# its wall-clock target the same for attempt 2.
BUSY_SECONDS = 20.0

# Sleeps until input_data["until"] (a wall-clock time), after leaving a file in its scratch
# folder that its owner must make a folder writable again to remove.
BUSY = """
import os, time

def handler(input_data, context):
    locked = os.path.join(os.getcwd(), "locked")
    os.makedirs(os.path.join(locked, "inner"))
    with open(os.path.join(locked, "inner", "kept.txt"), "w") as f:
        f.write("left behind")
    os.chmod(os.path.join(locked, "inner"), 0)
    os.chmod(locked, 0o500)
    time.sleep(max(0.0, input_data["until"] - time.time()))
    return {"slept_until": input_data["until"]}
"""


@pytest.fixture
def sandbox_root() -> Iterator[Path]:
    """Where the executor's EXECUTOR_SANDBOX_ROOT is made: under a folder workers with their
    own uid (executor as root) may pass through, as they may /tmp."""
    base = Path(tempfile.mkdtemp(prefix="sinas-stop-"))
    os.chmod(base, 0o711)
    yield base / "sandbox"
    shutil.rmtree(base, ignore_errors=True)


def _row(stack: Stack, execution_id: str) -> tuple[str, str | None, int]:
    row = query_one(
        stack.config.database_url,
        "SELECT status, worker_id, attempts FROM executions WHERE id = %s",
        execution_id,
    )
    assert row is not None
    return str(row[0]), row[1], int(row[2])


async def _wait_for_row(
    stack: Stack, execution_id: str, status: str, worker: str | None, timeout: float = 60.0
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _row(stack, execution_id)[:2] == (status, worker):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{execution_id}: {_row(stack, execution_id)}, not {status} on {worker}")


def _left_behind(root: Path) -> list[str] | None:
    """What is left under `root`, or None when `root` itself is gone."""
    if not root.exists():
        return None
    return [os.path.join(top, name) for top, dirs, files in os.walk(root) for name in dirs + files]


async def test_sigterm_hands_back_running_and_paused_work_and_removes_the_sandbox(
    stack_factory: StackFactory, sandbox_root: Path
) -> None:
    stack = stack_factory()
    scheduler = stack.scheduler()
    scheduler.start()
    stack.wait_ready(scheduler, timeout=120)
    executor = stack.executor(
        SHUTDOWN_GRACE_SECONDS=str(GRACE_SECONDS), EXECUTOR_SANDBOX_ROOT=str(sandbox_root)
    )
    gateway = stack.gateway()
    for service in (executor, gateway):
        service.start()
    for service in (executor, gateway):
        stack.wait_ready(service)
    async with admin_client_for(stack) as admin:
        create = make_function_factory(admin)
        busy_fn = await create(BUSY, timeout=600)
        asking_fn = await create(ASKING)
        until = time.time() + BUSY_SECONDS
        busy = await enqueue(admin, busy_fn, input={"until": until})
        paused = await enqueue(admin, asking_fn)
        await paused_at(admin, paused, "Name?")
        await _wait_for_row(stack, busy, "RUNNING", "executor")
        assert until - time.time() > GRACE_SECONDS + STOP_MARGIN_SECONDS, "started too late"
        assert _row(stack, paused)[:2] == ("AWAITING_INPUT", "executor")

        assert executor.process is not None
        stopped_at = time.monotonic()
        executor.signal(signal.SIGTERM)
        # The paused run is handed back at once, while the busy one still has its grace.
        await _wait_for_row(stack, paused, "PENDING", None, timeout=GRACE_SECONDS)
        assert executor.alive
        assert _row(stack, busy) == ("RUNNING", "executor", 1)
        # Within the grace period plus the margin, or the wait raises TimeoutExpired.
        assert executor.process.wait(timeout=GRACE_SECONDS + STOP_MARGIN_SECONDS) == 0
        stop_seconds = time.monotonic() - stopped_at
        # The busy run was given its grace period before it was killed.
        assert stop_seconds >= GRACE_SECONDS
        log = executor.log_path.read_text()
        assert '"executor stopped"' in log, executor.log_tail()

        # Handed back: released (PENDING, no worker), on their first attempt, not failed.
        assert _row(stack, busy) == ("PENDING", None, 1)
        assert _row(stack, paused) == ("PENDING", None, 1)
        assert _left_behind(sandbox_root) is None, _left_behind(sandbox_root)
        print(f"executor stopped in {stop_seconds:.2f} s (grace {GRACE_SECONDS} s)")

        # The next executor runs both from the start: attempt 2 of each.
        replacement = stack.executor(name="executor-2", EXECUTOR_SANDBOX_ROOT=str(sandbox_root))
        replacement.start()
        stack.wait_ready(replacement)
        await _rerun(admin, stack, busy, paused)
        replacement.stop()
        assert _left_behind(sandbox_root) is None, _left_behind(sandbox_root)


async def _rerun(admin: httpx.AsyncClient, stack: Stack, busy: str, paused: str) -> None:
    again = await wait_for_status(admin, paused, {"AWAITING_INPUT", *TERMINAL})
    assert (again["status"], again["input_prompt"]) == ("AWAITING_INPUT", "Name?"), again
    assert _row(stack, paused) == ("AWAITING_INPUT", "executor-2", 2)
    reply = await admin.post(f"/executions/{paused}/continue", json={"input": "Ada"})
    assert reply.status_code == 200, reply.text
    await paused_at(admin, paused, "Age of Ada?")
    reply = await admin.post(f"/executions/{paused}/continue", json={"input": "36"})
    assert reply.status_code == 200, reply.text
    asked = await wait_for_status(admin, paused)
    assert asked["status"] == "COMPLETED", asked
    assert (asked["output_data"], asked["attempts"]) == ({"name": "Ada", "age": "36"}, 2)
    done = await wait_for_status(admin, busy, timeout=BUSY_SECONDS + 60)
    assert done["status"] == "COMPLETED", (done["error"], done["traceback"])
    assert done["attempts"] == 2
