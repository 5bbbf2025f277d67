"""The scheduler's settings, read once from the environment at start; a bad value fails fast."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from sinas_common.settings import (
    CallbackPolicySettings,
    InternalTlsSettings,
    NatsSettings,
    ServiceSettings,
)
from sinas_scheduler.encryption import FernetCipher


class SchedulerSettings(ServiceSettings):
    """Everything the scheduler process needs; NATS_* variables fill the `nats` section and
    CALLBACK_URL_* ones the `callbacks` section."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    database_url: str = Field(validation_alias="DATABASE_URL")
    nats: NatsSettings = Field(default_factory=NatsSettings)
    # Loopback unless told otherwise (Kubernetes sets 0.0.0.0): the narrowest bind that works.
    grpc_bind: str = Field(default="127.0.0.1:50051", validation_alias="SCHEDULER_GRPC_BIND")
    # Not `internal_tls`: a field name is read as a variable too, and INTERNAL_TLS is a mode.
    tls: InternalTlsSettings = Field(default_factory=InternalTlsSettings)
    # Prometheus scrape endpoint, on its own port so it never shares the API's exposure.
    metrics_bind: str = Field(default="127.0.0.1", validation_alias="METRICS_BIND")
    metrics_port: int = Field(default=9101, ge=0, le=65535, validation_alias="METRICS_PORT")
    db_pool_size: int = Field(default=10, ge=1, le=1000, validation_alias="SCHEDULER_DB_POOL_SIZE")
    # How long a credential's user and permissions are reused once read (0: read every RPC).
    auth_cache_seconds: float = Field(
        default=2.0, ge=0, le=300, validation_alias="AUTH_CACHE_SECONDS"
    )
    # How often the times API keys were last used are written, in one statement for all of
    # them: a listing's `last_used_at` lags by up to this much, and use costs no write.
    api_key_usage_flush_seconds: float = Field(
        default=60.0, gt=0, le=3600, validation_alias="API_KEY_USAGE_FLUSH_SECONDS"
    )
    bootstrap_admin_key: SecretStr | None = Field(
        default=None, validation_alias="SINAS_BOOTSTRAP_ADMIN_KEY"
    )
    max_execution_depth: int = Field(default=4, ge=0, validation_alias="MAX_EXECUTION_DEPTH")
    default_function_timeout_seconds: int = Field(
        default=300, ge=1, validation_alias="DEFAULT_FUNCTION_TIMEOUT_SECONDS"
    )
    max_function_timeout_seconds: int = Field(
        default=86400, ge=1, validation_alias="MAX_FUNCTION_TIMEOUT_SECONDS"
    )
    execution_max_attempts: int = Field(default=3, ge=1, validation_alias="EXECUTION_MAX_ATTEMPTS")
    execution_lease_seconds: float = Field(
        default=60.0, gt=0, validation_alias="EXECUTION_LEASE_SECONDS"
    )
    execution_token_buffer_seconds: int = Field(
        default=300, ge=0, validation_alias="EXECUTION_TOKEN_BUFFER_SECONDS"
    )
    max_execution_token_seconds: int = Field(
        default=86400, ge=1, validation_alias="MAX_EXECUTION_TOKEN_SECONDS"
    )
    dispatcher_enabled: bool = Field(default=True, validation_alias="SCHEDULER_DISPATCHER_ENABLED")
    dispatch_batch: int = Field(
        default=1000, ge=1, le=10000, validation_alias="SCHEDULER_DISPATCH_BATCH"
    )
    reaper_interval_seconds: float = Field(
        default=5.0, gt=0, validation_alias="SCHEDULER_REAPER_INTERVAL_SECONDS"
    )
    max_batch_size: int = Field(default=1000, ge=1, le=100_000, validation_alias="MAX_BATCH_SIZE")
    # How long an execution paused in `input()` waits for a continue before it fails.
    execution_input_timeout_seconds: int = Field(
        default=3600, ge=1, validation_alias="EXECUTION_INPUT_TIMEOUT_SECONDS"
    )
    callbacks: CallbackPolicySettings = Field(default_factory=CallbackPolicySettings)
    callback_claim_timeout_seconds: float = Field(
        default=60.0, gt=0, validation_alias="CALLBACK_CLAIM_TIMEOUT_SECONDS"
    )
    callback_token_seconds: int = Field(
        default=300, ge=1, le=86400, validation_alias="CALLBACK_TOKEN_SECONDS"
    )

    # Fernet keys, comma-separated, encrypting the token-signing keys and LLM provider API keys
    # at rest: the first encrypts, all decrypt. Required to serve; `--migrate-only` needs none.
    encryption_key: SecretStr | None = Field(default=None, validation_alias="SINAS_ENCRYPTION_KEY")
    default_llm_provider: str = Field(default="", validation_alias="DEFAULT_LLM_PROVIDER")
    default_agent_max_turns: int = Field(
        default=10, ge=1, le=1000, validation_alias="DEFAULT_AGENT_MAX_TURNS"
    )
    agent_run_timeout_seconds: int = Field(
        default=600, ge=1, le=86400, validation_alias="AGENT_RUN_TIMEOUT_SECONDS"
    )

    idempotency_ttl_seconds: int = Field(
        default=86400, ge=1, validation_alias="IDEMPOTENCY_TTL_SECONDS"
    )
    retention_days: int = Field(default=30, ge=1, validation_alias="RETENTION_DAYS")
    retention_interval_seconds: float = Field(
        default=300.0, gt=0, validation_alias="RETENTION_INTERVAL_SECONDS"
    )
    retention_chunk_size: int = Field(
        default=500, ge=1, le=10000, validation_alias="RETENTION_CHUNK_SIZE"
    )

    @field_validator("bootstrap_admin_key", "encryption_key")
    @classmethod
    def _empty_key_is_unset(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            return None
        return value

    @field_validator("encryption_key")
    @classmethod
    def _fernet_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            try:
                FernetCipher(value.get_secret_value())
            except ValueError as exc:
                raise ValueError(
                    "SINAS_ENCRYPTION_KEY must be Fernet keys (32 url-safe base64 bytes each), "
                    "comma-separated"
                ) from exc
        return value

    @field_validator("database_url")
    @classmethod
    def _postgres_psycopg(cls, value: str) -> str:
        if not value.startswith("postgresql+psycopg://"):
            raise ValueError("DATABASE_URL must be a postgresql+psycopg:// SQLAlchemy URL")
        return value
