"""A small in-memory map whose entries lapse, for answers worth reusing for a few seconds."""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class ExpiringCache(Generic[K, V]):
    """Keeps each value for the seconds it was put with; past `max_entries`, the oldest entry
    makes room. Single-threaded: meant for one event loop."""

    def __init__(self, *, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._max_entries = max_entries
        self._clock = clock
        # key -> (expires at, value); insertion order is age order.
        self._entries: dict[K, tuple[float, V]] = {}

    def get(self, key: K) -> V | None:
        found = self._entries.get(key)
        if found is None:
            return None
        if found[0] <= self._clock():
            del self._entries[key]
            return None
        return found[1]

    def put(self, key: K, value: V, *, seconds: float) -> None:
        if seconds <= 0:
            return
        self._entries.pop(key, None)
        if len(self._entries) >= self._max_entries:
            self._entries.pop(next(iter(self._entries)))
        self._entries[key] = (self._clock() + seconds, value)

    def __len__(self) -> int:
        return len(self._entries)
