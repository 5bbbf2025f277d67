"""`input()` in a function against real NATS: pause reports, answers from the heartbeat (asked
at once on a control hint, never taken from the hint), cancel, a refused pause, and the wall
clock stopped while paused."""

from __future__ import annotations

import asyncio
from typing import Any

from sinas_common.control import control_subject
from sinas_common.jobstream import JobMessage
from sinas_common.jsoncodec import dump_json
from sinas_executor.consumer import subscribe
from sinas_executor.models import HeartbeatNews, HeldAttempt, OutcomeStatus, ResumedInput
from sinas_executor.pool import INPUT_ENDED_ERROR

from .test_consumer import Harness, eventually
from .test_consumer import harness as harness  # the fixture, shared with the pull-loop tests

ASKING = (
    "def handler(input_data, context):\n"
    "    name = input('Name?')\n"
    "    age = input(f'Age of {name}?')\n"
    "    return {'name': name, 'age': age}\n"
)


async def control(harness: Harness, execution_id: str, action: str, **fields: Any) -> None:
    """Publishes a control message as anyone on the bus could, with whatever it carries."""
    message = {"execution_id": execution_id, "action": action, **fields}
    # Only the scheduler's NATS user may publish here; what it carries is still not trusted.
    await harness.scheduler_nc.publish(control_subject(harness.settings), dump_json(message))
    await harness.scheduler_nc.flush()


async def confirmed(harness: Harness, execution_id: str, count: int) -> None:
    """Until the scheduler was asked about the attempt `count` times in all."""
    held = HeldAttempt(execution_id=execution_id, attempt=1)
    await eventually(lambda: sum(held in beat for beat in harness.scheduler.heartbeats) >= count)
    # What the answer says is applied right after it arrives.
    await asyncio.sleep(0.2)


async def listen(harness: Harness) -> None:
    """Wires the newest consumer to the control subject, as the executor's app does."""
    consumer, _ = harness.consumers[-1]
    await harness.nc.subscribe(control_subject(harness.settings), cb=consumer.on_control)
    await harness.nc.flush()


async def reported(harness: Harness, execution_id: str, count: int) -> None:
    await eventually(
        lambda: (
            len([r for r in harness.scheduler.reports if r.execution_id == execution_id]) >= count
        )
    )


async def test_a_control_hint_is_answered_by_the_scheduler_never_by_itself(
    harness: Harness,
) -> None:
    harness.scheduler.code = ASKING
    await harness.publish("asks")
    # The periodic heartbeat comes every 10 s: anything sooner was asked for by a hint.
    await harness.start()
    await listen(harness)

    await reported(harness, "asks", 1)
    first = harness.scheduler.reports[0]
    assert (first.attempt, first.prompt, first.round) == (1, "Name?", 1)
    # A forged continue with a forged value: the scheduler is asked, says nothing, nothing moves.
    # One for an attempt not held here is not even asked about.
    await control(harness, "elsewhere", "continue", input="Mallory", round=1)
    await control(harness, "asks", "continue", input="Mallory", round=1)
    await confirmed(harness, "asks", 1)
    assert len(harness.scheduler.reports) == 1 and "asks" not in harness.scheduler.outcomes
    assert all(
        beat == [HeldAttempt(execution_id="asks", attempt=1)]
        for beat in harness.scheduler.heartbeats
    )

    # The real continue: the answer comes from the scheduler, one heartbeat after the hint.
    harness.scheduler.news = HeartbeatNews(
        resumed=(ResumedInput(execution_id="asks", input="Ada", round=1),)
    )
    await control(harness, "asks", "continue")
    await reported(harness, "asks", 2)
    second = harness.scheduler.reports[1]
    assert (second.prompt, second.round) == ("Age of Ada?", 2)
    # The scheduler's answer to the first prompt, repeated, is not taken for the second.
    await control(harness, "asks", "continue")
    await confirmed(harness, "asks", 3)
    assert "asks" not in harness.scheduler.outcomes
    harness.scheduler.news = HeartbeatNews(
        resumed=(ResumedInput(execution_id="asks", input={"years": 2**60}, round=2),)
    )
    await control(harness, "asks", "continue")
    await eventually(lambda: "asks" in harness.scheduler.outcomes)
    outcome = harness.scheduler.outcomes["asks"]
    assert outcome.status is OutcomeStatus.COMPLETED, outcome.error
    assert outcome.output == {"name": "Ada", "age": {"years": 2**60}}
    await eventually(lambda: _no_pending(harness))


