"""interactive input: prompt, deadline, round and the resumed answer of paused executions

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("executions", sa.Column("input_prompt", sa.Text))
    op.add_column("executions", sa.Column("input_deadline_at", sa.DateTime(timezone=True)))
    op.add_column(
        "executions",
        sa.Column("input_round", sa.Integer, nullable=False, server_default="0"),
    )
    op.add_column("executions", sa.Column("resumed_input", postgresql.JSON(none_as_null=True)))
    op.add_column("executions", sa.Column("resumed_at", sa.DateTime(timezone=True)))
    op.create_index(
        "ix_executions_input_deadline",
        "executions",
        ["input_deadline_at"],
        postgresql_where=sa.text("status = 'AWAITING_INPUT'"),
    )


def downgrade() -> None:
    op.drop_index("ix_executions_input_deadline", table_name="executions")
    op.drop_column("executions", "resumed_at")
    op.drop_column("executions", "resumed_input")
    op.drop_column("executions", "input_round")
    op.drop_column("executions", "input_deadline_at")
    op.drop_column("executions", "input_prompt")
