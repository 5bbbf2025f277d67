"""The submit use case over recording fakes: check order, and nothing stored on failure."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from sinas_common.callback_policy import CallbackPolicy
from sinas_common.errors import (
    CallbackUrlRejected,
    ExecutionDepthExceeded,
    FunctionNotFound,
    PermissionDenied,
    SchemaViolation,
)
from sinas_scheduler.callback_urls import PolicyCallbackUrlCheck
from sinas_scheduler.idempotency import IdempotencyReservation, StoredResponse
from sinas_scheduler.models import (
    DueExecution,
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
        self.lookups = 0

    async def get_function(self, namespace: str, name: str) -> Function | None:
        self.lookups += 1
        return self.functions.get((namespace, name))

    async def create_function(self, **_: Any) -> Function:
        raise AssertionError("submitting never changes the function registry")

    async def update_function(
        self,
        *,
        namespace: str,
        name: str,
        changes: FunctionChanges,
        check: Callable[[FunctionSpec], None],
        updated_by: str,
    ) -> Function:
        raise AssertionError("submitting never changes the function registry")

    async def delete_function(self, namespace: str, name: str) -> bool:
        raise AssertionError("submitting never changes the function registry")

    async def function_versions(self, keys: Sequence[tuple[str, int]]) -> list[FunctionVersion]:
        return []


class RecordingExecutionStore:
    def __init__(self) -> None:
        self.inserted: list[NewExecution] = []
        self.insert_calls = 0
        # function id -> its live version; a function not here is live at every version.
        self.live_versions: dict[str, int] = {}
        # Per insert call: whether its commit was to wake the dispatch loops.
        self.wakes: list[bool] = []

    async def insert_execution(
        self,
        new: NewExecution,
        *,
        idempotency: IdempotencyReservation | None = None,
        wake: bool = True,
    ) -> StoredResponse | None:
        self.insert_calls += 1
        self.inserted.append(new)
        self.wakes.append(wake)
        return None

    async def insert_if_current(self, new: NewExecution, *, wake: bool = True) -> bool:
        self.insert_calls += 1
        assert new.function_id is not None
        live = self.live_versions.get(new.function_id, new.function_version)
        if live != new.function_version:
            return False
        self.inserted.append(new)
        self.wakes.append(wake)
        return True

    async def insert_executions(self, news: Sequence[NewExecution], *, wake: bool = True) -> None:
        self.insert_calls += 1
        self.inserted.extend(news)
        self.wakes.append(wake)


class NoIdempotencyKeys:
    """No key was ever used: these tests submit without one."""

    async def find_response(
        self, *, user_id: str, key: str, ttl_seconds: int
    ) -> StoredResponse | None:
        return None


class FixedResolver:
    """Answers every lookup from a fixed table and records what was asked."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.asked: list[tuple[str, int]] = []

    async def resolve(self, host: str, port: int) -> list[str]:
        self.asked.append((host, port))
        return self.answers[host]


HOOK_HOST = "hooks.example"
PRIVATE_HOST = "private.example"


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
def resolver() -> FixedResolver:
    return FixedResolver(
        {HOOK_HOST: ["93.184.215.14"], PRIVATE_HOST: ["93.184.215.14", "10.0.0.7"]}
    )


class RecordingPromptDispatch:
    """Records what the use cases hand over for publishing once stored."""

    def __init__(self, *, active: bool) -> None:
        self.active = active
        self.handed: list[DueExecution] = []

    def dispatch(self, due: Sequence[DueExecution]) -> None:
        self.handed.extend(due)


def build_use_cases(
    store: RecordingExecutionStore,
    resolver: FixedResolver,
    policy: CallbackPolicy,
    function_store: InMemoryFunctionStore | None = None,
    prompt: RecordingPromptDispatch | None = None,
) -> ExecutionUseCases:
    functions = FunctionUseCases(
        function_store or InMemoryFunctionStore(FUNCTION),  # type: ignore[arg-type]
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
        callback_urls=PolicyCallbackUrlCheck(policy, resolver),
        idempotency=NoIdempotencyKeys(),
        prompt=prompt,
    )


@pytest.fixture
def use_cases(store: RecordingExecutionStore, resolver: FixedResolver) -> ExecutionUseCases:
    policy = CallbackPolicy(hosts=[HOOK_HOST, PRIVATE_HOST])
    return build_use_cases(store, resolver, policy)


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
    assert row.callback_url is None


