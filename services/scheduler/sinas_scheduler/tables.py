"""The PostgreSQL schema as SQLAlchemy Core tables; only the store and migrations use them."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

TZ = sa.DateTime(timezone=True)
ID = sa.String(36)
# `json`, not `jsonb`: jsonb rewrites numbers and key order; user data must survive exactly.
JSON_DATA = postgresql.JSON(none_as_null=True)

EXECUTION_STATUSES = ("PENDING", "RUNNING", "AWAITING_INPUT", "COMPLETED", "FAILED", "CANCELLED")

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("email", sa.String(255), nullable=False),
    sa.Column("created_at", TZ, nullable=False, server_default=sa.func.now()),
    sa.Column("last_login_at", TZ),
    sa.Index("uq_users_email_lower", sa.func.lower(sa.text("email")), unique=True),
)

roles = sa.Table(
    "roles",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("name", sa.String(255), nullable=False, unique=True),
    sa.Column("permissions", postgresql.JSONB, nullable=False, server_default="[]"),
    sa.Column("created_at", TZ, nullable=False, server_default=sa.func.now()),
)

user_roles = sa.Table(
    "user_roles",
    metadata,
    sa.Column("user_id", ID, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("role_id", ID, sa.ForeignKey("roles.id", ondelete="CASCADE"), primary_key=True),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("user_id", ID, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("key_prefix", sa.String(16), nullable=False),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", TZ, nullable=False, server_default=sa.func.now()),
    sa.Column("last_used_at", TZ),
    sa.Column("expires_at", TZ),
    sa.Column("revoked_at", TZ),
    sa.Index("ix_api_keys_user_created", "user_id", sa.text("created_at DESC")),
)

# `private_key_pem` holds the PEM Fernet-encrypted with SINAS_ENCRYPTION_KEY (rows from before
# encryption at rest are encrypted when a scheduler starts); the column keeps its old name.
signing_keys = sa.Table(
    "signing_keys",
    metadata,
    sa.Column("kid", sa.String(64), primary_key=True),
    sa.Column("algorithm", sa.String(16), nullable=False),
    sa.Column("private_key_pem", sa.Text, nullable=False),
    sa.Column("public_jwk", postgresql.JSONB, nullable=False),
    sa.Column("created_at", TZ, nullable=False, server_default=sa.func.now()),
    sa.Column("retired_at", TZ),
)

functions = sa.Table(
    "functions",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("namespace", sa.String(255), nullable=False),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("owner_user_id", ID, sa.ForeignKey("users.id"), nullable=False),
    sa.Column("description", sa.Text, nullable=False, server_default=""),
    sa.Column("code", sa.Text, nullable=False),
    sa.Column("input_schema", JSON_DATA, nullable=False),
    sa.Column("output_schema", JSON_DATA, nullable=False),
    sa.Column("timeout_seconds", sa.Integer, nullable=False),
    sa.Column("requires_approval", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("version", sa.Integer, nullable=False, server_default="1"),
    sa.Column("created_at", TZ, nullable=False, server_default=sa.func.now()),
    sa.Column("updated_at", TZ, nullable=False, server_default=sa.func.now()),
    sa.Column("deleted_at", TZ),
    # A deleted function keeps its row (executions point at its versions); the name is free
    # again for a new function.
    sa.Index(
        "uq_functions_live_name",
        "namespace",
        "name",
        unique=True,
        postgresql_where=sa.text("deleted_at IS NULL"),
    ),
)

function_versions = sa.Table(
    "function_versions",
    metadata,
    sa.Column("function_id", ID, sa.ForeignKey("functions.id"), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("description", sa.Text, nullable=False, server_default=""),
    sa.Column("code", sa.Text, nullable=False),
    sa.Column("input_schema", JSON_DATA, nullable=False),
    sa.Column("output_schema", JSON_DATA, nullable=False),
    sa.Column("timeout_seconds", sa.Integer, nullable=False),
    sa.Column("requires_approval", sa.Boolean, nullable=False),
    sa.Column("created_by", ID, nullable=False),
    sa.Column("created_at", TZ, nullable=False, server_default=sa.func.now()),
)

executions = sa.Table(
    "executions",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("user_id", ID, sa.ForeignKey("users.id"), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("namespace", sa.String(255), nullable=False),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("function_id", ID),
    sa.Column("function_version", sa.Integer),
    sa.Column("trigger_type", sa.String(32), nullable=False),
    sa.Column("trigger_id", sa.String(255), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("input", JSON_DATA, nullable=False),
    sa.Column("output", JSON_DATA),
    sa.Column("error", sa.Text),
    sa.Column("traceback", sa.Text),
    sa.Column("timed_out", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("depth", sa.Integer, nullable=False, server_default="0"),
    sa.Column("created_at", TZ, nullable=False),
    sa.Column("run_at", TZ, nullable=False),
    sa.Column("dispatched_at", TZ),
    sa.Column("started_at", TZ),
    sa.Column("completed_at", TZ),
    sa.Column("duration_ms", sa.BigInteger),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("worker_id", sa.String(255)),
    sa.Column("heartbeat_at", TZ),
    sa.Column("batch_id", ID),
    sa.Column("batch_index", sa.Integer),
    sa.Column("chat_id", ID),
    sa.Column("parent_execution_id", ID),
    sa.Column("callback_url", sa.Text),
    sa.Column("callback_status", sa.String(20)),
    sa.Column("callback_response_code", sa.Integer),
    sa.Column("callback_error", sa.Text),
    sa.Column("callback_claimed_at", TZ),
    sa.Column("callback_attempted_at", TZ),
    sa.Column("event_published_at", TZ),
    # Interactive input: what `input(prompt)` asked, until when, how many times so far, and
    # the answer a continue left for the executor until the next prompt clears it.
    sa.Column("input_prompt", sa.Text),
    sa.Column("input_deadline_at", TZ),
    sa.Column("input_round", sa.Integer, nullable=False, server_default="0"),
    sa.Column("resumed_input", JSON_DATA),
    sa.Column("resumed_at", TZ),
    # Agent runs: LLM token usage; tool-call children: the model's id of the call.
    sa.Column("prompt_tokens", sa.BigInteger),
    sa.Column("completion_tokens", sa.BigInteger),
    sa.Column("tool_call_id", sa.String(255)),
    sa.CheckConstraint(
        "status IN (" + ", ".join(f"'{s}'" for s in EXECUTION_STATUSES) + ")", name="status"
    ),
    sa.Index("ix_executions_user_created", "user_id", sa.text("created_at DESC")),
    sa.Index("ix_executions_created", sa.text("created_at DESC")),
    # The dispatcher's sweep reads only undispatched rows, so a million delayed rows cost
    # nothing until they are due.
    sa.Index(
        "ix_executions_due",
        "run_at",
        postgresql_where=sa.text("dispatched_at IS NULL AND status = 'PENDING'"),
    ),
    sa.Index(
        "ix_executions_running_heartbeat",
        "heartbeat_at",
        postgresql_where=sa.text("status = 'RUNNING'"),
    ),
    sa.Index("ix_executions_batch_status", "batch_id", "status"),
    sa.Index("ix_executions_chat", "chat_id"),
    # The retention sweep reads only finished rows, oldest first.
    sa.Index(
        "ix_executions_retention",
        sa.text("COALESCE(completed_at, created_at)"),
        postgresql_where=sa.text("status IN ('COMPLETED', 'FAILED', 'CANCELLED')"),
    ),
    # The event publisher's sweep reads only ended rows whose callback event is still owed.
    sa.Index(
        "ix_executions_event_outbox",
        "completed_at",
        postgresql_where=sa.text(
            "event_published_at IS NULL AND callback_status IS NOT NULL"
            " AND status IN ('COMPLETED', 'FAILED', 'CANCELLED')"
        ),
    ),
    # The input-deadline sweep reads only paused rows.
    sa.Index(
        "ix_executions_input_deadline",
        "input_deadline_at",
        postgresql_where=sa.text("status = 'AWAITING_INPUT'"),
    ),
    # The reaper finds callback claims whose notifier never recorded an outcome.
    sa.Index(
        "ix_executions_callback_in_flight",
        "callback_claimed_at",
        postgresql_where=sa.text("callback_status = 'in_flight'"),
    ),
)

batches = sa.Table(
    "batches",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("user_id", ID, sa.ForeignKey("users.id"), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("namespace", sa.String(255), nullable=False),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("total", sa.Integer, nullable=False),
    # NULL until the last child ends; counts always come from the children.
    sa.Column("status", sa.String(20)),
    sa.Column("trigger_id_prefix", sa.String(255)),
    sa.Column("delay_seconds", sa.Integer, nullable=False, server_default="0"),
    sa.Column("callback_url", sa.Text),
    sa.Column("batch_callback_url", sa.Text),
    sa.Column("batch_callback_status", sa.String(20)),
    sa.Column("batch_callback_response_code", sa.Integer),
    sa.Column("batch_callback_error", sa.Text),
    sa.Column("batch_callback_claimed_at", TZ),
    sa.Column("batch_callback_attempted_at", TZ),
    sa.Column("event_published_at", TZ),
    sa.Column("created_at", TZ, nullable=False),
    sa.Column("finished_at", TZ),
    sa.Column("cancelled_at", TZ),
    sa.CheckConstraint(
        "status IS NULL OR status IN ('completed', 'partial', 'failed', 'cancelled')",
        name="status",
    ),
    sa.Index("ix_batches_user_created", "user_id", sa.text("created_at DESC")),
    sa.Index("ix_batches_created", sa.text("created_at DESC")),
    # The batch-event publisher's sweep reads only finished batches whose event is owed.
    sa.Index(
        "ix_batches_event_outbox",
        "finished_at",
        postgresql_where=sa.text(
            "event_published_at IS NULL AND batch_callback_status IS NOT NULL"
        ),
    ),
    sa.Index(
        "ix_batches_retention", "finished_at", postgresql_where=sa.text("finished_at IS NOT NULL")
    ),
    sa.Index(
        "ix_batches_callback_in_flight",
        "batch_callback_claimed_at",
        postgresql_where=sa.text("batch_callback_status = 'in_flight'"),
    ),
)

# Per user, kept IDEMPOTENCY_TTL_SECONDS: the request's fingerprint and the answer it got.
idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    sa.Column("user_id", ID, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("response", JSON_DATA, nullable=False),
    sa.Column("created_at", TZ, nullable=False),
    sa.Index("ix_idempotency_keys_created", "created_at"),
)

# The API key is Fernet-encrypted with SINAS_ENCRYPTION_KEY; the plain key is never stored.
llm_providers = sa.Table(
    "llm_providers",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("name", sa.String(255), nullable=False, unique=True),
    sa.Column("base_url", sa.Text, nullable=False),
    sa.Column("api_key_encrypted", sa.Text, nullable=False),
    sa.Column("default_model", sa.String(255), nullable=False),
    sa.Column("created_by", ID, nullable=False),
    sa.Column("created_at", TZ, nullable=False, server_default=sa.func.now()),
)

agents = sa.Table(
    "agents",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("namespace", sa.String(255), nullable=False),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("owner_user_id", ID, sa.ForeignKey("users.id"), nullable=False),
    sa.Column("version", sa.Integer, nullable=False, server_default="1"),
    sa.Column("created_at", TZ, nullable=False, server_default=sa.func.now()),
    sa.Column("updated_at", TZ, nullable=False, server_default=sa.func.now()),
    sa.Column("deleted_at", TZ),
    # As functions: a deleted agent keeps its row (chats point at its versions).
    sa.Index(
        "uq_agents_live_name",
        "namespace",
        "name",
        unique=True,
        postgresql_where=sa.text("deleted_at IS NULL"),
    ),
)

# Every create and update writes one immutable version; a chat runs the version it began with.
agent_versions = sa.Table(
    "agent_versions",
    metadata,
    sa.Column("agent_id", ID, sa.ForeignKey("agents.id"), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("description", sa.Text, nullable=False, server_default=""),
    sa.Column("llm_provider", sa.String(255), nullable=False, server_default=""),
    sa.Column("model", sa.String(255), nullable=False, server_default=""),
    sa.Column("system_prompt", sa.Text, nullable=False, server_default=""),
    sa.Column("initial_messages", JSON_DATA, nullable=False),
    sa.Column("input_schema", JSON_DATA, nullable=False),
    sa.Column("temperature", sa.Float),
    sa.Column("max_tokens", sa.Integer),
    sa.Column("enabled_functions", JSON_DATA, nullable=False),
    sa.Column("max_turns", sa.Integer, nullable=False),
    sa.Column("created_by", ID, nullable=False),
    sa.Column("created_at", TZ, nullable=False, server_default=sa.func.now()),
)

# The provider and model are resolved at submit, so a run never depends on later defaults.
chats = sa.Table(
    "chats",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("user_id", ID, sa.ForeignKey("users.id"), nullable=False),
    sa.Column("agent_id", ID, nullable=False),
    sa.Column("agent_version", sa.Integer, nullable=False),
    sa.Column("agent_namespace", sa.String(255), nullable=False),
    sa.Column("agent_name", sa.String(255), nullable=False),
    sa.Column("llm_provider_id", ID, sa.ForeignKey("llm_providers.id"), nullable=False),
    sa.Column("model", sa.String(255), nullable=False),
    sa.Column("title", sa.Text, nullable=False, server_default=""),
    sa.Column("input_variables", JSON_DATA, nullable=False),
    sa.Column("created_at", TZ, nullable=False),
    sa.Column("updated_at", TZ, nullable=False),
    sa.Index("ix_chats_user_created", "user_id", sa.text("created_at DESC")),
    sa.Index("ix_chats_retention", "updated_at"),
)

messages = sa.Table(
    "messages",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("chat_id", ID, sa.ForeignKey("chats.id", ondelete="CASCADE"), nullable=False),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("content", sa.Text),
    sa.Column("tool_calls", JSON_DATA),
    sa.Column("tool_call_id", sa.String(255)),
    sa.Column("created_at", TZ, nullable=False),
    sa.UniqueConstraint("chat_id", "position"),
)
