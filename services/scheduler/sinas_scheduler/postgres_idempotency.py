"""PostgreSQL adapter for idempotency keys: the read before a submit, and the reservation that
runs inside the submit's own transaction."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from sinas_common.jsoncodec import dump_json
from sinas_scheduler.idempotency import IdempotencyReservation, StoredResponse
from sinas_scheduler.tables import JSON_DATA

_FIND = sa.text(
    """
SELECT fingerprint, response FROM idempotency_keys
WHERE user_id = :user_id AND key = :key
  AND created_at > now() - make_interval(secs => :ttl_seconds)
"""
).columns(response=JSON_DATA)

# A key past its lifetime is taken over in place, so an expired row the retention loop has not
# deleted yet never blocks a new request. When the row is live, nothing is written and nothing
# returned; an uncommitted reservation of the same key makes this wait for its outcome.
_RESERVE = sa.text(
    """
INSERT INTO idempotency_keys (user_id, key, fingerprint, response, created_at)
VALUES (:user_id, :key, :fingerprint, CAST(:response AS json), now())
ON CONFLICT (user_id, key) DO UPDATE
SET fingerprint = EXCLUDED.fingerprint, response = EXCLUDED.response, created_at = now()
WHERE idempotency_keys.created_at <= now() - make_interval(secs => :ttl_seconds)
RETURNING 1
"""
)

# Read committed: this statement's snapshot sees the row whose conflict stopped the insert.
_HELD = sa.text(
    "SELECT fingerprint, response FROM idempotency_keys WHERE user_id = :user_id AND key = :key"
).columns(response=JSON_DATA)


class PostgresIdempotencyStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def find_response(
        self, *, user_id: str, key: str, ttl_seconds: int
    ) -> StoredResponse | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    _FIND, {"user_id": user_id, "key": key, "ttl_seconds": ttl_seconds}
                )
            ).one_or_none()
        return None if row is None else StoredResponse(fingerprint=row[0], response=row[1])


async def reserve_idempotency_key(
    conn: AsyncConnection, reservation: IdempotencyReservation
) -> StoredResponse | None:
    """Reserves the key in the caller's transaction: None when this request now holds it,
    else what the request holding it stored (the caller then stores nothing and rolls back)."""
    params = {
        "user_id": reservation.user_id,
        "key": reservation.key,
        "fingerprint": reservation.fingerprint,
        "response": dump_json(reservation.response).decode(),
        "ttl_seconds": reservation.ttl_seconds,
    }
    if (await conn.execute(_RESERVE, params)).first() is not None:
        return None
    row = (
        await conn.execute(_HELD, {"user_id": reservation.user_id, "key": reservation.key})
    ).one()
    return StoredResponse(fingerprint=row[0], response=row[1])
