"""Settings sections that more than one service reads, from environment variables."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator
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
    # This service's own NATS user: the server grants each user only the subjects its
    # service needs. The user also names the reply inboxes (`_INBOX.<user>.>`), so it must
    # be one subject token.
    user: str = Field(default="", pattern=r"^[A-Za-z0-9_-]*$", validation_alias="NATS_USER")
    password: SecretStr = Field(default=SecretStr(""), validation_alias="NATS_PASSWORD")

    @property
    def servers(self) -> list[str]:
        """NATS_URL may list several servers of a cluster, comma-separated."""
        return [server.strip() for server in self.url.split(",") if server.strip()]


class SchedulerClientSettings(BaseSettings):
    """How a service reaches the scheduler."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    scheduler_addr: str = Field(default="127.0.0.1:50051", validation_alias="SCHEDULER_ADDR")
    rpc_timeout_seconds: float = Field(default=30.0, gt=0, validation_alias="RPC_TIMEOUT_SECONDS")
    # The DNS name the scheduler's certificate must carry, whatever address SCHEDULER_ADDR
    # names (127.0.0.1, a Service's cluster address).
    tls_server_name: str = Field(
        default="sinas-scheduler", min_length=1, validation_alias="SCHEDULER_TLS_SERVER_NAME"
    )


class InternalTlsSettings(BaseSettings):
    """Mutual TLS on the internal gRPC connections: this service's certificate and key, and
    the private CA its peers' certificates must chain to. The files are required when on;
    `sinas_common.tls` reads them at start and fails naming the variable that is missing."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    # `off` only behind a mesh that does mutual TLS and the scheduler's role checks itself.
    mode: Literal["mtls", "off"] = Field(default="mtls", validation_alias="INTERNAL_TLS")
    ca_file: str | None = Field(default=None, validation_alias="INTERNAL_TLS_CA_FILE")
    cert_file: str | None = Field(default=None, validation_alias="INTERNAL_TLS_CERT_FILE")
    key_file: str | None = Field(default=None, validation_alias="INTERNAL_TLS_KEY_FILE")

    @field_validator("ca_file", "cert_file", "key_file", mode="before")
    @classmethod
    def _empty_path_is_unset(cls, value: object) -> object:
        return None if value in ("", None) else value

    @property
    def enabled(self) -> bool:
        return self.mode == "mtls"


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
