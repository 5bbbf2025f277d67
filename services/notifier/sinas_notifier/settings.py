"""The notifier's settings, read once from environment variables at start."""

from __future__ import annotations

import os
import socket

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from sinas_common.settings import (
    CallbackPolicySettings,
    InternalTlsSettings,
    NatsSettings,
    SchedulerClientSettings,
    ServiceSettings,
)
from sinas_notifier.signing import parse_signing_secret


def _default_notifier_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class DeliverySettings(BaseSettings):
    """How callbacks are signed and sent."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    # `whsec_<base64>`; required when callbacks are enabled. Empty means unset.
    signing_secret: SecretStr | None = Field(
        default=None, validation_alias="CALLBACK_SIGNING_SECRET"
    )
    # Local development and tests only: one more CA to trust besides the system ones.
    ca_file: str | None = Field(default=None, validation_alias="CALLBACK_CA_FILE")
    timeout_seconds: float = Field(default=10.0, gt=0, validation_alias="CALLBACK_TIMEOUT_SECONDS")
    # How long a callback host's lookup is reused; 0 looks it up for every delivery.
    dns_cache_seconds: float = Field(
        default=5.0, ge=0, le=3600, validation_alias="CALLBACK_DNS_CACHE_SECONDS"
    )

    @field_validator("signing_secret", mode="before")
    @classmethod
    def _empty_secret_is_unset(cls, value: object) -> object:
        return None if value in ("", None) else value

    @field_validator("ca_file", mode="before")
    @classmethod
    def _empty_ca_file_is_unset(cls, value: object) -> object:
        return None if value in ("", None) else value

    @field_validator("signing_secret")
    @classmethod
    def _well_formed_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            parse_signing_secret(value.get_secret_value())
        return value

    def secret_bytes(self) -> bytes | None:
        if self.signing_secret is None:
            return None
        return parse_signing_secret(self.signing_secret.get_secret_value())


class NotifierSettings(ServiceSettings):
    """Everything `python -m sinas_notifier` needs; a bad value stops the start."""

    concurrency: int = Field(default=64, ge=1, le=4096, validation_alias="NOTIFIER_CONCURRENCY")
    fetch_batch: int = Field(default=100, ge=1, le=10_000, validation_alias="NOTIFIER_FETCH_BATCH")
    # Loopback unless told otherwise (Kubernetes sets 0.0.0.0): the narrowest bind that works.
    grpc_bind: str = Field(default="127.0.0.1:50071", validation_alias="NOTIFIER_GRPC_BIND")
    # Prometheus scrape endpoint, on its own port so it never shares the API's exposure.
    metrics_bind: str = Field(default="127.0.0.1", validation_alias="METRICS_BIND")
    metrics_port: int = Field(default=9103, ge=0, le=65535, validation_alias="METRICS_PORT")
    notifier_id: str = Field(default_factory=_default_notifier_id, validation_alias="NOTIFIER_ID")
    delivery: DeliverySettings = Field(default_factory=DeliverySettings)
    callback: CallbackPolicySettings = Field(default_factory=CallbackPolicySettings)
    nats: NatsSettings = Field(default_factory=NatsSettings)
    scheduler: SchedulerClientSettings = Field(default_factory=SchedulerClientSettings)
    # Not `internal_tls`: a field name is read as a variable too, and INTERNAL_TLS is a mode.
    tls: InternalTlsSettings = Field(default_factory=InternalTlsSettings)

    @model_validator(mode="after")
    def _secret_when_enabled(self) -> NotifierSettings:
        enabled = any(h.strip() for h in self.callback.url_hosts.split(","))
        if enabled and self.delivery.signing_secret is None:
            raise ValueError("CALLBACK_SIGNING_SECRET is required when CALLBACK_URL_HOSTS is set")
        return self
