"""api keys by user: an index for listing a user's keys, newest first

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_api_keys_user_created", "api_keys", ["user_id", sa.text("created_at DESC")])


def downgrade() -> None:
    op.drop_index("ix_api_keys_user_created", table_name="api_keys")
