"""The reaper loop: fails executions whose last allowed attempt lost its worker, paused
executions whose input deadline passed, and callback claims whose notifier was lost before it
recorded an outcome."""

from __future__ import annotations

import asyncio
import logging

from sinas_scheduler.callbacks import CallbackUseCases
from sinas_scheduler.interaction import InteractionUseCases
from sinas_scheduler.scheduler import WorkerUseCases

logger = logging.getLogger(__name__)


async def run_reaper(
    worker: WorkerUseCases,
    callbacks: CallbackUseCases,
    interaction: InteractionUseCases,
    interval_seconds: float,
) -> None:
    while True:
        try:
            await worker.reap()
            await interaction.expire_inputs()
            await callbacks.reap()
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("reaper pass failed", extra={"action": "reap"})
        await asyncio.sleep(interval_seconds)
