"""Prompt dispatch: publishes what was stored, then marks it; a failed publish leaves the rows
to the dispatch loop, a failed mark leaves them to be published again (a duplicate)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime

import pytest

from sinas_scheduler import prompt_dispatch
from sinas_scheduler.metrics import PROMPT_DISPATCH_MISSES
from sinas_scheduler.models import DueExecution
from sinas_scheduler.prompt_dispatch import PromptDispatch


class FakeDispatcher:
    def __init__(self) -> None:
        self.rounds: list[list[str]] = []
        self.failing = False

    async def publish(self, due: Sequence[DueExecution]) -> None:
        if self.failing:
            raise ConnectionError("NATS is down")
        self.rounds.append([execution.message_id for execution in due])


class FakeMarks:
    def __init__(self, dispatcher: FakeDispatcher) -> None:
        self._dispatcher = dispatcher
        self.marked: list[tuple[list[str], datetime]] = []
        self.failing = False
        # How many publish rounds had been made when each mark was asked for.
        self.rounds_before_mark: list[int] = []
        self.changed = asyncio.Event()

    async def mark_dispatched(self, execution_ids: Sequence[str], published_at: datetime) -> None:
        if self.failing:
            raise ConnectionError("PostgreSQL is down")
        self.rounds_before_mark.append(len(self._dispatcher.rounds))
        self.marked.append((list(execution_ids), published_at))
        self.changed.set()


def misses(step: str) -> float:
    return PROMPT_DISPATCH_MISSES.labels(step=step)._value.get()  # type: ignore[no-any-return]


def due(*ids: str) -> list[DueExecution]:
    return [DueExecution(id=execution_id, kind="function") for execution_id in ids]


@pytest.fixture
def dispatcher() -> FakeDispatcher:
    return FakeDispatcher()


@pytest.fixture
def marks(dispatcher: FakeDispatcher) -> FakeMarks:
    return FakeMarks(dispatcher)


def attached(marks: FakeMarks, dispatcher: FakeDispatcher) -> tuple[PromptDispatch, asyncio.Event]:
    fallback = asyncio.Event()
    prompt = PromptDispatch(marks=marks, fallback=fallback)
    prompt.attach(dispatcher)
    return prompt, fallback


async def test_inactive_until_a_dispatcher_is_attached(
    marks: FakeMarks, dispatcher: FakeDispatcher
) -> None:
    prompt = PromptDispatch(marks=marks, fallback=asyncio.Event())
    assert not prompt.active
    prompt.attach(dispatcher)
    assert prompt.active


async def test_publishes_what_waits_then_marks_it(
    marks: FakeMarks, dispatcher: FakeDispatcher
) -> None:
    prompt, fallback = attached(marks, dispatcher)
    prompt.dispatch(due("a", "b"))
    prompt.dispatch(due("c"))
    before = datetime.now().astimezone()
    await prompt.publish_round()
    # Everything queued since the last round goes in one round of acknowledgements.
    assert dispatcher.rounds == [["a.0", "b.0", "c.0"]]
    [(ids, published_at)] = marks.marked
    assert ids == ["a", "b", "c"]
    assert published_at >= before
    # Marked only once the publish was acknowledged.
    assert marks.rounds_before_mark == [1]
    assert not fallback.is_set()


async def test_a_failed_publish_marks_nothing_and_wakes_the_dispatch_loop(
    marks: FakeMarks, dispatcher: FakeDispatcher
) -> None:
    prompt, fallback = attached(marks, dispatcher)
    dispatcher.failing = True
    before = misses("publish")
    prompt.dispatch(due("a", "z"))
    await prompt.publish_round()
    assert marks.marked == []
    assert fallback.is_set()
    assert misses("publish") == before + 2
    # The next rows go as usual once NATS answers again.
    dispatcher.failing = False
    prompt.dispatch(due("b"))
    await prompt.publish_round()
    assert dispatcher.rounds == [["b.0"]]
    assert [ids for ids, _ in marks.marked] == [["b"]]


async def test_a_failed_mark_does_not_stop_later_rounds(
    marks: FakeMarks, dispatcher: FakeDispatcher
) -> None:
    prompt, _ = attached(marks, dispatcher)
    marks.failing = True
    before = misses("mark")
    prompt.dispatch(due("a"))
    await prompt.publish_round()
    assert misses("mark") == before + 1
    marks.failing = False
    prompt.dispatch(due("b"))
    await prompt.publish_round()
    assert dispatcher.rounds == [["a.0"], ["b.0"]]
    assert [ids for ids, _ in marks.marked] == [["b"]]


async def test_the_running_loop_publishes_in_rounds_of_bounded_size(
    marks: FakeMarks, dispatcher: FakeDispatcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(prompt_dispatch, "MAX_PER_ROUND", 2)
    prompt, _ = attached(marks, dispatcher)
    runner = asyncio.create_task(prompt.run())
    try:
        prompt.dispatch(due("a", "b", "c", "d", "e"))
        async with asyncio.timeout(5):
            while sum(len(ids) for ids, _ in marks.marked) < 5:
                marks.changed.clear()
                await marks.changed.wait()
    finally:
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner
    assert dispatcher.rounds == [["a.0", "b.0"], ["c.0", "d.0"], ["e.0"]]
