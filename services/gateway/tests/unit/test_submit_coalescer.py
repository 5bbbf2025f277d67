"""The submit coalescer: a lone submit goes at once on its own; while every call slot is busy,
one caller's submits wait and go together; each gets its own answer or error."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from sinas_common.errors import FunctionNotFound, SchemaViolation, ServiceUnavailable, SinasError
from sinas_gateway.submit_coalescer import SubmitCoalescer
from sinas_proto.scheduler.v1 import scheduler_pb2 as pb


def submit(name: str) -> pb.SubmitExecutionRequest:
    return pb.SubmitExecutionRequest(namespace="ns", name=name)


class Scheduler:
    """Answers `missing` with FunctionNotFound, anything else with an id; holds every call
    until released, and records what each call carried."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, list[str]]] = []
        self.release = asyncio.Event()
        self.fail_with: Exception | None = None
        self.drop_one_answer = False

    async def _hold(self) -> None:
        await self.release.wait()
        if self.fail_with is not None:
            raise self.fail_with

    async def send_one(
        self, request: pb.SubmitExecutionRequest, caller: str
    ) -> pb.SubmitExecutionResponse:
        self.calls.append(("one", caller, [request.name]))
        await self._hold()
        if request.name == "missing":
            raise FunctionNotFound()
        return pb.SubmitExecutionResponse(execution_id=f"{caller}:{request.name}")

    async def send_many(
        self, requests: Sequence[pb.SubmitExecutionRequest], caller: str
    ) -> pb.SubmitExecutionsResponse:
        self.calls.append(("many", caller, [r.name for r in requests]))
        await self._hold()
        results = [
            pb.SubmitExecutionResult(
                error_status=FunctionNotFound().to_status().SerializeToString()
            )
            if r.name == "missing"
            else pb.SubmitExecutionResult(execution_id=f"{caller}:{r.name}")
            for r in requests
        ]
        return pb.SubmitExecutionsResponse(
            results=results[:-1] if self.drop_one_answer else results
        )


def coalescer(
    scheduler: Scheduler, *, in_flight: int = 1, per_call: int = 3
) -> SubmitCoalescer[str]:
    return SubmitCoalescer(
        send_one=scheduler.send_one,
        send_many=scheduler.send_many,
        max_in_flight=in_flight,
        max_per_call=per_call,
    )


async def turns(count: int) -> None:
    """Lets the event loop run `count` rounds: submits queue, then their calls start."""
    for _ in range(count):
        await asyncio.sleep(0)


async def settle(*awaitables: asyncio.Future[pb.SubmitExecutionResponse]) -> list[object]:
    done = await asyncio.gather(*awaitables, return_exceptions=True)
    return [d.execution_id if isinstance(d, pb.SubmitExecutionResponse) else d for d in done]


async def test_a_lone_submit_goes_at_once_on_its_own() -> None:
    scheduler = Scheduler()
    scheduler.release.set()
    submits = coalescer(scheduler, in_flight=1)
    assert (await submits.submit(submit("a"), "alice")).execution_id == "alice:a"
    with pytest.raises(FunctionNotFound):
        await submits.submit(submit("missing"), "alice")
    assert scheduler.calls == [("one", "alice", ["a"]), ("one", "alice", ["missing"])]


async def test_while_a_callers_slot_is_busy_its_submits_go_together() -> None:
    scheduler = Scheduler()
    submits = coalescer(scheduler, in_flight=1, per_call=3)
    names = ["a", "b", "missing", "c", "d"]
    pending = [asyncio.ensure_future(submits.submit(submit(n), "alice")) for n in names]
    await asyncio.sleep(0)
    scheduler.release.set()
    answers = await settle(*pending)
    assert answers[:2] == ["alice:a", "alice:b"]
    assert isinstance(answers[2], FunctionNotFound)
    assert answers[3:] == ["alice:c", "alice:d"]
    # The first went alone; the rest waited for it, then went up to three a call.
    assert scheduler.calls == [
        ("one", "alice", ["a"]),
        ("many", "alice", ["b", "missing", "c"]),
        ("one", "alice", ["d"]),
    ]


