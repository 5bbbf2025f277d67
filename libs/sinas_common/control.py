"""The NATS core subject that tells executors fast about cancelled and continued executions.

Core NATS is fire-and-forget: a message published while an executor is disconnected is lost.
That is fine here because the scheduler's Heartbeat answer carries the same news reliably,
only later; this subject just makes the common case quick.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from sinas_common.jsoncodec import dump_json, load_json
from sinas_common.settings import NatsSettings


class ControlAction(enum.StrEnum):
    CANCEL = "cancel"
    CONTINUE = "continue"


def control_subject(settings: NatsSettings) -> str:
    """Every executor subscribes to this one subject and ignores ids it does not hold."""
    return f"{settings.stream_prefix.lower()}.control.executions"


@dataclass(frozen=True, slots=True, kw_only=True)
class ControlMessage:
    """One execution's news. `round` is the prompt a continue answers (1 for the first
    `input()` call), so a late answer to an earlier prompt is never taken for a later one."""

    execution_id: str
    action: ControlAction
    input: Any = None
    round: int = 0

    def encode(self) -> bytes:
        return dump_json(
            {
                "execution_id": self.execution_id,
                "action": self.action.value,
                "input": self.input,
                "round": self.round,
            }
        )

    @classmethod
    def decode(cls, raw: bytes) -> ControlMessage:
        data = load_json(raw)
        return cls(
            execution_id=str(data["execution_id"]),
            action=ControlAction(data["action"]),
            input=data.get("input"),
            round=int(data.get("round") or 0),
        )
