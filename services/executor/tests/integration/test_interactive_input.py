"""`input()` in a function against real NATS: pause reports, answers over the control subject
and the heartbeat, cancel, a refused pause, and the wall clock stopped while paused."""

from __future__ import annotations

import asyncio

from sinas_common.control import ControlAction, ControlMessage, control_subject
from sinas_executor.models import HeartbeatNews, OutcomeStatus, ResumedInput
from sinas_executor.pool import INPUT_ENDED_ERROR

from .test_consumer import Harness, eventually
from .test_consumer import harness as harness  # the fixture, shared with the pull-loop tests

ASKING = (
    "def handler(input_data, context):\n"
    "    name = input('Name?')\n"
    "    age = input(f'Age of {name}?')\n"
    "    return {'name': name, 'age': age}\n"
)


async def control(harness: Harness, message: ControlMessage) -> None:
    await harness.nc.publish(control_subject(harness.settings), message.encode())
    await harness.nc.flush()


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


async def test_input_answered_over_the_control_subject(harness: Harness) -> None:
    harness.scheduler.code = ASKING
    await harness.publish("asks")
    await harness.start()
    await listen(harness)

    await reported(harness, "asks", 1)
    first = harness.scheduler.reports[0]
    assert (first.attempt, first.prompt, first.round) == (1, "Name?", 1)
    await control(
        harness,
        ControlMessage(execution_id="asks", action=ControlAction.CONTINUE, input="Ada", round=1),
    )
    await reported(harness, "asks", 2)
    second = harness.scheduler.reports[1]
    assert (second.prompt, second.round) == ("Age of Ada?", 2)
    # A repeated answer to the first prompt is not taken for the second.
    await control(
        harness,
        ControlMessage(execution_id="asks", action=ControlAction.CONTINUE, input="Ada", round=1),
    )
    await control(
        harness,
        ControlMessage(
            execution_id="asks", action=ControlAction.CONTINUE, input={"years": 2**60}, round=2
        ),
    )
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


async def test_cancel_ends_the_waiting_worker(harness: Harness) -> None:
    harness.scheduler.code = ASKING
    await harness.publish("cancelled")
    await harness.start(ack_wait_seconds=3.0)
    await listen(harness)
    await reported(harness, "cancelled", 1)
    await control(harness, ControlMessage(execution_id="cancelled", action=ControlAction.CANCEL))
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
    await control(
        harness,
        ControlMessage(execution_id="patient", action=ControlAction.CONTINUE, input="ok", round=1),
    )
    await eventually(lambda: "patient" in harness.scheduler.outcomes)
    outcome = harness.scheduler.outcomes["patient"]
    assert (outcome.status, outcome.output) == (OutcomeStatus.COMPLETED, "ok"), outcome.error


async def _no_pending(harness: Harness) -> bool:
    return await harness.ack_pending() == 0 and await harness.stream_messages() == 0
