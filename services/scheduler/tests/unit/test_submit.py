"""The submit use case over recording fakes: check order, and nothing stored on failure."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest

from sinas_common.errors import (
    CallbackUrlRejected,
    ExecutionDepthExceeded,
    FunctionNotFound,
    PermissionDenied,
    SchemaViolation,
)
from sinas_scheduler.models import (
    Function,
    FunctionChanges,
    FunctionSpec,
    FunctionVersion,
    NewExecution,
    Principal,
    User,
)
from sinas_scheduler.registry import FunctionLimits, FunctionUseCases
from sinas_scheduler.scheduler import ExecutionLimits, ExecutionUseCases, SubmitRequest

NOW = datetime(2026, 1, 1, tzinfo=UTC)


class InMemoryFunctionStore:
    def __init__(self, *functions: Function) -> None:
        self.functions = {(f.namespace, f.name): f for f in functions}

    async def get_function(self, namespace: str, name: str) -> Function | None:
        return self.functions.get((namespace, name))

    async def create_function(self, **_: Any) -> Function:
        raise NotImplementedError

    async def update_function(
        self,
        *,
        namespace: str,
        name: str,
        changes: FunctionChanges,
        check: Callable[[FunctionSpec], None],
        updated_by: str,
    ) -> Function:
        raise NotImplementedError

    async def delete_function(self, namespace: str, name: str) -> bool:
        raise NotImplementedError

    async def function_versions(self, keys: Sequence[tuple[str, int]]) -> list[FunctionVersion]:
        return []


class RecordingExecutionStore:
    def __init__(self) -> None:
        self.inserted: list[NewExecution] = []

    async def insert_execution(self, new: NewExecution) -> None:
        self.inserted.append(new)


class NoSignals:
    @contextmanager
    def watch(self, execution_id: str) -> Iterator[asyncio.Event]:
        yield asyncio.Event()


FUNCTION = Function(
    id="f1",
    namespace="ns",
    name="fn",
    owner_user_id="admin",
    spec=FunctionSpec(
        description="",
        code="def handler(i, c):\n    return i\n",
        input_schema={"type": "object", "required": ["n"]},
        output_schema={},
        timeout_seconds=10,
        requires_approval=False,
    ),
    version=3,
    created_at=NOW,
    updated_at=NOW,
)


def principal(*permissions: str, depth: int | None = None) -> Principal:
    user = User(id="u1", email="u@example.com", roles=(), created_at=NOW)
    return Principal(
        user=user,
        permissions=frozenset(permissions),
        execution_id=None if depth is None else "parent",
        execution_depth=depth,
    )


@pytest.fixture
def store() -> RecordingExecutionStore:
    return RecordingExecutionStore()


@pytest.fixture
def use_cases(store: RecordingExecutionStore) -> ExecutionUseCases:
    functions = FunctionUseCases(
        InMemoryFunctionStore(FUNCTION),  # type: ignore[arg-type]
        FunctionLimits(default_timeout_seconds=300, max_timeout_seconds=86400),
    )
    return ExecutionUseCases(
        executions=store,  # type: ignore[arg-type]
        functions=functions,
        signals=NoSignals(),
        limits=ExecutionLimits(
            max_depth=4,
            max_attempts=3,
            lease_seconds=60,
            token_buffer_seconds=300,
            max_token_seconds=86400,
        ),
    )


RUNNER = "sinas.functions/*/*.execute:own"


async def test_stores_one_pending_row(
    use_cases: ExecutionUseCases, store: RecordingExecutionStore
) -> None:
    execution_id = await use_cases.submit(
        principal(RUNNER, depth=1), SubmitRequest(namespace="ns", name="fn", input={"n": 1})
    )
    [row] = store.inserted
    assert row.id == execution_id
    assert (row.function_id, row.function_version, row.user_id) == ("f1", 3, "u1")
    assert (row.trigger_type, row.trigger_id, row.depth) == ("API", "runtime-api", 2)
    assert (row.parent_execution_id, row.delay_seconds) == ("parent", 0)


@pytest.mark.parametrize(
    ("caller", "request_", "error"),
    [
        # Lookup comes first, then the permission, callback, depth, then the body.
        (principal(), SubmitRequest(namespace="ns", name="nope", input=[]), FunctionNotFound),
        (
            principal(),
            SubmitRequest(namespace="ns", name="fn", input=[], callback_url="https://a"),
            PermissionDenied,
        ),
        (
            principal(RUNNER, depth=9),
            SubmitRequest(namespace="ns", name="fn", input=[], callback_url="https://a"),
            CallbackUrlRejected,
        ),
        (
            principal(RUNNER, depth=4),
            SubmitRequest(namespace="ns", name="fn", input=[]),
            ExecutionDepthExceeded,
        ),
        (principal(RUNNER), SubmitRequest(namespace="ns", name="fn", input={}), SchemaViolation),
    ],
)
async def test_check_order_and_nothing_stored(
    use_cases: ExecutionUseCases,
    store: RecordingExecutionStore,
    caller: Principal,
    request_: SubmitRequest,
    error: type[Exception],
) -> None:
    with pytest.raises(error):
        await use_cases.submit(caller, request_)
    assert store.inserted == []
