"""Callback claims over a recording fake: payload shapes, timestamps, the callback token."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from sinas_common.errors import Unauthenticated
from sinas_scheduler.callbacks import (
    CallbackLimits,
    CallbackUseCases,
    callback_payload,
    webhook_id,
)
from sinas_scheduler.identity import Access, Authenticator
from sinas_scheduler.models import (
    NOTIFIER_LOST_ERROR,
    CallbackOutcome,
    CallbackRow,
    ExecutionStatus,
    Role,
    User,
)
from sinas_scheduler.store import PublishTerminated
from sinas_scheduler.tokens import SCOPE_CALLBACK, TokenService, generate_signing_key

STARTED = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
FINISHED = datetime(2026, 1, 2, 3, 4, 7, tzinfo=UTC)
USER = User(id="user-1", email="u@example.com", roles=(), created_at=STARTED)


def row(**overrides: Any) -> CallbackRow:
    values: dict[str, Any] = {
        "execution_id": "exec-1",
        "callback_url": "https://hooks.example/done",
        "user_id": USER.id,
        "user_email": USER.email,
        "namespace": "ns",
        "name": "fn",
        "trigger_id": "runtime-api",
        "status": ExecutionStatus.COMPLETED,
        "timed_out": False,
        "output": {"n": 2**60},
        "error": None,
        "started_at": STARTED,
        "completed_at": FINISHED,
        "duration_ms": 1322,
        **overrides,
    }
    return CallbackRow(**values)


class RecordingCallbackStore:
    """Claims whatever rows it holds, once; records what it was asked."""

    def __init__(self, *rows: CallbackRow) -> None:
        self.rows = {r.execution_id: r for r in rows}
        self.claimed: list[list[str]] = []
        self.recorded: list[CallbackOutcome] = []
        self.stale_calls: list[tuple[float, str]] = []

    async def claim_callbacks(self, execution_ids: Sequence[str]) -> list[CallbackRow]:
        self.claimed.append(list(execution_ids))
        return [self.rows.pop(i) for i in execution_ids if i in self.rows]

    async def record_callback_outcomes(self, outcomes: Sequence[CallbackOutcome]) -> list[str]:
        self.recorded.extend(outcomes)
        return [o.execution_id for o in outcomes]

    async def fail_stale_claims(self, *, claim_timeout_seconds: float, error: str) -> list[str]:
        self.stale_calls.append((claim_timeout_seconds, error))
        return ["exec-stale"]

    async def publish_terminated(self, *, limit: int, publish: PublishTerminated) -> int:
        raise AssertionError("the use cases never publish")


class OneUserIdentityStore:
    async def user_with_permissions(self, user_id: str) -> tuple[User, frozenset[str]] | None:
        return (
            (USER, frozenset({"sinas.functions/*/*.execute:own"})) if user_id == USER.id else None
        )

    async def key_holder(self, key_hash: str) -> None:
        return None

    async def create_role(self, name: str, permissions: Sequence[str]) -> Role:
        raise AssertionError("not used")


@pytest.fixture
def tokens() -> TokenService:
    return TokenService(generate_signing_key(), [])


def use_cases(store: RecordingCallbackStore, tokens: TokenService) -> CallbackUseCases:
    return CallbackUseCases(
        callbacks=store,
        tokens=tokens,
        limits=CallbackLimits(claim_timeout_seconds=42.0, token_seconds=300),
    )


def test_success_payload_has_the_result_and_no_error() -> None:
    assert callback_payload(row()) == {
        "execution_id": "exec-1",
        "trigger_id": "runtime-api",
        "function": {"namespace": "ns", "name": "fn"},
        "status": "success",
        "started_at": "2026-01-02T03:04:05.678000+00:00",
        "finished_at": "2026-01-02T03:04:07+00:00",
        "duration_ms": 1322,
        "result": {"n": 2**60},
        "error": None,
    }


def test_failure_payload_has_the_error_and_no_result() -> None:
    payload = callback_payload(
        row(status=ExecutionStatus.FAILED, output={"partial": 1}, error="ValueError: boom")
    )
    assert (payload["status"], payload["result"], payload["error"]) == (
        "failure",
        None,
        "ValueError: boom",
    )


def test_a_timed_out_run_reports_timeout() -> None:
    payload = callback_payload(
        row(status=ExecutionStatus.FAILED, timed_out=True, output=None, error="timed out")
    )
    assert (payload["status"], payload["result"], payload["error"]) == (
        "timeout",
        None,
        "timed out",
    )


def test_a_cancelled_run_is_a_failure_with_an_error() -> None:
    payload = callback_payload(row(status=ExecutionStatus.CANCELLED, output=None))
    assert (payload["status"], payload["result"]) == ("failure", None)
    assert payload["error"] == "Execution ended CANCELLED"


def test_timestamps_are_utc_with_an_offset_and_null_when_unset() -> None:
    elsewhere = timezone(timedelta(hours=5, minutes=30))
    payload = callback_payload(
        row(started_at=None, completed_at=datetime(2026, 1, 2, 8, 34, 7, tzinfo=elsewhere))
    )
    assert payload["started_at"] is None
    assert payload["finished_at"] == "2026-01-02T03:04:07+00:00"


async def test_claim_returns_payload_webhook_id_and_a_callback_token(
    tokens: TokenService,
) -> None:
    store = RecordingCallbackStore(row(), row(execution_id="exec-2", trigger_id="t:2"))

    claim = await use_cases(store, tokens).claim("n1", ["exec-1", "gone", "exec-2", "gone"])

    assert store.claimed == [["exec-1", "gone", "exec-2", "gone"]]
    assert claim.skipped == ("gone",)
    first, second = claim.deliveries
    assert (first.execution_id, first.webhook_id) == ("exec-1", "msg_exec-1")
    assert first.callback_url == "https://hooks.example/done"
    assert json.loads(first.payload) == callback_payload(row())
    assert json.loads(second.payload)["trigger_id"] == "t:2"
    assert webhook_id("exec-2") == second.webhook_id
    claims = tokens.verify(first.access_token)
    assert (claims.user_id, claims.email, claims.scope) == (USER.id, USER.email, SCOPE_CALLBACK)
    assert (claims.execution_id, claims.execution_depth) == (None, None)
    lifetime = claims.expires_at - datetime.now(UTC)
    assert timedelta(seconds=240) < lifetime <= timedelta(seconds=300)


async def test_a_callback_token_is_refused_unless_the_call_accepts_its_scope(
    tokens: TokenService,
) -> None:
    claim = await use_cases(RecordingCallbackStore(row()), tokens).claim("n1", ["exec-1"])
    metadata = [("authorization", f"Bearer {claim.deliveries[0].access_token}")]
    auth = Authenticator(OneUserIdentityStore(), tokens)  # type: ignore[arg-type]

    with pytest.raises(Unauthenticated):
        await auth.authenticate(metadata)
    with pytest.raises(Unauthenticated):
        await auth.authenticate(metadata, access=Access.RUNTIME)
    principal = await auth.authenticate(metadata, access=Access.ME)
    assert principal.user == USER
    assert principal.execution_id is None


async def test_record_passes_outcomes_and_reap_fails_stale_claims(tokens: TokenService) -> None:
    store = RecordingCallbackStore()
    cases = use_cases(store, tokens)
    outcome = CallbackOutcome(execution_id="exec-1", sent=True, response_code=204)

    assert await cases.record([outcome]) == ["exec-1"]
    assert store.recorded == [outcome]
    assert await cases.reap() == ["exec-stale"]
    assert store.stale_calls == [(42.0, NOTIFIER_LOST_ERROR)]
