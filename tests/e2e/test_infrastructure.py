"""The embedded servers the suite runs on: a migrated database per test, JetStream per session."""

from __future__ import annotations

import psycopg

from sinas_common.nats_connect import connect_nats
from sinas_common.settings import NatsSettings


def test_each_test_gets_a_migrated_database(database_url: str) -> None:
    libpq = database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(libpq) as conn:
        row = conn.execute("SELECT count(*) FROM executions").fetchone()
    assert row == (0,)


async def test_nats_has_jetstream(nats_settings: NatsSettings) -> None:
    client = await connect_nats(nats_settings, name="test-scheduler")
    try:
        info = await client.jetstream().account_info()
        assert info.limits is not None
    finally:
        await client.close()
