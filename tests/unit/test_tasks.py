"""Background tasks end on stop even when one swallows a cancellation."""

from __future__ import annotations

import asyncio

from sinas_common.tasks import cancel_and_wait


async def test_a_task_that_swallows_one_cancellation_still_ends() -> None:
    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                swallowed += 1
                if swallowed > 1:
                    raise

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)

    await asyncio.wait_for(cancel_and_wait([task]), timeout=30)

    assert task.cancelled()
    assert swallowed == 2