async def test_an_accepted_callback_url_is_stored_after_a_lookup(
    use_cases: ExecutionUseCases, store: RecordingExecutionStore, resolver: FixedResolver
) -> None:
    url = f"https://{HOOK_HOST.upper()}/hooks/done?x=1"
    await use_cases.submit(
        principal(RUNNER),
        SubmitRequest(namespace="ns", name="fn", input={"n": 1}, callback_url=url),
    )
    [row] = store.inserted
    assert row.callback_url == url
    assert resolver.asked == [(HOOK_HOST, 443)]


@pytest.mark.parametrize(
    ("policy", "url", "says"),
    [
        (CallbackPolicy(), f"https://{HOOK_HOST}/h", "callbacks are not enabled on this instance"),
        (CallbackPolicy(hosts=[HOOK_HOST]), "https://other.example/h", "not in the allowed"),
        (CallbackPolicy(hosts=[HOOK_HOST]), f"http://{HOOK_HOST}/h", "only https"),
        (CallbackPolicy(any_host=True), f"https://{PRIVATE_HOST}/h", "10.0.0.7"),
    ],
)
async def test_a_rejected_callback_url_names_the_reason_and_stores_nothing(
    store: RecordingExecutionStore,
    resolver: FixedResolver,
    policy: CallbackPolicy,
    url: str,
    says: str,
) -> None:
    use_cases = build_use_cases(store, resolver, policy)
    with pytest.raises(CallbackUrlRejected) as caught:
        await use_cases.submit(
            principal(RUNNER),
            SubmitRequest(namespace="ns", name="fn", input={"n": 1}, callback_url=url),
        )
    assert says in caught.value.message
    assert [v.field for v in caught.value.violations] == ["callback_url"]
    assert store.inserted == []


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


async def test_submit_many_answers_each_in_order_and_stores_the_valid_ones_together(
    use_cases: ExecutionUseCases, store: RecordingExecutionStore
) -> None:
    requests = [
        SubmitRequest(namespace="ns", name="fn", input={"n": 1}),
        SubmitRequest(namespace="ns", name="missing", input={}),
        SubmitRequest(namespace="ns", name="fn", input={}),
        SubmitRequest(namespace="ns", name="fn", input={"n": 2}, callback_url="http://x/"),
        SubmitRequest(namespace="ns", name="fn", input={"n": 3}, delay_seconds=5),
    ]
    first, missing, invalid, rejected, delayed = await use_cases.submit_many(
        principal(RUNNER), requests
    )
    assert isinstance(missing, FunctionNotFound)
    assert isinstance(invalid, SchemaViolation)
    assert [v.field for v in invalid.violations] == ["input.n"]
    assert isinstance(rejected, CallbackUrlRejected)
    assert store.insert_calls == 1
    assert [(row.id, row.input, row.delay_seconds) for row in store.inserted] == [
        (first, {"n": 1}, 0),
        (delayed, {"n": 3}, 5),
    ]


async def test_submit_many_looks_each_function_up_once_and_checks_each_permission(
    store: RecordingExecutionStore, resolver: FixedResolver
) -> None:
    functions = InMemoryFunctionStore(FUNCTION)
    use_cases = build_use_cases(store, resolver, CallbackPolicy(hosts=[HOOK_HOST]), functions)
    requests = [SubmitRequest(namespace="ns", name="fn", input={"n": n}) for n in range(5)]

    outcomes = await use_cases.submit_many(principal(RUNNER), requests)
    assert all(isinstance(outcome, str) for outcome in outcomes)
    assert len(set(outcomes)) == 5
    assert functions.lookups == 1

    refused = await use_cases.submit_many(principal(), requests[:2])
    assert all(isinstance(outcome, PermissionDenied) for outcome in refused)
    assert len(store.inserted) == 5


# --- the function as last read ----------------------------------------------------------------


def changed_function(input_schema: Any) -> Function:
    """FUNCTION's next version, as another replica's update stores it."""
    return replace(FUNCTION, version=4, spec=replace(FUNCTION.spec, input_schema=input_schema))


async def test_later_submits_go_by_the_function_as_last_read(
    store: RecordingExecutionStore, resolver: FixedResolver
) -> None:
    functions = InMemoryFunctionStore(FUNCTION)
    use_cases = build_use_cases(store, resolver, CallbackPolicy(), functions)
    for n in range(3):
        await use_cases.submit(
            principal(RUNNER), SubmitRequest(namespace="ns", name="fn", input={"n": n})
        )
    assert functions.lookups == 1
    assert [row.input for row in store.inserted] == [{"n": 0}, {"n": 1}, {"n": 2}]


