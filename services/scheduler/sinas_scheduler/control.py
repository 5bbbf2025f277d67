"""The control port (fast hints to executors) and its NATS core adapter.

What is published is only a hint: executors confirm it with a Heartbeat before acting.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

from nats.aio.client import Client as NatsClient

from sinas_common.control import ControlMessage, control_subject
from sinas_common.settings import NatsSettings

logger = logging.getLogger(__name__)


class ControlPublisher(Protocol):
    """Tells executors at once; called after the commit that made the news true."""

    async def publish(self, messages: Sequence[ControlMessage]) -> None: ...


class NatsControlPublisher:
    """Best effort: a lost message is repaired by the executor's next heartbeat."""

    def __init__(self, client: NatsClient, settings: NatsSettings) -> None:
        self._client = client
        self._subject = control_subject(settings)

    async def publish(self, messages: Sequence[ControlMessage]) -> None:
        try:
            for message in messages:
                await self._client.publish(self._subject, message.encode())
            if messages:
                await self._client.flush()
        except Exception:
            logger.warning(
                "control message not published",
                extra={"action": "control_publish", "count": len(messages)},
                exc_info=True,
            )


class HeartbeatOnlyControl:
    """For a replica without NATS: executors learn the news from their heartbeats."""

    async def publish(self, messages: Sequence[ControlMessage]) -> None:
        return None
