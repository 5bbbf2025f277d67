"""The reaper loop: fails executions whose last allowed attempt lost its worker."""

from __future__ import annotations

import asyncio
import logging

from sinas_scheduler.scheduler import WorkerUseCases

logger = logging.getLogger(__name__)


async def run_reaper(worker: WorkerUseCases, interval_seconds: float) -> None:
    while True:
        try:
            await worker.reap()
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("reaper pass failed", extra={"action": "reap"})
        await asyncio.sleep(interval_seconds)
