"""Settings sections that more than one service reads, from environment variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    """What every service has: its log level and how long a graceful stop may take."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    log_level: str = Field(default="INFO", validation_alias="LOG_LEVEL")
    shutdown_grace_seconds: float = Field(
        default=30.0, gt=0, validation_alias="SHUTDOWN_GRACE_SECONDS"
    )


class NatsSettings(BaseSettings):
    """Where NATS is and how the JetStream streams are named."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    url: str = Field(default="nats://127.0.0.1:4222", validation_alias="NATS_URL")
    stream_prefix: str = Field(
        default="SINAS", pattern=r"^[A-Z][A-Z0-9_]*$", validation_alias="NATS_STREAM_PREFIX"
    )
    stream_replicas: int = Field(default=1, ge=1, le=5, validation_alias="NATS_STREAM_REPLICAS")


class SchedulerClientSettings(BaseSettings):
    """How a service reaches the scheduler."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    scheduler_addr: str = Field(default="127.0.0.1:50051", validation_alias="SCHEDULER_ADDR")
    rpc_timeout_seconds: float = Field(default=30.0, gt=0, validation_alias="RPC_TIMEOUT_SECONDS")
