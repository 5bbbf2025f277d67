"""Retention: deletes finished executions, finished batches whose children are all gone, chats
(with their messages) none of whose executions is left, and expired idempotency keys, in
small chunks of short transactions that never block submits."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

logger = logging.getLogger(__name__)

SECONDS_PER_DAY = 86400


class RetentionStore(Protocol):
    async def delete_finished_executions(self, *, older_than_seconds: float, limit: int) -> int:
        """Deletes up to `limit` finished executions, skipping rows others hold; the count."""
        ...

    async def delete_finished_batches(self, *, older_than_seconds: float, limit: int) -> int:
        """Deletes up to `limit` finished batches none of whose children is left; the count."""
        ...

    async def delete_idle_chats(self, *, older_than_seconds: float, limit: int) -> int:
        """Deletes up to `limit` chats idle that long none of whose executions is left (their
        messages with them); the count."""
        ...

    async def delete_expired_idempotency_keys(self, *, ttl_seconds: int, limit: int) -> int:
        """Deletes up to `limit` keys past their lifetime; the count."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class RetentionPolicy:
    retention_seconds: float
    idempotency_ttl_seconds: int
    chunk_size: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RetentionCounts:
    executions: int
    batches: int
    idempotency_keys: int
    chats: int = 0


class Retention:
    """One sweep deletes everything due, a chunk per statement and transaction."""

    def __init__(self, store: RetentionStore, policy: RetentionPolicy) -> None:
        self._store = store
        self._policy = policy

    async def sweep(self) -> RetentionCounts:
        policy = self._policy
        # Children first: a batch goes only once none of its children is left.
        executions = await self._drain(
            lambda: self._store.delete_finished_executions(
                older_than_seconds=policy.retention_seconds, limit=policy.chunk_size
            )
        )
        batches = await self._drain(
            lambda: self._store.delete_finished_batches(
                older_than_seconds=policy.retention_seconds, limit=policy.chunk_size
            )
        )
        # After the executions: a chat goes only once no execution points at it.
        chats = await self._drain(
            lambda: self._store.delete_idle_chats(
                older_than_seconds=policy.retention_seconds, limit=policy.chunk_size
            )
        )
        keys = await self._drain(
            lambda: self._store.delete_expired_idempotency_keys(
                ttl_seconds=policy.idempotency_ttl_seconds, limit=policy.chunk_size
            )
        )
        counts = RetentionCounts(
            executions=executions, batches=batches, idempotency_keys=keys, chats=chats
        )
        if executions or batches or chats or keys:
            logger.info(
                "retention sweep deleted rows",
                extra={
                    "action": "retention",
                    "executions": executions,
                    "batches": batches,
                    "chats": chats,
                    "idempotency_keys": keys,
                },
            )
        return counts

    async def _drain(self, delete_chunk: Callable[[], Awaitable[int]]) -> int:
        total = 0
        while True:
            deleted = await delete_chunk()
            total += deleted
            # A short chunk means nothing due is left (or the rest is held by another replica).
            if deleted < self._policy.chunk_size:
                return total
            await asyncio.sleep(0)


async def run_retention(retention: Retention, interval_seconds: float) -> None:
    while True:
        try:
            await retention.sweep()
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("retention sweep failed", extra={"action": "retention"})
        await asyncio.sleep(interval_seconds)