async def submit_then_change(
    store: RecordingExecutionStore, resolver: FixedResolver, input_schema: Any
) -> tuple[ExecutionUseCases, InMemoryFunctionStore]:
    """Use cases that stored one submit against FUNCTION, which then changed to its next
    version with `input_schema`, as another replica's update leaves it."""
    functions = InMemoryFunctionStore(FUNCTION)
    use_cases = build_use_cases(store, resolver, CallbackPolicy(), functions)
    await use_cases.submit(
        principal(RUNNER), SubmitRequest(namespace="ns", name="fn", input={"n": 1})
    )
    functions.functions[("ns", "fn")] = changed_function(input_schema)
    store.live_versions["f1"] = 4
    return use_cases, functions


async def test_a_changed_function_is_read_again_and_its_live_version_checks(
    store: RecordingExecutionStore, resolver: FixedResolver
) -> None:
    use_cases, functions = await submit_then_change(
        store, resolver, {"type": "object", "required": ["m"]}
    )

    # What the old version accepts, the live one refuses; nothing is stored against either.
    with pytest.raises(SchemaViolation):
        await use_cases.submit(
            principal(RUNNER), SubmitRequest(namespace="ns", name="fn", input={"n": 2})
        )
    await use_cases.submit(
        principal(RUNNER), SubmitRequest(namespace="ns", name="fn", input={"m": 3})
    )
    assert [(row.input, row.function_version) for row in store.inserted] == [
        ({"n": 1}, 3),
        ({"m": 3}, 4),
    ]
    assert functions.lookups == 2


async def test_a_check_the_last_read_version_fails_is_made_again_against_the_live_one(
    store: RecordingExecutionStore, resolver: FixedResolver
) -> None:
    use_cases, _ = await submit_then_change(store, resolver, {"type": "object"})

    await use_cases.submit(
        principal(RUNNER), SubmitRequest(namespace="ns", name="fn", input={"x": 2})
    )
    assert store.inserted[-1].function_version == 4


def with_prompt_dispatch(
    store: RecordingExecutionStore, resolver: FixedResolver, *, active: bool
) -> tuple[ExecutionUseCases, RecordingPromptDispatch]:
    prompt = RecordingPromptDispatch(active=active)
    return build_use_cases(store, resolver, CallbackPolicy(hosts=[]), prompt=prompt), prompt


async def test_a_due_submit_is_handed_to_prompt_dispatch_instead_of_waking_the_loops(
    store: RecordingExecutionStore, resolver: FixedResolver
) -> None:
    use_cases, prompt = with_prompt_dispatch(store, resolver, active=True)
    due = await use_cases.submit(
        principal(RUNNER), SubmitRequest(namespace="ns", name="fn", input={"n": 1})
    )
    delayed = await use_cases.submit(
        principal(RUNNER),
        SubmitRequest(namespace="ns", name="fn", input={"n": 2}, delay_seconds=30),
    )
    # The delayed row wakes the loops, which then sleep until it comes due.
    assert store.wakes == [False, True]
    assert prompt.handed == [DueExecution(id=due, kind="function")]
    assert delayed not in {execution.id for execution in prompt.handed}


async def test_submits_stored_together_wake_the_loops_if_any_of_them_waits(
    store: RecordingExecutionStore, resolver: FixedResolver
) -> None:
    use_cases, prompt = with_prompt_dispatch(store, resolver, active=True)
    now_only = await use_cases.submit_many(
        principal(RUNNER),
        [SubmitRequest(namespace="ns", name="fn", input={"n": n}) for n in range(2)],
    )
    mixed = await use_cases.submit_many(
        principal(RUNNER),
        [
            SubmitRequest(namespace="ns", name="fn", input={"n": 1}),
            SubmitRequest(namespace="ns", name="fn", input={"n": 2}, delay_seconds=5),
        ],
    )
    assert store.wakes == [False, True]
    assert [execution.id for execution in prompt.handed] == [*now_only, mixed[0]]


async def test_without_an_active_prompt_dispatch_every_submit_wakes_the_loops(
    store: RecordingExecutionStore, resolver: FixedResolver
) -> None:
    # An API-only replica, or one whose NATS connection is not up yet.
    use_cases, prompt = with_prompt_dispatch(store, resolver, active=False)
    await use_cases.submit(
        principal(RUNNER), SubmitRequest(namespace="ns", name="fn", input={"n": 1})
    )
    await use_cases.submit_many(
        principal(RUNNER), [SubmitRequest(namespace="ns", name="fn", input={"n": 2})]
    )
    assert store.wakes == [True, True]
    assert prompt.handed == []
