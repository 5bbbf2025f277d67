"""UUIDv7 ids: well formed, time-ordered, and strictly increasing within one process."""

from __future__ import annotations

import time
import uuid

import pytest

from sinas_common import ids
from sinas_common.ids import uuid7


def test_ids_are_version_7_with_the_rfc_variant_and_the_current_time() -> None:
    before = time.time_ns() // 1_000_000
    parsed = uuid.UUID(uuid7())
    after = time.time_ns() // 1_000_000
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122
    assert before <= parsed.int >> 80 <= after + 1


def test_ids_made_in_the_same_millisecond_keep_their_order() -> None:
    made = [uuid7() for _ in range(20_000)]
    assert made == sorted(made)
    assert len(set(made)) == len(made)
    assert all(uuid.UUID(i).version == 7 and uuid.UUID(i).variant == uuid.RFC_4122 for i in made)


def test_a_full_counter_moves_on_to_the_next_millisecond(monkeypatch: pytest.MonkeyPatch) -> None:
    now_ms = time.time_ns() // 1_000_000
    monkeypatch.setattr(ids, "_last", (now_ms + 10, (1 << 74) - 1))
    parsed = uuid.UUID(uuid7())
    assert parsed.int >> 80 == now_ms + 11
    assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
    assert uuid.UUID(uuid7()) > parsed


def test_a_clock_that_steps_back_never_makes_an_earlier_id(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = uuid7()
    real = time.time_ns
    monkeypatch.setattr(time, "time_ns", lambda: real() - 60_000_000_000)
    assert uuid7() > first
