"""ExpiringCache: values lapse after their seconds, and the oldest entry makes room."""

from __future__ import annotations

from sinas_common.expiring import ExpiringCache


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_value_is_kept_for_its_seconds_then_lapses() -> None:
    clock = Clock()
    cache: ExpiringCache[str, int] = ExpiringCache(max_entries=4, clock=clock)
    cache.put("a", 1, seconds=2.0)
    clock.now += 1.999
    assert cache.get("a") == 1
    clock.now += 0.001
    assert cache.get("a") is None
    assert len(cache) == 0


def test_no_seconds_keeps_nothing() -> None:
    cache: ExpiringCache[str, int] = ExpiringCache(max_entries=4)
    cache.put("a", 1, seconds=0.0)
    cache.put("b", 2, seconds=-5.0)
    assert cache.get("a") is None and cache.get("b") is None


def test_the_oldest_entry_makes_room_and_a_put_renews_an_entry() -> None:
    cache: ExpiringCache[str, int] = ExpiringCache(max_entries=2, clock=Clock())
    cache.put("a", 1, seconds=10)
    cache.put("b", 2, seconds=10)
    cache.put("a", 3, seconds=10)  # now the youngest
    cache.put("c", 4, seconds=10)
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (3, None, 4)
