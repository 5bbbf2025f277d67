"""One LISTEN connection per process: wakes the dispatcher, the event publisher and the
WaitExecution waiters."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from sqlalchemy.engine import make_url

from sinas_scheduler.store import COMPLETION_CHANNEL, DISPATCH_CHANNEL, EVENTS_CHANNEL

logger = logging.getLogger(__name__)

RECONNECT_DELAY_SECONDS = 1.0


def libpq_url(database_url: str) -> str:
    """The plain libpq form of a `postgresql+psycopg://` SQLAlchemy URL."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


class PostgresListener:
    """Feeds NOTIFY messages from any replica into in-memory events of this process."""

    def __init__(self, database_url: str) -> None:
        self._url = libpq_url(database_url)
        self.dispatch_wakeup = asyncio.Event()
        self.events_wakeup = asyncio.Event()
        self.listening = asyncio.Event()
        self._waiters: dict[str, set[asyncio.Event]] = {}

    @contextmanager
    def watch(self, execution_id: str) -> Iterator[asyncio.Event]:
        event = asyncio.Event()
        self._waiters.setdefault(execution_id, set()).add(event)
        try:
            yield event
        finally:
            waiting = self._waiters.get(execution_id)
            if waiting is not None:
                waiting.discard(event)
                if not waiting:
                    del self._waiters[execution_id]

    def _ended(self, execution_id: str) -> None:
        for event in self._waiters.get(execution_id, ()):
            event.set()

    def _wake_everyone(self) -> None:
        # After a reconnect, notifications sent meanwhile are lost: let everyone re-check.
        self.dispatch_wakeup.set()
        self.events_wakeup.set()
        for events in self._waiters.values():
            for event in events:
                event.set()

    async def run(self) -> None:
        while True:
            try:
                await self._listen()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("listen connection lost", extra={"action": "listen"})
            self.listening.clear()
            await asyncio.sleep(RECONNECT_DELAY_SECONDS)

    async def _listen(self) -> None:
        async with await psycopg.AsyncConnection.connect(self._url, autocommit=True) as conn:
            await conn.execute(f"LISTEN {DISPATCH_CHANNEL}")
            await conn.execute(f"LISTEN {COMPLETION_CHANNEL}")
            await conn.execute(f"LISTEN {EVENTS_CHANNEL}")
            self.listening.set()
            self._wake_everyone()
            async for notify in conn.notifies():
                if notify.channel == DISPATCH_CHANNEL:
                    self.dispatch_wakeup.set()
                elif notify.channel == COMPLETION_CHANNEL:
                    self._ended(notify.payload)
                elif notify.channel == EVENTS_CHANNEL:
                    self.events_wakeup.set()