async def test_callers_never_wait_for_each_other_nor_share_a_call() -> None:
    scheduler = Scheduler()
    submits = coalescer(scheduler, in_flight=1, per_call=10)
    alice = [asyncio.ensure_future(submits.submit(submit(n), "alice")) for n in "ab"]
    bob = [asyncio.ensure_future(submits.submit(submit(n), "bob")) for n in "cd"]
    await turns(3)
    # Both callers' first submits are under way before anything is answered.
    assert scheduler.calls == [("one", "alice", ["a"]), ("one", "bob", ["c"])]
    scheduler.release.set()
    assert await settle(*alice, *bob) == ["alice:a", "alice:b", "bob:c", "bob:d"]
    assert sorted(scheduler.calls[2:]) == [("one", "alice", ["b"]), ("one", "bob", ["d"])]


async def test_more_slots_let_more_of_a_callers_calls_run_at_once() -> None:
    scheduler = Scheduler()
    submits = coalescer(scheduler, in_flight=2, per_call=10)
    pending = [asyncio.ensure_future(submits.submit(submit(n), "alice")) for n in "abcd"]
    await turns(3)
    assert scheduler.calls == [("one", "alice", ["a"]), ("one", "alice", ["b"])]
    scheduler.release.set()
    assert await settle(*pending) == ["alice:a", "alice:b", "alice:c", "alice:d"]
    assert len(scheduler.calls) == 3


async def test_a_failed_call_fails_each_of_its_submits() -> None:
    scheduler = Scheduler()
    scheduler.fail_with = ServiceUnavailable("scheduler unavailable")
    submits = coalescer(scheduler, in_flight=1)
    pending = [asyncio.ensure_future(submits.submit(submit(n), "alice")) for n in "abc"]
    await asyncio.sleep(0)
    scheduler.release.set()
    answers = await settle(*pending)
    assert all(isinstance(answer, ServiceUnavailable) for answer in answers)
    assert len(scheduler.calls) == 2


async def test_a_reply_with_a_missing_answer_fails_its_call() -> None:
    scheduler = Scheduler()
    scheduler.drop_one_answer = True
    submits = coalescer(scheduler, in_flight=1)
    pending = [asyncio.ensure_future(submits.submit(submit(n), "alice")) for n in "abc"]
    await asyncio.sleep(0)
    scheduler.release.set()
    first, *rest = await settle(*pending)
    assert first == "alice:a"
    assert all(type(answer) is SinasError for answer in rest)


async def test_a_submit_whose_client_left_is_not_sent() -> None:
    scheduler = Scheduler()
    submits = coalescer(scheduler, in_flight=1)
    first = asyncio.ensure_future(submits.submit(submit("a"), "alice"))
    gone = asyncio.ensure_future(submits.submit(submit("gone"), "alice"))
    kept = asyncio.ensure_future(submits.submit(submit("b"), "alice"))
    await asyncio.sleep(0)
    gone.cancel()
    scheduler.release.set()
    assert await settle(first, kept) == ["alice:a", "alice:b"]
    assert scheduler.calls == [("one", "alice", ["a"]), ("one", "alice", ["b"])]


async def test_per_item_errors_keep_their_details() -> None:
    violation = SchemaViolation("Input validation failed")

    async def send_many(
        requests: Sequence[pb.SubmitExecutionRequest], caller: str
    ) -> pb.SubmitExecutionsResponse:
        status = violation.to_status().SerializeToString()
        return pb.SubmitExecutionsResponse(
            results=[pb.SubmitExecutionResult(error_status=status) for _ in requests]
        )

    hold = asyncio.Event()

    async def send_one(
        request: pb.SubmitExecutionRequest, caller: str
    ) -> pb.SubmitExecutionResponse:
        await hold.wait()
        return pb.SubmitExecutionResponse(execution_id="x")

    submits: SubmitCoalescer[str] = SubmitCoalescer(
        send_one=send_one, send_many=send_many, max_in_flight=1, max_per_call=10
    )
    pending = [asyncio.ensure_future(submits.submit(submit(n), "alice")) for n in "abc"]
    await asyncio.sleep(0)
    hold.set()
    first, *rest = await settle(*pending)
    assert first == "x"
    assert all(isinstance(e, SchemaViolation) and e.message == violation.message for e in rest)
