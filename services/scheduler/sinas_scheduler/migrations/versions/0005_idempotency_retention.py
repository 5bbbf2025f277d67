"""idempotency keys, and the indexes the retention sweep reads

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_FINISHED = "status IN ('COMPLETED', 'FAILED', 'CANCELLED')"


def upgrade() -> None:
    op.create_table(
        "idempotency_keys",
        sa.Column(
            "user_id",
            sa.String(36),
            sa.ForeignKey("users.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("response", postgresql.JSON(none_as_null=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("user_id", "key", name="pk_idempotency_keys"),
    )
    op.create_index("ix_idempotency_keys_created", "idempotency_keys", ["created_at"])
    # The retention sweep reads only finished rows, oldest first.
    op.create_index(
        "ix_executions_retention",
        "executions",
        [sa.text("COALESCE(completed_at, created_at)")],
        postgresql_where=sa.text(_FINISHED),
    )
    op.create_index(
        "ix_batches_retention",
        "batches",
        ["finished_at"],
        postgresql_where=sa.text("finished_at IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_batches_retention", table_name="batches")
    op.drop_index("ix_executions_retention", table_name="executions")
    op.drop_table("idempotency_keys")
