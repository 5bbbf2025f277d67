"""Quick path: start, create a function, submit, read back."""

from __future__ import annotations

from sinas_scheduler.testing import RunningScheduler


async def test_submit_and_get(scheduler: RunningScheduler) -> None:
    await scheduler.create_function()
    execution_id = await scheduler.submit(scheduler.admin, {"n": 2**60})
    execution = await scheduler.get(scheduler.admin, execution_id)
    assert execution.execution_id == execution_id
