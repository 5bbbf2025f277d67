"""callback delivery: claim and attempt times, the terminal-event outbox

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_OUTBOX_WHERE = (
    "event_published_at IS NULL AND callback_status IS NOT NULL"
    " AND status IN ('COMPLETED', 'FAILED', 'CANCELLED')"
)


def upgrade() -> None:
    op.add_column("executions", sa.Column("callback_claimed_at", sa.DateTime(timezone=True)))
    op.add_column("executions", sa.Column("callback_attempted_at", sa.DateTime(timezone=True)))
    op.add_column("executions", sa.Column("event_published_at", sa.DateTime(timezone=True)))
    op.create_index(
        "ix_executions_event_outbox",
        "executions",
        ["completed_at"],
        postgresql_where=sa.text(_OUTBOX_WHERE),
    )
    op.create_index(
        "ix_executions_callback_in_flight",
        "executions",
        ["callback_claimed_at"],
        postgresql_where=sa.text("callback_status = 'in_flight'"),
    )


def downgrade() -> None:
    op.drop_index("ix_executions_callback_in_flight", table_name="executions")
    op.drop_index("ix_executions_event_outbox", table_name="executions")
    op.drop_column("executions", "event_published_at")
    op.drop_column("executions", "callback_attempted_at")
    op.drop_column("executions", "callback_claimed_at")
