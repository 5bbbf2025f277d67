"""agents: LLM providers, agent definitions and their versions, chats, messages, token usage

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_TZ = sa.DateTime(timezone=True)
_ID = sa.String(36)
_JSON = postgresql.JSON(none_as_null=True)


def upgrade() -> None:
    op.create_table(
        "llm_providers",
        sa.Column("id", _ID, primary_key=True),
        sa.Column("name", sa.String(255), nullable=False, unique=True),
        sa.Column("base_url", sa.Text, nullable=False),
        sa.Column("api_key_encrypted", sa.Text, nullable=False),
        sa.Column("default_model", sa.String(255), nullable=False),
        sa.Column("created_by", _ID, nullable=False),
        sa.Column("created_at", _TZ, nullable=False, server_default=sa.func.now()),
    )
    op.create_table(
        "agents",
        sa.Column("id", _ID, primary_key=True),
        sa.Column("namespace", sa.String(255), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("owner_user_id", _ID, sa.ForeignKey("users.id"), nullable=False),
        sa.Column("version", sa.Integer, nullable=False, server_default="1"),
        sa.Column("created_at", _TZ, nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", _TZ, nullable=False, server_default=sa.func.now()),
        sa.Column("deleted_at", _TZ),
    )
    op.create_index(
        "uq_agents_live_name",
        "agents",
        ["namespace", "name"],
        unique=True,
        postgresql_where=sa.text("deleted_at IS NULL"),
    )
    op.create_table(
        "agent_versions",
        sa.Column("agent_id", _ID, sa.ForeignKey("agents.id"), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("llm_provider", sa.String(255), nullable=False, server_default=""),
        sa.Column("model", sa.String(255), nullable=False, server_default=""),
        sa.Column("system_prompt", sa.Text, nullable=False, server_default=""),
        sa.Column("initial_messages", _JSON, nullable=False),
        sa.Column("input_schema", _JSON, nullable=False),
        sa.Column("temperature", sa.Float),
        sa.Column("max_tokens", sa.Integer),
        sa.Column("enabled_functions", _JSON, nullable=False),
        sa.Column("max_turns", sa.Integer, nullable=False),
        sa.Column("created_by", _ID, nullable=False),
        sa.Column("created_at", _TZ, nullable=False, server_default=sa.func.now()),
    )
    op.create_table(
        "chats",
        sa.Column("id", _ID, primary_key=True),
        sa.Column("user_id", _ID, sa.ForeignKey("users.id"), nullable=False),
        sa.Column("agent_id", _ID, nullable=False),
        sa.Column("agent_version", sa.Integer, nullable=False),
        sa.Column("agent_namespace", sa.String(255), nullable=False),
        sa.Column("agent_name", sa.String(255), nullable=False),
        sa.Column("llm_provider_id", _ID, sa.ForeignKey("llm_providers.id"), nullable=False),
        sa.Column("model", sa.String(255), nullable=False),
        sa.Column("title", sa.Text, nullable=False, server_default=""),
        sa.Column("input_variables", _JSON, nullable=False),
        sa.Column("created_at", _TZ, nullable=False),
        sa.Column("updated_at", _TZ, nullable=False),
    )
    op.create_index("ix_chats_user_created", "chats", ["user_id", sa.text("created_at DESC")])
    op.create_index("ix_chats_retention", "chats", ["updated_at"])
    op.create_table(
        "messages",
        sa.Column("id", _ID, primary_key=True),
        sa.Column("chat_id", _ID, sa.ForeignKey("chats.id", ondelete="CASCADE"), nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("content", sa.Text),
        sa.Column("tool_calls", _JSON),
        sa.Column("tool_call_id", sa.String(255)),
        sa.Column("created_at", _TZ, nullable=False),
        sa.UniqueConstraint("chat_id", "position", name="uq_messages_chat_id_position"),
    )
    op.add_column("executions", sa.Column("prompt_tokens", sa.BigInteger))
    op.add_column("executions", sa.Column("completion_tokens", sa.BigInteger))
    op.add_column("executions", sa.Column("tool_call_id", sa.String(255)))
    op.create_index("ix_executions_chat", "executions", ["chat_id"])


def downgrade() -> None:
    op.drop_index("ix_executions_chat", table_name="executions")
    op.drop_column("executions", "tool_call_id")
    op.drop_column("executions", "completion_tokens")
    op.drop_column("executions", "prompt_tokens")
    op.drop_table("messages")
    op.drop_index("ix_chats_retention", table_name="chats")
    op.drop_index("ix_chats_user_created", table_name="chats")
    op.drop_table("chats")
    op.drop_table("agent_versions")
    op.drop_index("uq_agents_live_name", table_name="agents")
    op.drop_table("agents")
    op.drop_table("llm_providers")
