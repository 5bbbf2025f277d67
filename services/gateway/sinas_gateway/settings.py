"""The gateway's settings, read once from environment variables at start."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from sinas_common.settings import InternalTlsSettings, SchedulerClientSettings, ServiceSettings


class GatewaySettings(ServiceSettings):
    """Where the gateway listens, its request limits, and how it reaches the scheduler."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    # Loopback unless told otherwise (Kubernetes sets 0.0.0.0): the narrowest bind that works.
    host: str = Field(default="127.0.0.1", validation_alias="GATEWAY_HOST")
    # Prometheus scrape endpoint, on its own port so it never shares the API's exposure.
    metrics_bind: str = Field(default="127.0.0.1", validation_alias="METRICS_BIND")
    metrics_port: int = Field(default=9100, ge=0, le=65535, validation_alias="METRICS_PORT")
    port: int = Field(default=8000, ge=0, le=65535, validation_alias="GATEWAY_PORT")
    max_request_body_bytes: int = Field(
        default=1024 * 1024, gt=0, validation_alias="MAX_REQUEST_BODY_BYTES"
    )
    sync_execute_default_timeout: int = Field(
        default=300, gt=0, validation_alias="SYNC_EXECUTE_DEFAULT_TIMEOUT"
    )
    access_log: bool = Field(default=False, validation_alias="GATEWAY_ACCESS_LOG")
    # Submit calls one caller has under way at once; while that many are, the caller's
    # further execute requests wait and go to the scheduler together in one call.
    submit_calls_in_flight: int = Field(
        default=1, ge=1, le=1000, validation_alias="GATEWAY_SUBMIT_CALLS_IN_FLIGHT"
    )
    scheduler: SchedulerClientSettings = Field(default_factory=SchedulerClientSettings)
    # Not `internal_tls`: a field name is read as a variable too, and INTERNAL_TLS is a mode.
    tls: InternalTlsSettings = Field(default_factory=InternalTlsSettings)
