"""The reaper loop: fails executions whose last allowed attempt lost its worker, and callback
claims whose notifier was lost before it recorded an outcome."""

from __future__ import annotations

import asyncio
import logging

from sinas_scheduler.callbacks import CallbackUseCases
from sinas_scheduler.scheduler import WorkerUseCases

logger = logging.getLogger(__name__)


async def run_reaper(
    worker: WorkerUseCases, callbacks: CallbackUseCases, interval_seconds: float
) -> None:
    while True:
        try:
            await worker.reap()
            await callbacks.reap()
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("reaper pass failed", extra={"action": "reap"})
        await asyncio.sleep(interval_seconds)
