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

    @property
    def servers(self) -> list[str]:
        """NATS_URL may list several servers of a cluster, comma-separated."""
        return [server.strip() for server in self.url.split(",") if server.strip()]


class SchedulerClientSettings(BaseSettings):
    """How a service reaches the scheduler."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    scheduler_addr: str = Field(default="127.0.0.1:50051", validation_alias="SCHEDULER_ADDR")
    rpc_timeout_seconds: float = Field(default=30.0, gt=0, validation_alias="RPC_TIMEOUT_SECONDS")


class CallbackPolicySettings(BaseSettings):
    """Which callback URLs are accepted: checked at submit (scheduler) and again at delivery
    (notifier), so both read the same variables."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    # Unset or empty: callbacks disabled; "*": any host; else a comma-separated host list.
    url_hosts: str = Field(default="", validation_alias="CALLBACK_URL_HOSTS")
    # Comma-separated ports allowed besides the default 443.
    url_ports: str = Field(default="443", validation_alias="CALLBACK_URL_PORTS")
    # Local development and tests only: lifts the globally-routable address rule.
    allow_private_networks: bool = Field(
        default=False, validation_alias="CALLBACK_ALLOW_PRIVATE_NETWORKS"
    )
