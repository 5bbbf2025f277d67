"""Fixtures for the executor's unit tests: a real sandbox pool with small limits."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from sinas_executor.models import RunRequest, WorkerKey
from sinas_executor.pool import PoolLimits, SandboxRunner, WorkerPool


@pytest.fixture
async def pool() -> AsyncIterator[WorkerPool]:
    worker_pool = WorkerPool(
        PoolLimits(concurrency=3, max_runs=3, idle_seconds=30.0, memory_mb=256, cpu_seconds=60)
    )
    await worker_pool.start()
    yield worker_pool
    await worker_pool.close()


@pytest.fixture
def runner(pool: WorkerPool) -> SandboxRunner:
    return SandboxRunner(pool)


@pytest.fixture
def make_request() -> Callable[..., RunRequest]:
    """A RunRequest with defaults; override any field by keyword."""

    def build(
        code: str,
        *,
        input_data: Any = None,
        user_id: str = "user-1",
        function_id: str = "fn-1",
        version: int = 1,
        timeout_seconds: float = 20.0,
        context: dict[str, Any] | None = None,
    ) -> RunRequest:
        return RunRequest(
            key=WorkerKey(user_id=user_id, function_id=function_id, function_version=version),
            code=code,
            filename=f"<function {function_id} v{version}>",
            input_data={} if input_data is None else input_data,
            context=context or {"execution_id": "e-1", "user_id": user_id},
            timeout_seconds=timeout_seconds,
        )

    return build


RerunModule = Callable[..., str]


@pytest.fixture
def rerun_unprivileged() -> RerunModule:
    """`(module, mode, deselected=N, env=...)`: the module's tests again, with the executor
    as uid 65534 (`nobody`) or as root without CAP_SYS_ADMIN (see unprivileged.py)."""
    return _rerun_module


def _rerun_module(
    module: str, mode: str, *, deselected: int, env: dict[str, str] | None = None
) -> str:
    """Runs the tests of `module` again under `mode`, all but the ones named
    `unprivileged_executor` (the re-runs themselves, `deselected` of them); asserts they ran
    and passed there, none skipped. Returns their output."""
    completed = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).with_name("unprivileged.py")),
            mode,
            "-m",
            "pytest",
            module,
            "-k",
            "not unprivileged_executor",
            "-q",
            "-p",
            "no:cacheprovider",
        ],
        env={**os.environ, **(env or {})},
        cwd="/",
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-6000:]
    root = os.geteuid() == 0
    expected_uid = (65534 if mode == "nobody" else 0) if root else os.geteuid()
    assert f"running as uid {expected_uid} ({mode})" in output, output[-6000:]
    summary = rf"^\d+ passed, {deselected} deselected in "
    assert re.search(summary, output, re.MULTILINE), output[-6000:]
    return output
