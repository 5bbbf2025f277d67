"""batches: one row per submitted batch, its summary callback and the batch-event outbox

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_TZ = sa.DateTime(timezone=True)
_OUTBOX_WHERE = "event_published_at IS NULL AND batch_callback_status IS NOT NULL"


def upgrade() -> None:
    op.create_table(
        "batches",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("user_id", sa.String(36), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("namespace", sa.String(255), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("total", sa.Integer, nullable=False),
        sa.Column("status", sa.String(20)),
        sa.Column("trigger_id_prefix", sa.String(255)),
        sa.Column("delay_seconds", sa.Integer, nullable=False, server_default="0"),
        sa.Column("callback_url", sa.Text),
        sa.Column("batch_callback_url", sa.Text),
        sa.Column("batch_callback_status", sa.String(20)),
        sa.Column("batch_callback_response_code", sa.Integer),
        sa.Column("batch_callback_error", sa.Text),
        sa.Column("batch_callback_claimed_at", _TZ),
        sa.Column("batch_callback_attempted_at", _TZ),
        sa.Column("event_published_at", _TZ),
        sa.Column("created_at", _TZ, nullable=False),
        sa.Column("finished_at", _TZ),
        sa.Column("cancelled_at", _TZ),
        sa.CheckConstraint(
            "status IS NULL OR status IN ('completed', 'partial', 'failed', 'cancelled')",
            name=op.f("ck_batches_status"),
        ),
        sa.PrimaryKeyConstraint("id", name="pk_batches"),
    )
    op.create_index("ix_batches_user_created", "batches", ["user_id", sa.text("created_at DESC")])
    op.create_index("ix_batches_created", "batches", [sa.text("created_at DESC")])
    op.create_index(
        "ix_batches_event_outbox",
        "batches",
        ["finished_at"],
        postgresql_where=sa.text(_OUTBOX_WHERE),
    )
    op.create_index(
        "ix_batches_callback_in_flight",
        "batches",
        ["batch_callback_claimed_at"],
        postgresql_where=sa.text("batch_callback_status = 'in_flight'"),
    )


def downgrade() -> None:
    op.drop_table("batches")
