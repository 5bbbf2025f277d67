"""The JetStream stream of terminal events the notifier consumes: names and message shape.

The scheduler publishes one event per execution that ends with a callback to deliver, and
one per batch that ends with a summary callback, through an outbox, so a committed terminal
state always yields its event; the message id makes a re-publish inside the duplicate window
a no-op.
"""

from __future__ import annotations

from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError

from sinas_common.jobstream import DUPLICATE_WINDOW_SECONDS
from sinas_common.jsoncodec import dump_json, load_json
from sinas_common.settings import NatsSettings

EXECUTION_TERMINATED = "execution.terminated"
BATCH_TERMINATED = "batch.terminated"


@dataclass(frozen=True, slots=True, kw_only=True)
class EventStreamNames:
    stream: str
    subject_prefix: str

    def subject(self, event: str) -> str:
        return f"{self.subject_prefix}.{event}"

    @property
    def all_subjects(self) -> str:
        return f"{self.subject_prefix}.>"


def event_stream_names(settings: NatsSettings) -> EventStreamNames:
    return EventStreamNames(
        stream=f"{settings.stream_prefix}_EVENTS",
        subject_prefix=f"{settings.stream_prefix.lower()}.events",
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecutionTerminated:
    """An execution reached a terminal status and has a callback to deliver."""

    execution_id: str

    @property
    def message_id(self) -> str:
        return f"execution-terminated-{self.execution_id}"

    def encode(self) -> bytes:
        return dump_json({"execution_id": self.execution_id})

    @classmethod
    def decode(cls, raw: bytes) -> ExecutionTerminated:
        data = load_json(raw)
        return cls(execution_id=str(data["execution_id"]))


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchTerminated:
    """A batch's last child ended and the batch has a summary callback to deliver."""

    batch_id: str

    @property
    def message_id(self) -> str:
        return f"batch-terminated-{self.batch_id}"

    def encode(self) -> bytes:
        return dump_json({"batch_id": self.batch_id})

    @classmethod
    def decode(cls, raw: bytes) -> BatchTerminated:
        data = load_json(raw)
        return cls(batch_id=str(data["batch_id"]))


async def ensure_event_stream(js: JetStreamContext, settings: NatsSettings) -> EventStreamNames:
    """Creates the work-queue event stream if missing (idempotent across replicas)."""
    names = event_stream_names(settings)
    config = StreamConfig(
        name=names.stream,
        subjects=[names.all_subjects],
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE,
        num_replicas=settings.stream_replicas,
        duplicate_window=DUPLICATE_WINDOW_SECONDS,
        discard=DiscardPolicy.OLD,
    )
    try:
        await js.add_stream(config)
    except BadRequestError:
        await js.update_stream(config)
    return names
