"""Concurrent submits of one caller ride one SubmitExecutions call.

A gRPC call costs the gateway and the scheduler several times the CPU of the submit it
carries, so under load one call per REST request is what limits the request rate. While a
caller has fewer than `max_in_flight` submit calls under way, its submit goes at once, alone:
a caller's requests only wait for that caller's own call, never for another caller's, and a
lone request waits for nothing. Each request still gets its own answer or its own error.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from sinas_common.errors import SinasError, from_status_bytes
from sinas_proto.scheduler.v1 import scheduler_pb2 as pb

# Whoever submits: submits are only ever sent together with the same caller's.
Caller = TypeVar("Caller", bound=Hashable)


@dataclass(frozen=True, slots=True)
class _Waiting:
    request: pb.SubmitExecutionRequest
    answer: asyncio.Future[pb.SubmitExecutionResponse]


class SubmitCoalescer(Generic[Caller]):
    """Queues submits per caller; whenever one of a caller's `max_in_flight` call slots is
    free, up to `max_per_call` of its waiting submits go in one call (a lone submit:
    SubmitExecution)."""

    def __init__(
        self,
        *,
        send_one: Callable[
            [pb.SubmitExecutionRequest, Caller], Awaitable[pb.SubmitExecutionResponse]
        ],
        send_many: Callable[
            [Sequence[pb.SubmitExecutionRequest], Caller], Awaitable[pb.SubmitExecutionsResponse]
        ],
        max_in_flight: int,
        max_per_call: int,
    ) -> None:
        self._send_one = send_one
        self._send_many = send_many
        self._max_in_flight = max_in_flight
        self._max_per_call = max_per_call
        self._in_flight: dict[Caller, int] = {}
        self._waiting: dict[Caller, deque[_Waiting]] = {}
        self._calls: set[asyncio.Task[None]] = set()

    async def submit(
        self, request: pb.SubmitExecutionRequest, caller: Caller
    ) -> pb.SubmitExecutionResponse:
        answer: asyncio.Future[pb.SubmitExecutionResponse] = (
            asyncio.get_running_loop().create_future()
        )
        self._waiting.setdefault(caller, deque()).append(_Waiting(request, answer))
        self._start_calls(caller)
        return await answer

    def _start_calls(self, caller: Caller) -> None:
        while self._in_flight.get(caller, 0) < self._max_in_flight:
            queue = self._waiting.get(caller)
            if not queue:
                return
            group = [queue.popleft() for _ in range(min(len(queue), self._max_per_call))]
            if not queue:
                del self._waiting[caller]
            # A request whose client went away is not sent.
            group = [waiting for waiting in group if not waiting.answer.done()]
            if not group:
                continue
            self._in_flight[caller] = self._in_flight.get(caller, 0) + 1
            call = asyncio.create_task(self._call(caller, group))
            self._calls.add(call)
            call.add_done_callback(self._calls.discard)

    async def _call(self, caller: Caller, group: list[_Waiting]) -> None:
        try:
            if len(group) == 1:
                _answer(group[0], await self._send_one(group[0].request, caller))
                return
            response = await self._send_many([waiting.request for waiting in group], caller)
            if len(response.results) != len(group):
                raise SinasError(f"{len(response.results)} answers to {len(group)} submits")
            for waiting, result in zip(group, response.results, strict=True):
                if result.WhichOneof("outcome") == "execution_id":
                    _answer(waiting, pb.SubmitExecutionResponse(execution_id=result.execution_id))
                else:
                    _fail(waiting, from_status_bytes(result.error_status))
        except Exception as exc:
            # The whole call failed (credentials, the scheduler unreachable): so did each submit.
            for waiting in group:
                _fail(waiting, exc)
        except BaseException:
            for waiting in group:
                waiting.answer.cancel()
            raise
        finally:
            left = self._in_flight.pop(caller) - 1
            if left:
                self._in_flight[caller] = left
            self._start_calls(caller)


def _answer(waiting: _Waiting, response: pb.SubmitExecutionResponse) -> None:
    if not waiting.answer.done():
        waiting.answer.set_result(response)


def _fail(waiting: _Waiting, error: BaseException) -> None:
    if not waiting.answer.done():
        waiting.answer.set_exception(error)
