"""The JetStream stream that carries executions to run: its name, subjects and message shape."""

from __future__ import annotations

from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError

from sinas_common.jsoncodec import dump_json, load_json
from sinas_common.settings import NatsSettings

# A re-publish inside this window with the same Nats-Msg-Id (the execution id) is dropped.
DUPLICATE_WINDOW_SECONDS = 120.0


@dataclass(frozen=True, slots=True, kw_only=True)
class JobStreamNames:
    stream: str
    subject_prefix: str

    def subject(self, kind: str) -> str:
        return f"{self.subject_prefix}.{kind}"

    @property
    def all_subjects(self) -> str:
        return f"{self.subject_prefix}.>"


def job_stream_names(settings: NatsSettings) -> JobStreamNames:
    return JobStreamNames(
        stream=f"{settings.stream_prefix}_JOBS",
        subject_prefix=f"{settings.stream_prefix.lower()}.jobs",
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class JobMessage:
    """One execution to run. Small on purpose: the executor claims the rest."""

    execution_id: str
    kind: str

    def encode(self) -> bytes:
        return dump_json({"execution_id": self.execution_id, "kind": self.kind})

    @classmethod
    def decode(cls, raw: bytes) -> JobMessage:
        data = load_json(raw)
        return cls(execution_id=str(data["execution_id"]), kind=str(data["kind"]))


async def ensure_job_stream(js: JetStreamContext, settings: NatsSettings) -> JobStreamNames:
    """Creates the work-queue stream if missing (idempotent across replicas)."""
    names = job_stream_names(settings)
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
