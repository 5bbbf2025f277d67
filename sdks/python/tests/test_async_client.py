"""AsyncSinasClient against a running system: the same surface as SinasClient, awaited."""

from __future__ import annotations

import pytest

from sinas import AsyncSinasClient, SinasNotFoundError, SinasValidationError
from sinas_devstack.stack import Stack

from .conftest import Function


@pytest.fixture
async def client(stack: Stack) -> AsyncSinasClient:
    return AsyncSinasClient(
        base_url=stack.gateway_url, api_key=stack.config.admin_key, use_env=False
    )


async def test_enqueue_wait_and_batch(client: AsyncSinasClient, function: Function) -> None:
    async with client:
        me = await client.auth.get_me()
        assert me["email"]
        queued = await client.functions.enqueue(function.namespace, function.name, {"n": 5})
        done = await client.executions.wait(queued["execution_id"], timeout=60)
        assert (done["status"], done["output_data"]) == ("COMPLETED", {"n": 5, "batch_id": None})

        submitted = await client.functions.submit_batch(
            function.namespace, function.name, [{"n": i} for i in range(5)]
        )
        finished = await client.batches.wait(submitted["batch_id"], timeout=90, poll_interval=0.2)
        assert (finished["status"], finished["completed"]) == ("completed", 5)
        children = [
            child
            async for child in client.batches.iter_executions(submitted["batch_id"], page_size=2)
        ]
        assert [child["execution_id"] for child in children] == submitted["execution_ids"]
        assert [child["trigger_id"] for child in children] == [f"batch:{i}" for i in range(5)]
        page = await client.batches.list_executions(submitted["batch_id"], limit=2, offset=3)
        assert [child["execution_id"] for child in page] == submitted["execution_ids"][3:]
        listed = await client.executions.list(batch_id=submitted["batch_id"], limit=10)
        assert sorted(item["execution_id"] for item in listed) == sorted(submitted["execution_ids"])


async def test_errors_match_the_sync_client(client: AsyncSinasClient, function: Function) -> None:
    async with client:
        with pytest.raises(SinasNotFoundError):
            await client.executions.get("00000000-0000-0000-0000-000000000000")
        with pytest.raises(SinasValidationError) as invalid:
            await client.functions.enqueue(function.namespace, function.name, {"n": "seven"})
        assert invalid.value.status_code == 422
        with pytest.raises(SinasNotFoundError):
            await client.chats.get("00000000-0000-0000-0000-000000000000")
