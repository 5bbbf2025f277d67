"""NATS users for the embedded server: one per service, a random password each, least privilege.

Every subject a service may publish to or subscribe to is listed for the stream prefixes the
server serves; anything not listed is refused (the server has no anonymous user). NATS
wildcards match whole tokens only and stream names (`<PREFIX>_JOBS`) are single tokens, so
the lists name each prefix exactly instead of matching prefixes by pattern.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sinas_common.control import control_subject
from sinas_common.eventstream import event_stream_names
from sinas_common.jobstream import job_stream_names
from sinas_common.nats_connect import inbox_prefix
from sinas_common.settings import NatsSettings
from sinas_executor.consumer import AGENT_JOB_KIND, JOB_KIND
from sinas_executor.consumer import consumer_name as executor_consumer
from sinas_notifier.consumer import consumer_name as notifier_consumer

# The services that connect to NATS; the gateway never does.
NATS_ROLES = ("scheduler", "executor", "notifier")
JOB_KINDS = (JOB_KIND, AGENT_JOB_KIND)
CONFIG_FILE = "authorization.conf"
PASSWORDS_FILE = "passwords.json"


@dataclass(frozen=True, slots=True, kw_only=True)
class Permissions:
    """Subjects one user may publish to and subscribe to; everything else is denied."""

    publish: tuple[str, ...]
    subscribe: tuple[str, ...]


def _names(prefix: str) -> NatsSettings:
    return NatsSettings.model_validate({"NATS_STREAM_PREFIX": prefix})


def scheduler_subjects(prefix: str) -> Permissions:
    """Publishes jobs, events and control messages; creates and inspects its two streams.
    No consumer rights: it never reads jobs or events back through a consumer."""
    settings = _names(prefix)
    jobs, events = job_stream_names(settings), event_stream_names(settings)
    publish = [jobs.all_subjects, events.all_subjects, control_subject(settings)]
    # The account's JetStream usage and limits: what a readiness check asks.
    publish.append("$JS.API.INFO")
    for stream in (jobs.stream, events.stream):
        publish += [
            f"$JS.API.STREAM.CREATE.{stream}",
            f"$JS.API.STREAM.UPDATE.{stream}",
            f"$JS.API.STREAM.INFO.{stream}",
            # Reading a message back by sequence: operators and tests checking what was sent.
            f"$JS.API.STREAM.MSG.GET.{stream}",
        ]
    return Permissions(publish=tuple(publish), subscribe=())


def executor_subjects(prefix: str) -> Permissions:
    """Reads jobs through its own durable consumers (one per job kind) and receives control
    messages; may create those consumers (their ack wait is its setting) but no others, and
    publishes nothing anyone else reads."""
    settings = _names(prefix)
    jobs = job_stream_names(settings)
    publish: list[str] = []
    for kind in JOB_KINDS:
        consumer = executor_consumer(settings, kind)
        publish += _consumer_subjects(jobs.stream, consumer, jobs.subject(kind))
    return Permissions(publish=tuple(publish), subscribe=(control_subject(settings),))


def notifier_subjects(prefix: str) -> Permissions:
    """Reads events through its own durable consumer; nothing else."""
    settings = _names(prefix)
    events = event_stream_names(settings)
    consumer = notifier_consumer(settings)
    return Permissions(
        publish=tuple(_consumer_subjects(events.stream, consumer, events.all_subjects)),
        subscribe=(),
    )


def _consumer_subjects(stream: str, consumer: str, filter_subject: str) -> list[str]:
    return [
        f"$JS.API.CONSUMER.INFO.{stream}.{consumer}",
        # The create subject carries the filter, and the server checks the request against
        # it: this consumer, on this subject, and no other.
        f"$JS.API.CONSUMER.CREATE.{stream}.{consumer}.{filter_subject}",
        f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}",
        # Acks, naks and in-progress go to the delivered message's reply subject.
        f"$JS.ACK.{stream}.{consumer}.>",
    ]


ROLE_SUBJECTS = {
    "scheduler": scheduler_subjects,
    "executor": executor_subjects,
    "notifier": notifier_subjects,
}


def role_permissions(role: str, prefixes: Iterable[str]) -> Permissions:
    """What `role` may do on the streams of every prefix, plus its own reply inbox."""
    publish: list[str] = []
    subscribe = [f"{inbox_prefix(role)}.>"]
    for prefix in prefixes:
        granted = ROLE_SUBJECTS[role](prefix)
        publish += granted.publish
        subscribe += granted.subscribe
    # Without duplicates (a subject every prefix shares), in a stable order.
    return Permissions(publish=tuple(dict.fromkeys(publish)), subscribe=tuple(subscribe))


def _quoted(values: Iterable[str]) -> str:
    return ", ".join(json.dumps(value) for value in values)


def render_authorization(passwords: dict[str, str], prefixes: Sequence[str]) -> str:
    """The server config's `authorization` block: one user per role and no `no_auth_user`,
    so a client without credentials is refused."""
    users = []
    for role in NATS_ROLES:
        granted = role_permissions(role, prefixes)
        users.append(
            f"    {{user: {json.dumps(role)}, password: {json.dumps(passwords[role])}, "
            f"permissions: {{publish: {{allow: [{_quoted(granted.publish)}]}}, "
            f"subscribe: {{allow: [{_quoted(granted.subscribe)}]}}}}}}"
        )
    return "authorization {\n  users = [\n" + ",\n".join(users) + "\n  ]\n}\n"


def _write_private(path: Path, text: str) -> None:
    # Created 0600 before anything is written, and replaced whole so a reload never reads
    # half a file.
    partial = path.with_name(path.name + ".partial")
    partial.unlink(missing_ok=True)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as sink:
        sink.write(text)
    partial.replace(path)


@dataclass(slots=True)
class NatsAccounts:
    """The users of one NATS server, and the stream prefixes they are granted."""

    directory: Path
    passwords: dict[str, str]
    prefixes: list[str] = field(default_factory=list)

    @property
    def config_file(self) -> Path:
        """The `authorization` include the server config reads."""
        return self.directory / CONFIG_FILE

    def role_env(self) -> dict[str, dict[str, str]]:
        """Each role's NATS_USER and NATS_PASSWORD, for StackConfig.role_env."""
        return {
            role: {"NATS_USER": role, "NATS_PASSWORD": self.passwords[role]} for role in NATS_ROLES
        }

    def settings(self, role: str, *, url: str, prefix: str) -> NatsSettings:
        """NatsSettings that connect as `role` (tests acting as one service)."""
        return NatsSettings.model_validate(
            {"NATS_URL": url, "NATS_STREAM_PREFIX": prefix, **self.role_env()[role]}
        )

    def grant(self, prefix: str) -> bool:
        """Adds a prefix's streams to every user's permissions and rewrites the include;
        False when it was granted already. The server sees it on its next reload."""
        if prefix in self.prefixes:
            return False
        self.prefixes.append(prefix)
        self.write()
        return True

    def write(self) -> None:
        _write_private(self.config_file, render_authorization(self.passwords, self.prefixes))


def provision_nats_users(directory: Path, *, prefixes: Sequence[str]) -> NatsAccounts:
    """Writes the users' include under `directory` (0700, files 0600) with the passwords kept
    there from an earlier start, or fresh random ones."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    stored = directory / PASSWORDS_FILE
    passwords: dict[str, str] = json.loads(stored.read_text()) if stored.exists() else {}
    if set(passwords) != set(NATS_ROLES):
        passwords = {role: secrets.token_urlsafe(32) for role in NATS_ROLES}
        _write_private(stored, json.dumps(passwords, indent=2) + "\n")
    accounts = NatsAccounts(directory=directory, passwords=passwords, prefixes=list(prefixes))
    accounts.write()
    return accounts
