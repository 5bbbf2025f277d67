"""SinasClient against a running system: every resource, upstream's shapes, and its errors."""

from __future__ import annotations

import pytest

from sinas import (
    SinasAuthError,
    SinasClient,
    SinasConflictError,
    SinasNotFoundError,
    SinasPermissionError,
    SinasTimeoutError,
    SinasValidationError,
)
from sinas_devstack.stack import Stack

from .conftest import Function, UserFactory


@pytest.fixture
def client(stack: Stack) -> SinasClient:
    return SinasClient(base_url=stack.gateway_url, api_key=stack.config.admin_key, use_env=False)


def test_enqueue_then_wait_returns_the_finished_execution(
    client: SinasClient, function: Function
) -> None:
    with client:
        queued = client.functions.enqueue(
            function.namespace, function.name, {"n": 7}, trigger_id="sdk-test"
        )
        assert queued["status"] == "queued"
        done = client.executions.wait(queued["execution_id"], timeout=60)
        assert done["status"] == "COMPLETED"
        assert done["output_data"] == {"n": 7, "batch_id": None}
        assert client.executions.get(queued["execution_id"]) == done
        listed = client.executions.list(trigger_id="sdk-test", function_name=function.name)
        assert [item["execution_id"] for item in listed] == [queued["execution_id"]]


def test_execute_waits_and_answers_upstreams_shape(client: SinasClient, function: Function) -> None:
    with client:
        answer = client.functions.execute(function.namespace, function.name, {"n": 3}, timeout=60)
    assert answer["status"] == "success"
    assert answer["result"] == {"n": 3, "batch_id": None}
    assert answer["error"] is None


def test_a_batch_pages_waits_and_lists(client: SinasClient, function: Function) -> None:
    inputs = [{"n": i, "fail": i == 4} for i in range(7)]
    with client:
        submitted = client.functions.submit_batch(
            function.namespace, function.name, inputs, trigger_id_prefix="doc"
        )
        assert submitted["total"] == 7
        assert len(submitted["execution_ids"]) == 7
        finished = client.batches.wait(submitted["batch_id"], timeout=90, poll_interval=0.2)
        assert (finished["status"], finished["completed"], finished["failed"]) == ("partial", 6, 1)

        first_page = client.batches.list_executions(submitted["batch_id"], limit=3)
        assert isinstance(first_page, list)
        assert [item["trigger_id"] for item in first_page] == ["doc:0", "doc:1", "doc:2"]
        failed = client.batches.list_executions(submitted["batch_id"], status="failed")
        assert [item["execution_id"] for item in failed] == [submitted["execution_ids"][4]]

        every = list(client.batches.iter_executions(submitted["batch_id"], page_size=2))
        assert [item["execution_id"] for item in every] == submitted["execution_ids"]
        assert submitted["batch_id"] in [batch["batch_id"] for batch in client.batches.list()]


def test_cancel_stops_delayed_children(client: SinasClient, function: Function) -> None:
    with client:
        submitted = client.functions.submit_batch(
            function.namespace, function.name, [{"n": 1}, {"n": 2}], delay_seconds=3600
        )
        cancelled = client.batches.cancel(submitted["batch_id"])
        assert cancelled == {
            "batch_id": submitted["batch_id"],
            "status": "cancelled",
            "cancelled_children": 2,
        }
        # A second cancel is harmless, which is why the SDK may retry it.
        assert client.batches.cancel(submitted["batch_id"])["cancelled_children"] == 0


def test_a_wait_that_runs_out_raises(client: SinasClient, function: Function) -> None:
    with client:
        queued = client.functions.enqueue(
            function.namespace, function.name, {"n": 1}, delay_seconds=3600
        )
        with pytest.raises(SinasTimeoutError):
            client.executions.wait(queued["execution_id"], timeout=0.5, poll_interval=0.1)


def test_errors_are_typed_by_status(client: SinasClient, function: Function, stack: Stack) -> None:
    with client:
        with pytest.raises(SinasNotFoundError) as missing:
            client.functions.enqueue(function.namespace, "nope", {"n": 1})
        assert missing.value.status_code == 404
        with pytest.raises(SinasValidationError) as invalid:
            client.functions.submit_batch(function.namespace, function.name, [{"n": 1}, {}])
        assert invalid.value.status_code == 422
        assert "inputs" in invalid.value.message
        with pytest.raises(SinasNotFoundError):
            client.batches.get("00000000-0000-0000-0000-000000000000")

        key = "same-key"
        first = client.functions.enqueue(
            function.namespace, function.name, {"n": 1}, idempotency_key=key, delay_seconds=3600
        )
        again = client.functions.enqueue(
            function.namespace, function.name, {"n": 1}, idempotency_key=key, delay_seconds=3600
        )
        assert again == first
        with pytest.raises(SinasConflictError) as conflict:
            client.functions.enqueue(
                function.namespace, function.name, {"n": 2}, idempotency_key=key
            )
        assert conflict.value.status_code == 409

    with (
        SinasClient(base_url=stack.gateway_url, api_key="sk-wrong", use_env=False) as stranger,
        pytest.raises(SinasAuthError) as unauthenticated,
    ):
        stranger.auth.get_me()
    assert unauthenticated.value.status_code == 401


async def test_a_user_without_the_permission_gets_a_permission_error(
    stack: Stack, function: Function, create_user: UserFactory
) -> None:
    user = await create_user(["sinas.executions.read:own"])
    with SinasClient(base_url=stack.gateway_url, api_key=user.api_key, use_env=False) as client:
        assert client.auth.get_me()["email"] == user.email
        with pytest.raises(SinasPermissionError) as denied:
            client.functions.enqueue(function.namespace, function.name, {"n": 1})
    assert denied.value.status_code == 403


def test_the_environment_supplies_url_and_credential(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SINAS_BASE_URL", stack.gateway_url)
    monkeypatch.setenv("SINAS_API_KEY", "sk-wrong")
    # A token wins over an API key.
    monkeypatch.setenv("SINAS_TOKEN", stack.config.admin_key)
    with SinasClient() as client:
        assert client.auth.get_me()["email"]
    with pytest.raises(ValueError, match="base_url"):
        SinasClient(use_env=False)
