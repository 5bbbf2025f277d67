"""Validation around a run and the context handed to code, over a recording fake runner."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from sinas_executor.execution import execute
from sinas_executor.models import (
    ClaimedExecution,
    FunctionVersion,
    OutcomeStatus,
    RunRequest,
    RunResult,
)
from sinas_executor.validation import FunctionChecks, SchemaCheck, ValidationFailed


@dataclass
class RecordingRunner:
    """Returns a canned result and records each request."""

    result: RunResult = field(default_factory=lambda: RunResult(output={"ok": True}))
    requests: list[RunRequest] = field(default_factory=list)

    async def run(self, request: RunRequest) -> RunResult:
        self.requests.append(request)
        return self.result


SCHEMA_IN = {
    "type": "object",
    "properties": {
        "n": {"type": "integer"},
        "items": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["n"],
}
SCHEMA_OUT = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}


def claimed(**overrides: Any) -> ClaimedExecution:
    values: dict[str, Any] = {
        "execution_id": "exec-1",
        "attempt": 2,
        "user_id": "user-1",
        "user_email": "u@example.com",
        "function_id": "fn-1",
        "function_version": 3,
        "input_data": {"n": 1},
        "trigger_type": "API",
        "trigger_id": "runtime-api",
        "batch_id": "",
        "chat_id": "",
        "access_token": "token-abc",
        "depth": 1,
    }
    values.update(overrides)
    return ClaimedExecution(**values)


def function(**overrides: Any) -> FunctionVersion:
    values: dict[str, Any] = {
        "function_id": "fn-1",
        "version": 3,
        "namespace": "default",
        "name": "adder",
        "code": "def handler(i, c):\n    return {'ok': True}\n",
        "input_schema": SCHEMA_IN,
        "output_schema": SCHEMA_OUT,
        "timeout_seconds": 7,
    }
    values.update(overrides)
    return FunctionVersion(**values)


async def test_completed_run_hands_code_the_full_context() -> None:
    runner = RecordingRunner()
    outcome = await execute(
        claimed(batch_id="batch-9"), function(), runner, api_url="http://gateway:8000"
    )
    assert outcome.status is OutcomeStatus.COMPLETED
    assert outcome.output == {"ok": True}
    assert outcome.attempt == 2
    (request,) = runner.requests
    assert request.timeout_seconds == 7
    assert request.key.user_id == "user-1" and request.key.function_version == 3
    assert request.context == {
        "user_id": "user-1",
        "user_email": "u@example.com",
        "access_token": "token-abc",
        "execution_id": "exec-1",
        "trigger_type": "API",
        "trigger_id": "runtime-api",
        "batch_id": "batch-9",
        "chat_id": None,
        "api_url": "http://gateway:8000",
    }


async def test_invalid_input_fails_without_running() -> None:
    runner = RecordingRunner()
    outcome = await execute(
        claimed(input_data={"n": "one"}), function(), runner, api_url="http://x"
    )
    assert outcome.status is OutcomeStatus.FAILED
    assert outcome.error == "Input validation failed: input.n: 'one' is not of type 'integer'"
    assert runner.requests == []


async def test_output_breaking_its_schema_fails() -> None:
    runner = RecordingRunner(result=RunResult(output={"ok": "yes"}))
    outcome = await execute(claimed(), function(), runner, api_url="http://x")
    assert outcome.status is OutcomeStatus.FAILED
    assert outcome.error == "Output validation failed: output.ok: 'yes' is not of type 'boolean'"


async def test_runner_failure_keeps_error_traceback_and_timeout_flag() -> None:
    runner = RecordingRunner(
        result=RunResult(error="Function execution timed out after 7 seconds", timed_out=True)
    )
    outcome = await execute(claimed(), function(), runner, api_url="http://x")
    assert outcome.status is OutcomeStatus.FAILED
    assert outcome.timed_out
    assert outcome.error == "Function execution timed out after 7 seconds"


async def test_missing_function_version_fails() -> None:
    outcome = await execute(claimed(), None, RecordingRunner(), api_url="http://x")
    assert outcome.status is OutcomeStatus.FAILED


def test_validation_names_nested_paths() -> None:
    check = SchemaCheck(SCHEMA_IN)
    with pytest.raises(ValidationFailed, match=r"^input\.items\[1\]: 5 is not of type 'string'$"):
        check.validate({"n": 1, "items": ["a", 5]}, root="input")
    # One check serves many values.
    check.validate({"n": 2, "items": ["b"]}, root="input")


def test_empty_schema_accepts_anything() -> None:
    SchemaCheck({}).validate({"anything": [1, 2]}, root="input")
    SchemaCheck(None).validate(2**70, root="output")


def test_an_unusable_schema_fails_every_value() -> None:
    check = SchemaCheck({"type": "no-such-type"})
    with pytest.raises(ValidationFailed, match=r"^invalid schema: not a valid JSON Schema"):
        check.validate({}, root="input")


async def test_checks_made_ahead_are_the_ones_applied() -> None:
    """A claim's runs share checks made once; the run applies those it is given."""
    runner = RecordingRunner()
    strict = function()
    lenient = FunctionChecks.of(replace(strict, input_schema={}, output_schema={}))
    outcome = await execute(
        claimed(input_data={"n": "not a number"}),
        strict,
        runner,
        api_url="http://x",
        checks=lenient,
    )
    assert outcome.status is OutcomeStatus.COMPLETED
