"""The NATS core subject that hints to executors that a held execution was cancelled or continued.

A message is only a hint, never an order: an executor holding the attempt asks the scheduler
(a Heartbeat for it over mutual TLS) and acts on that answer alone, so a message forged on the
bus does nothing but cost one heartbeat. It carries no input either, so other users' answers
never cross the bus. Core NATS is fire-and-forget: a message published while an executor is
disconnected is lost, which is fine because the periodic Heartbeat carries the same news, only
later; this subject just makes the common case quick.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

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
    """That one execution may have news; `action` says which, for logs only."""

    execution_id: str
    action: ControlAction

    def encode(self) -> bytes:
        return dump_json({"execution_id": self.execution_id, "action": self.action.value})

    @classmethod
    def decode(cls, raw: bytes) -> ControlMessage:
        # Anything else a message carries (older schedulers sent the input) is ignored.
        data = load_json(raw)
        return cls(execution_id=str(data["execution_id"]), action=ControlAction(data["action"]))
