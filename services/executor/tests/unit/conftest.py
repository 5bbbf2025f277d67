"""Fixtures for the executor's unit tests: a real sandbox pool with small limits."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
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
