"""Interactive input on the executor's side: one waiter per held attempt, answered by the
control subject (fast) or the heartbeat (slow, reliable), whichever comes first."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, Protocol

from sinas_common.control import ControlAction, ControlMessage
from sinas_common.grpc_client import call_with_retry
from sinas_executor.models import AwaitingInput, HeartbeatNews, InputEnded

logger = logging.getLogger(__name__)


class InputReporter(Protocol):
    async def report_awaiting_input(self, items: Sequence[AwaitingInput]) -> list[str]: ...


class InputWaiter:
    """The InputChannel of one held attempt: reports each prompt, then waits for its answer.

    Rounds count the attempt's `input()` calls from 1; an answer is taken only for the round
    that waits, so a late or repeated answer to an earlier prompt is never given to a later one.
    """

    def __init__(self, *, execution_id: str, attempt: int, reporter: InputReporter) -> None:
        self.execution_id = execution_id
        self.attempt = attempt
        self.round = 0
        self._reporter = reporter
        self._answer: asyncio.Future[Any] | None = None
        self._ended = False

    @property
    def waiting(self) -> bool:
        return self._answer is not None and not self._answer.done()

    async def ask(self, prompt: str) -> Any:
        if self._ended:
            raise InputEnded()
        self.round += 1
        # Ready before the report: a continue may arrive before the report's answer does.
        answer = self._answer = asyncio.get_running_loop().create_future()
        item = AwaitingInput(
            execution_id=self.execution_id, attempt=self.attempt, prompt=prompt, round=self.round
        )
        try:
            paused = await call_with_retry(lambda: self._reporter.report_awaiting_input([item]))
        except Exception as exc:
            logger.exception(
                "awaiting input not reported",
                extra={"action": "awaiting_input", "execution_id": self.execution_id},
            )
            raise InputEnded() from exc
        if self.execution_id not in paused and not answer.done():
            # Cancelled (or taken over) before it could pause: no answer will ever come.
            raise InputEnded()
        try:
            return await answer
        finally:
            self._answer = None

    def resume(self, round_: int, value: Any) -> None:
        if self._answer is not None and not self._answer.done() and round_ == self.round:
            self._answer.set_result(value)

    def end(self) -> None:
        self._ended = True
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(InputEnded())


class InputWaiters:
    """The waiters of every attempt this executor holds, by execution id."""

    def __init__(self, reporter: InputReporter) -> None:
        self._reporter = reporter
        self._waiters: dict[str, InputWaiter] = {}

    def open(self, execution_id: str, attempt: int) -> InputWaiter:
        waiter = InputWaiter(execution_id=execution_id, attempt=attempt, reporter=self._reporter)
        self._waiters[execution_id] = waiter
        return waiter

    def close(self, execution_id: str) -> None:
        self._waiters.pop(execution_id, None)

    def apply_control(self, message: ControlMessage) -> None:
        waiter = self._waiters.get(message.execution_id)
        if waiter is None:
            return
        if message.action is ControlAction.CANCEL:
            self._end(waiter)
        else:
            waiter.resume(message.round, message.input)

    def apply_heartbeat(self, news: HeartbeatNews) -> None:
        for execution_id in news.cancelled:
            waiter = self._waiters.get(execution_id)
            # A running execution reported ended (say, reaped) keeps running: only a waiting
            # worker has nothing left to do.
            if waiter is not None and waiter.waiting:
                self._end(waiter)
        for resumed in news.resumed:
            waiter = self._waiters.get(resumed.execution_id)
            if waiter is not None:
                waiter.resume(resumed.round, resumed.input)

    def _end(self, waiter: InputWaiter) -> None:
        if waiter.waiting:
            logger.info(
                "waiting worker ended",
                extra={"action": "input_ended", "execution_id": waiter.execution_id},
            )
        waiter.end()
