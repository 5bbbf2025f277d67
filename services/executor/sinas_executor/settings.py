"""The executor's settings, read once from environment variables at start."""

from __future__ import annotations

import os
import socket
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from sinas_common.settings import (
    InternalTlsSettings,
    NatsSettings,
    SchedulerClientSettings,
    ServiceSettings,
)


def _default_executor_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class SandboxSettings(BaseSettings):
    """Limits and placement of the sandboxed worker processes."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    concurrency: int = Field(default=8, ge=1, le=1024, validation_alias="EXECUTOR_CONCURRENCY")
    # A worker's fork, hardening and exit cost the machine ~6 ms of CPU, ~65 us a run when
    # recycled every 100 runs; leaks are bounded by retiring on memory (see `pool`) instead.
    worker_max_runs: int = Field(default=1000, ge=1, validation_alias="EXECUTOR_WORKER_MAX_RUNS")
    worker_idle_seconds: float = Field(
        default=10.0, gt=0, validation_alias="EXECUTOR_WORKER_IDLE_SECONDS"
    )
    memory_limit_mb: int = Field(default=512, ge=64, validation_alias="EXECUTOR_MEMORY_LIMIT_MB")
    cpu_limit_seconds: int = Field(default=600, ge=1, validation_alias="EXECUTOR_CPU_LIMIT_SECONDS")
    file_size_limit_mb: int = Field(
        default=64, ge=1, validation_alias="EXECUTOR_FILE_SIZE_LIMIT_MB"
    )
    open_files_limit: int = Field(default=256, ge=16, validation_alias="EXECUTOR_OPEN_FILES_LIMIT")
    # Processes and threads of one run together, its first process included (RLIMIT_NPROC,
    # counted per worker: each has a uid or a user namespace of its own).
    max_processes: int = Field(default=64, ge=4, le=4096, validation_alias="EXECUTOR_MAX_PROCESSES")
    # `namespaces`: every worker isolated, or the executor refuses to start. `unsafe-none`:
    # the operator's explicit choice to run without (warned at start, reported on /health).
    isolation: Literal["namespaces", "unsafe-none"] = Field(
        default="namespaces", validation_alias="EXECUTOR_SANDBOX"
    )
    # `isolated`: each worker in a network namespace of its own, out through pasta (its
    # 127.0.0.1 is not the host's, but for the API's port); `none`: only its own loopback;
    # `host`: the host's network; `auto`: isolated where available, else host (warned).
    network: Literal["auto", "isolated", "none", "host"] = Field(
        default="auto", validation_alias="EXECUTOR_SANDBOX_NETWORK"
    )
    root: str | None = Field(default=None, validation_alias="EXECUTOR_SANDBOX_ROOT")
    uid_base: int = Field(default=61000, ge=1000, validation_alias="EXECUTOR_SANDBOX_UID_BASE")
    # As root, every worker gets a uid of its own from this many above the base, none given
    # again while its previous worker lives.
    uid_count: int = Field(default=65536, ge=1, validation_alias="EXECUTOR_SANDBOX_UID_COUNT")
    # The one tmpfs that holds a worker's scratch folder, /tmp, /var/tmp and /dev/shm.
    disk_limit_mb: int = Field(default=256, ge=1, validation_alias="EXECUTOR_DISK_LIMIT_MB")
    # Besides the sandbox root, paths workers must not see (os.pathsep-separated): the
    # database's socket folder, $SINAS_HOME, the service logs.
    hide_paths: str = Field(
        default="/run/postgresql:/var/run/postgresql",
        validation_alias="EXECUTOR_SANDBOX_HIDE_PATHS",
    )


class ExecutorSettings(ServiceSettings):
    """Everything `python -m sinas_executor` needs; a bad value stops the start."""

    fetch_batch: int = Field(default=256, ge=1, le=10_000, validation_alias="EXECUTOR_FETCH_BATCH")
    # At most this many function executions claimed ahead of a free slot while runs stay short,
    # fewer as they lengthen (see `prefetch.PrefetchGate`); 0 turns it off.
    prefetch: int = Field(default=256, ge=0, le=10_000, validation_alias="EXECUTOR_PREFETCH")
    ack_wait_seconds: float = Field(
        default=30.0, ge=3.0, validation_alias="EXECUTOR_ACK_WAIT_SECONDS"
    )
    api_url: str = Field(default="http://127.0.0.1:8000", validation_alias="SINAS_API_URL")
    # Loopback unless told otherwise (Kubernetes sets 0.0.0.0): the narrowest bind that works.
    grpc_bind: str = Field(default="127.0.0.1:50061", validation_alias="EXECUTOR_GRPC_BIND")
    # Prometheus scrape endpoint, on its own port so it never shares the API's exposure.
    metrics_bind: str = Field(default="127.0.0.1", validation_alias="METRICS_BIND")
    metrics_port: int = Field(default=9102, ge=0, le=65535, validation_alias="METRICS_PORT")
    executor_id: str = Field(default_factory=_default_executor_id, validation_alias="EXECUTOR_ID")
    # Agent runs mostly wait on the model and on their tool calls: their own slots, so they
    # never take the function slots their tool calls need.
    agent_concurrency: int = Field(
        default=16, ge=1, le=4096, validation_alias="EXECUTOR_AGENT_CONCURRENCY"
    )
    llm_timeout_seconds: float = Field(
        default=120.0, gt=0, validation_alias="EXECUTOR_LLM_TIMEOUT_SECONDS"
    )
    sandbox: SandboxSettings = Field(default_factory=SandboxSettings)
    nats: NatsSettings = Field(default_factory=NatsSettings)
    scheduler: SchedulerClientSettings = Field(default_factory=SchedulerClientSettings)
    # Not `internal_tls`: a field name is read as a variable too, and INTERNAL_TLS is a mode.
    tls: InternalTlsSettings = Field(default_factory=InternalTlsSettings)

    @property
    def concurrency(self) -> int:
        return self.sandbox.concurrency
