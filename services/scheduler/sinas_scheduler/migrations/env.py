"""Alembic environment: runs migrations on the URL the scheduler was configured with."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from sinas_scheduler.tables import metadata

config = context.config
url = config.get_main_option("sqlalchemy.url")
if not url:
    raise RuntimeError("sqlalchemy.url is not set for the migration")

engine = create_engine(url, poolclass=pool.NullPool)
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=metadata, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
