"""Idempotent submits over recording fakes: replays, conflicts, the key rule, the fingerprint."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import pytest

from sinas_common.callback_policy import CallbackPolicy
from sinas_common.errors import AlreadyExists, InvalidArgument
from sinas_scheduler.callback_urls import PolicyCallbackUrlCheck
from sinas_scheduler.idempotency import (
    KEY_REUSED_MESSAGE,
    IdempotencyReservation,
    StoredResponse,
    request_fingerprint,
)
from sinas_scheduler.models import Function, FunctionSpec, NewExecution, Principal, User
from sinas_scheduler.registry import FunctionLimits, FunctionUseCases
from sinas_scheduler.scheduler import ExecutionLimits, ExecutionUseCases, SubmitRequest

NOW = datetime(2026, 1, 1, tzinfo=UTC)
RUNNER = "sinas.functions/*/*.execute:own"
KEY = "retry-7f3a"

FUNCTION = Function(
    id="f1",
    namespace="ns",
    name="fn",
    owner_user_id="admin",
    spec=FunctionSpec(
        description="",
        code="def handler(i, c):\n    return i\n",
        input_schema={"type": "object"},
        output_schema={},
        timeout_seconds=10,
        requires_approval=False,
    ),
    version=1,
    created_at=NOW,
    updated_at=NOW,
)


class InMemoryFunctionStore:
    def __init__(self) -> None:
        self.functions = {(FUNCTION.namespace, FUNCTION.name): FUNCTION}

    async def get_function(self, namespace: str, name: str) -> Function | None:
        return self.functions.get((namespace, name))


class KeyedExecutionStore:
    """Stores executions and reserves keys together, as one transaction would."""

    def __init__(self) -> None:
        self.inserted: list[NewExecution] = []
        self.keys: dict[tuple[str, str], StoredResponse] = {}

    async def insert_execution(
        self,
        new: NewExecution,
        *,
        idempotency: IdempotencyReservation | None = None,
        wake: bool = True,
    ) -> StoredResponse | None:
        if idempotency is not None:
            held = self.keys.get((idempotency.user_id, idempotency.key))
            if held is not None:
                return held
            self.keys[(idempotency.user_id, idempotency.key)] = StoredResponse(
                fingerprint=idempotency.fingerprint, response=idempotency.response
            )
        self.inserted.append(new)
        return None

    async def insert_if_current(self, new: NewExecution, *, wake: bool = True) -> bool:
        self.inserted.append(new)
        return True


class KeysSeenBy:
    """The read before a submit, over the store's keys; `blind` plays a concurrent request
    whose key was not committed yet when this one looked."""

    def __init__(self, store: KeyedExecutionStore, *, blind: bool = False) -> None:
        self.store = store
        self.blind = blind

    async def find_response(
        self, *, user_id: str, key: str, ttl_seconds: int
    ) -> StoredResponse | None:
        return None if self.blind else self.store.keys.get((user_id, key))


class NoSignals:
    @contextmanager
    def watch(self, execution_id: str) -> Iterator[asyncio.Event]:
        yield asyncio.Event()


class NoLookups:
    async def resolve(self, host: str, port: int) -> list[str]:
        raise AssertionError("no callback URL in these tests")


def principal(user_id: str = "u1") -> Principal:
    user = User(id=user_id, email=f"{user_id}@example.com", roles=(), created_at=NOW)
    return Principal(
        user=user, permissions=frozenset({RUNNER}), execution_id=None, execution_depth=None
    )


def build(
    store: KeyedExecutionStore, functions: InMemoryFunctionStore, *, blind: bool = False
) -> ExecutionUseCases:
    return ExecutionUseCases(
        executions=store,  # type: ignore[arg-type]
        functions=FunctionUseCases(
            functions,  # type: ignore[arg-type]
            FunctionLimits(default_timeout_seconds=300, max_timeout_seconds=86400),
        ),
        signals=NoSignals(),
        limits=ExecutionLimits(
            max_depth=4,
            max_attempts=3,
            lease_seconds=60,
            token_buffer_seconds=300,
            max_token_seconds=86400,
            idempotency_ttl_seconds=3600,
        ),
        callback_urls=PolicyCallbackUrlCheck(CallbackPolicy(), NoLookups()),
        idempotency=KeysSeenBy(store, blind=blind),
    )


@pytest.fixture
def store() -> KeyedExecutionStore:
    return KeyedExecutionStore()


@pytest.fixture
def functions() -> InMemoryFunctionStore:
    return InMemoryFunctionStore()


def request(key: str = KEY, **overrides: object) -> SubmitRequest:
    values: dict[str, object] = {
        "namespace": "ns",
        "name": "fn",
        "input": {"n": 1, "tags": ["a", "b"]},
        "idempotency_key": key,
        **overrides,
    }
    return SubmitRequest(**values)  # type: ignore[arg-type]


async def test_a_retry_answers_the_original_id_and_stores_nothing(
    store: KeyedExecutionStore, functions: InMemoryFunctionStore
) -> None:
    use_cases = build(store, functions)
    first = await use_cases.submit(principal(), request())
    again = await use_cases.submit(principal(), request())
    assert again == first
    assert [row.id for row in store.inserted] == [first]
    assert store.keys[("u1", KEY)].response == {"execution_id": first}


async def test_a_retry_is_answered_even_after_the_function_is_gone(
    store: KeyedExecutionStore, functions: InMemoryFunctionStore
) -> None:
    use_cases = build(store, functions)
    first = await use_cases.submit(principal(), request())
    functions.functions.clear()
    assert await use_cases.submit(principal(), request()) == first


@pytest.mark.parametrize(
    "change",
    [
        {"input": {"n": 2, "tags": ["a", "b"]}},
        {"input": {"n": 1, "tags": ["b", "a"]}},
        {"name": "other"},
        {"trigger_id": "nightly"},
        {"delay_seconds": 5},
        {"callback_url": "https://hooks.example/h"},
    ],
)
async def test_the_same_key_on_a_different_request_is_a_conflict(
    store: KeyedExecutionStore, functions: InMemoryFunctionStore, change: dict[str, object]
) -> None:
    use_cases = build(store, functions)
    await use_cases.submit(principal(), request())
    with pytest.raises(AlreadyExists, match=KEY_REUSED_MESSAGE):
        await use_cases.submit(principal(), request(**change))
    assert len(store.inserted) == 1


async def test_keys_are_per_user(
    store: KeyedExecutionStore, functions: InMemoryFunctionStore
) -> None:
    use_cases = build(store, functions)
    mine = await use_cases.submit(principal("u1"), request())
    theirs = await use_cases.submit(principal("u2"), request())
    assert mine != theirs
    assert len(store.inserted) == 2


async def test_a_key_reserved_concurrently_answers_the_holders_id(
    store: KeyedExecutionStore, functions: InMemoryFunctionStore
) -> None:
    holder = await build(store, functions).submit(principal(), request())
    # This request looked before the holder committed, so only the reservation finds it.
    late = build(store, functions, blind=True)
    assert await late.submit(principal(), request()) == holder
    with pytest.raises(AlreadyExists):
        await late.submit(principal(), request(input={"n": 3}))
    assert len(store.inserted) == 1


async def test_without_a_key_every_submit_stores_a_row(
    store: KeyedExecutionStore, functions: InMemoryFunctionStore
) -> None:
    use_cases = build(store, functions)
    await use_cases.submit(principal(), request(key=""))
    await use_cases.submit(principal(), request(key=""))
    assert len(store.inserted) == 2
    assert store.keys == {}


@pytest.mark.parametrize("key", ["k" * 256, "caf\u00e9", "tab\there"])
async def test_a_malformed_key_is_invalid_and_stores_nothing(
    store: KeyedExecutionStore, functions: InMemoryFunctionStore, key: str
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await build(store, functions).submit(principal(), request(key=key))
    assert [v.field for v in caught.value.violations] == ["idempotency_key"]
    assert store.inserted == []


async def test_a_key_of_255_characters_is_accepted(
    store: KeyedExecutionStore, functions: InMemoryFunctionStore
) -> None:
    await build(store, functions).submit(principal(), request(key="k" * 255))
    assert len(store.inserted) == 1


def test_the_fingerprint_ignores_key_order_and_applies_defaults() -> None:
    assert (
        request(input={"a": 1, "b": {"c": 2, "d": 3}}).fingerprint()
        == request(input={"b": {"d": 3, "c": 2}, "a": 1}).fingerprint()
    )
    assert (
        request().fingerprint() == request(trigger_id="runtime-api", delay_seconds=0).fingerprint()
    )
    assert request(input={"n": 1}).fingerprint() != request(input={"n": 1.0}).fingerprint()


def test_the_endpoint_is_part_of_the_fingerprint() -> None:
    fields = {"namespace": "ns", "name": "fn"}
    assert request_fingerprint("execute/async", fields) != request_fingerprint(
        "execute/batch", fields
    )
