"""Interactive input on the executor's side: one waiter per held attempt, answered only by
the scheduler's Heartbeat answer, asked for at once when a control message hints at news.

A control message is never trusted: anyone on the bus could have sent it. It only makes the
executor ask the scheduler (one Heartbeat for the attempts hinted at, over the authenticated
channel) and act on that answer, so a forged one costs one extra heartbeat and does nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from functools import partial
from typing import Any, Protocol

from sinas_common.control import ControlMessage
from sinas_common.grpc_client import call_with_retry
from sinas_executor.models import (
    AwaitingInput,
    HandedBack,
    HeartbeatNews,
    HeldAttempt,
    InputEnded,
)

logger = logging.getLogger(__name__)

# A confirmation is retried this often on a transient failure; past it, the periodic
# heartbeat brings the same news a little later.
CONFIRM_ATTEMPTS = 3


class InputReporter(Protocol):
    async def report_awaiting_input(
        self, worker_id: str, items: Sequence[AwaitingInput]
    ) -> list[str]: ...


class InputScheduler(InputReporter, Protocol):
    async def heartbeat(self, worker_id: str, attempts: Sequence[HeldAttempt]) -> HeartbeatNews: ...


class InputWaiter:
    """The InputChannel of one held attempt: reports each prompt, then waits for its answer.

    Rounds count the attempt's `input()` calls from 1; an answer is taken only for the round
    that waits, so a late or repeated answer to an earlier prompt is never given to a later one.
    """

    def __init__(
        self, *, execution_id: str, attempt: int, worker_id: str, reporter: InputReporter
    ) -> None:
        self.execution_id = execution_id
        self.attempt = attempt
        self.round = 0
        self._worker_id = worker_id
        self._reporter = reporter
        self._answer: asyncio.Future[Any] | None = None
        self._ended = False
        self._handed_back = False

    @property
    def waiting(self) -> bool:
        return self._answer is not None and not self._answer.done()

    async def ask(self, prompt: str) -> Any:
        if self._handed_back:
            raise HandedBack()
        if self._ended:
            raise InputEnded()
        self.round += 1
        # Ready before the report: a continue may arrive before the report's answer does.
        answer = self._answer = asyncio.get_running_loop().create_future()
        item = AwaitingInput(
            execution_id=self.execution_id, attempt=self.attempt, prompt=prompt, round=self.round
        )
        try:
            paused = await call_with_retry(
                lambda: self._reporter.report_awaiting_input(self._worker_id, [item])
            )
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

    def hand_back(self) -> None:
        """The executor stops: this `input()` and any later one raise HandedBack, since an
        answer may take longer than the shutdown grace period."""
        self._handed_back = True
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(HandedBack())


class InputWaiters:
    """The waiters of every attempt this executor holds, by execution id."""

    def __init__(self, scheduler: InputScheduler, *, worker_id: str) -> None:
        self._scheduler = scheduler
        self._worker_id = worker_id
        self._waiters: dict[str, InputWaiter] = {}
        # Hinted attempts not yet asked about, and the one task asking: a burst of hints (a
        # cancelled batch's paused children) is confirmed by one call, not one each.
        self._unconfirmed: dict[str, HeldAttempt] = {}
        self._confirming: asyncio.Task[None] | None = None
        self._handing_back = False

    def open(self, execution_id: str, attempt: int) -> InputWaiter:
        waiter = InputWaiter(
            execution_id=execution_id,
            attempt=attempt,
            worker_id=self._worker_id,
            reporter=self._scheduler,
        )
        if self._handing_back:
            waiter.hand_back()
        self._waiters[execution_id] = waiter
        return waiter

    def close(self, execution_id: str) -> None:
        self._waiters.pop(execution_id, None)

    def hint(self, message: ControlMessage) -> None:
        """News of a held, waiting attempt may be waiting at the scheduler: ask it. Nothing in
        the message itself is acted on, and hints of attempts not waiting here are dropped."""
        waiter = self._waiters.get(message.execution_id)
        if waiter is None or not waiter.waiting:
            return
        self._unconfirmed[waiter.execution_id] = HeldAttempt(
            execution_id=waiter.execution_id, attempt=waiter.attempt
        )
        if self._confirming is None or self._confirming.done():
            self._confirming = asyncio.create_task(self._confirm(), name="executor-confirm")

    def hand_back(self) -> None:
        """Every held attempt waiting in `input()` now, or from now on, gives up waiting."""
        self._handing_back = True
        for waiter in self._waiters.values():
            waiter.hand_back()

    async def stop(self) -> None:
        """Ends the confirmation in flight, if any."""
        if self._confirming is not None:
            self._confirming.cancel()
            await asyncio.gather(self._confirming, return_exceptions=True)

    async def _confirm(self) -> None:
        while self._unconfirmed:
            attempts = list(self._unconfirmed.values())
            self._unconfirmed.clear()
            try:
                news = await call_with_retry(
                    partial(self._scheduler.heartbeat, self._worker_id, attempts),
                    attempts=CONFIRM_ATTEMPTS,
                )
            except Exception:
                logger.warning(
                    "control hint not confirmed",
                    extra={"action": "control", "count": len(attempts)},
                    exc_info=True,
                )
                continue
            self.apply_heartbeat(news)

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
