"""The retention sweep over a recording store: chunk by chunk, children before batches."""

from __future__ import annotations

import pytest

from sinas_scheduler.retention import Retention, RetentionCounts, RetentionPolicy


class RecordingRetentionStore:
    """Holds a number of due rows per kind and records every delete call in order."""

    def __init__(
        self, *, executions: int = 0, batches: int = 0, chats: int = 0, keys: int = 0
    ) -> None:
        self.due = {"executions": executions, "batches": batches, "chats": chats, "keys": keys}
        self.calls: list[tuple[str, float, int]] = []

    def _take(self, kind: str, age: float, limit: int) -> int:
        self.calls.append((kind, age, limit))
        taken = min(limit, self.due[kind])
        self.due[kind] -= taken
        return taken

    async def delete_finished_executions(self, *, older_than_seconds: float, limit: int) -> int:
        return self._take("executions", older_than_seconds, limit)

    async def delete_finished_batches(self, *, older_than_seconds: float, limit: int) -> int:
        return self._take("batches", older_than_seconds, limit)

    async def delete_idle_chats(self, *, older_than_seconds: float, limit: int) -> int:
        return self._take("chats", older_than_seconds, limit)

    async def delete_expired_idempotency_keys(self, *, ttl_seconds: int, limit: int) -> int:
        return self._take("keys", ttl_seconds, limit)


POLICY = RetentionPolicy(
    retention_seconds=30 * 86400, idempotency_ttl_seconds=86400, chunk_size=500
)


async def test_a_sweep_deletes_in_chunks_until_one_comes_back_short() -> None:
    store = RecordingRetentionStore(executions=1200, batches=3, chats=2, keys=500)
    counts = await Retention(store, POLICY).sweep()
    assert counts == RetentionCounts(executions=1200, batches=3, idempotency_keys=500, chats=2)
    assert store.calls == [
        ("executions", 30 * 86400, 500),
        ("executions", 30 * 86400, 500),
        ("executions", 30 * 86400, 500),
        ("batches", 30 * 86400, 500),
        ("chats", 30 * 86400, 500),
        ("keys", 86400, 500),
        ("keys", 86400, 500),
    ]


@pytest.mark.parametrize("chunk_size", [1, 7])
async def test_children_go_before_their_batches_whatever_the_chunk(chunk_size: int) -> None:
    store = RecordingRetentionStore(executions=10, batches=2)
    policy = RetentionPolicy(
        retention_seconds=60, idempotency_ttl_seconds=60, chunk_size=chunk_size
    )
    await Retention(store, policy).sweep()
    kinds = [kind for kind, _, _ in store.calls]
    assert kinds.index("batches") > max(i for i, k in enumerate(kinds) if k == "executions")
    assert store.due == {"executions": 0, "batches": 0, "chats": 0, "keys": 0}


async def test_nothing_due_costs_one_statement_per_kind() -> None:
    store = RecordingRetentionStore()
    assert await Retention(store, POLICY).sweep() == RetentionCounts(
        executions=0, batches=0, idempotency_keys=0
    )
    assert [kind for kind, _, _ in store.calls] == ["executions", "batches", "chats", "keys"]
