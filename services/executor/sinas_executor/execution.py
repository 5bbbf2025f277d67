"""One claimed execution from start to outcome: context, input check, run, output check."""

from __future__ import annotations

from typing import Any

from sinas_common.timeconv import utcnow
from sinas_executor.models import (
    ClaimedExecution,
    ExecutionOutcome,
    FunctionVersion,
    InputChannel,
    OutcomeStatus,
    RunRequest,
    WorkerKey,
)
from sinas_executor.pool import FunctionRunner
from sinas_executor.validation import FunctionChecks, ValidationFailed

# What a function version without a positive timeout runs under (upstream's FUNCTION_TIMEOUT).
DEFAULT_TIMEOUT_SECONDS = 300


def build_context(claimed: ClaimedExecution, api_url: str) -> dict[str, Any]:
    """What a function's handler receives as `context`."""
    return {
        "user_id": claimed.user_id,
        "user_email": claimed.user_email,
        "access_token": claimed.access_token,
        "execution_id": claimed.execution_id,
        "trigger_type": claimed.trigger_type,
        "trigger_id": claimed.trigger_id,
        "batch_id": claimed.batch_id or None,
        "chat_id": claimed.chat_id or None,
        "api_url": api_url,
    }


def _failed(claimed: ClaimedExecution, error: str, **extra: Any) -> ExecutionOutcome:
    return ExecutionOutcome(
        execution_id=claimed.execution_id,
        attempt=claimed.attempt,
        status=OutcomeStatus.FAILED,
        error=error,
        completed_at=utcnow(),
        **extra,
    )


async def execute(
    claimed: ClaimedExecution,
    function: FunctionVersion | None,
    runner: FunctionRunner,
    *,
    api_url: str,
    inputs: InputChannel | None = None,
    checks: FunctionChecks | None = None,
) -> ExecutionOutcome:
    """Runs one claimed attempt; every failure comes back as a FAILED outcome.

    `checks` are the function's schema checks when the caller made them ahead (once for the
    runs of a claim); they are made here otherwise.
    """
    if function is None:
        return _failed(claimed, "The function version of this execution is unavailable")
    if checks is None:
        checks = FunctionChecks.of(function)
    try:
        checks.input.validate(claimed.input_data, root="input")
    except ValidationFailed as exc:
        return _failed(claimed, f"Input validation failed: {exc}")
    request = RunRequest(
        key=WorkerKey(
            user_id=claimed.user_id,
            function_id=function.function_id,
            function_version=function.version,
        ),
        code=function.code,
        filename=f"<function {function.namespace}/{function.name} v{function.version}>",
        input_data=claimed.input_data,
        context=build_context(claimed, api_url),
        timeout_seconds=float(function.timeout_seconds or DEFAULT_TIMEOUT_SECONDS),
        inputs=inputs,
    )
    result = await runner.run(request)
    if result.error is not None:
        return _failed(
            claimed, result.error, traceback=result.traceback, timed_out=result.timed_out
        )
    try:
        checks.output.validate(result.output, root="output")
    except ValidationFailed as exc:
        return _failed(claimed, f"Output validation failed: {exc}")
    return ExecutionOutcome(
        execution_id=claimed.execution_id,
        attempt=claimed.attempt,
        status=OutcomeStatus.COMPLETED,
        output=result.output,
        completed_at=utcnow(),
    )