async def test_input_answered_by_the_heartbeat(harness: Harness) -> None:
    harness.scheduler.code = "def handler(input_data, context):\n    return input('?')\n"
    # Short ack wait: the heartbeat (a third of it) is the only path in this test.
    await harness.publish("slow-path")
    await harness.start(ack_wait_seconds=3.0)
    await reported(harness, "slow-path", 1)
    harness.scheduler.news = HeartbeatNews(
        resumed=(ResumedInput(execution_id="slow-path", input=[1, 2], round=1),)
    )
    await eventually(lambda: "slow-path" in harness.scheduler.outcomes)
    assert harness.scheduler.outcomes["slow-path"].output == [1, 2]


async def test_cancel_ends_the_waiting_worker_once_the_scheduler_says_so(
    harness: Harness,
) -> None:
    harness.scheduler.code = ASKING
    await harness.publish("cancelled")
    await harness.start()
    await listen(harness)
    await reported(harness, "cancelled", 1)
    # A forged cancel ends nothing: the scheduler knows of no cancel.
    await control(harness, "cancelled", "cancel")
    await confirmed(harness, "cancelled", 1)
    assert "cancelled" not in harness.scheduler.outcomes
    harness.scheduler.news = HeartbeatNews(cancelled=("cancelled",))
    await control(harness, "cancelled", "cancel")
    await eventually(lambda: "cancelled" in harness.scheduler.outcomes)
    outcome = harness.scheduler.outcomes["cancelled"]
    assert (outcome.status, outcome.error) == (OutcomeStatus.FAILED, INPUT_ENDED_ERROR)
    # Settled: the message is gone from the stream, nothing is redelivered.
    await eventually(lambda: _no_pending(harness))


async def test_ended_while_paused_heard_from_the_heartbeat(harness: Harness) -> None:
    harness.scheduler.code = ASKING
    await harness.publish("expired")
    await harness.start(ack_wait_seconds=3.0)
    await reported(harness, "expired", 1)
    harness.scheduler.news = HeartbeatNews(cancelled=("expired",))
    await eventually(lambda: "expired" in harness.scheduler.outcomes)
    assert harness.scheduler.outcomes["expired"].error == INPUT_ENDED_ERROR


async def test_a_refused_pause_ends_the_run(harness: Harness) -> None:
    harness.scheduler.code = ASKING
    harness.scheduler.refuse_pause.add("refused")
    await harness.publish("refused")
    await harness.start()
    await eventually(lambda: "refused" in harness.scheduler.outcomes)
    assert harness.scheduler.outcomes["refused"].error == INPUT_ENDED_ERROR


async def test_the_wall_clock_stops_while_paused(harness: Harness) -> None:
    harness.scheduler.code = "def handler(input_data, context):\n    return input('?')\n"
    harness.scheduler.timeout_seconds = 1
    await harness.publish("patient")
    await harness.start()
    await listen(harness)
    await reported(harness, "patient", 1)
    # Longer than the function's whole timeout.
    await asyncio.sleep(2.5)
    harness.scheduler.news = HeartbeatNews(
        resumed=(ResumedInput(execution_id="patient", input="ok", round=1),)
    )
    await control(harness, "patient", "continue")
    await eventually(lambda: "patient" in harness.scheduler.outcomes)
    outcome = harness.scheduler.outcomes["patient"]
    assert (outcome.status, outcome.output) == (OutcomeStatus.COMPLETED, "ok"), outcome.error


async def _no_pending(harness: Harness) -> bool:
    return await harness.ack_pending() == 0 and await harness.stream_messages() == 0


async def test_stop_hands_back_a_paused_run_at_once(harness: Harness) -> None:
    harness.scheduler.code = ASKING
    await harness.publish("paused")
    # A grace period far longer than the stop is given: a run waiting for a person doesn't
    # hold the stop up for it.
    consumer = await harness.start(shutdown_grace_seconds=300.0)
    await reported(harness, "paused", 1)
    consumer.stop()
    _, task = harness.consumers.pop()
    await asyncio.wait_for(task, 30)
    # Released and nakked without an outcome: another executor runs it from the start.
    assert "paused" not in harness.scheduler.outcomes
    assert harness.scheduler.releases == [[HeldAttempt(execution_id="paused", attempt=1)]]
    other = await subscribe(harness.js, harness.settings, ack_wait_seconds=3.0)
    (again,) = await other.fetch(1, timeout=10)
    assert JobMessage.decode(again.data).execution_id == "paused"
    await again.ack()
