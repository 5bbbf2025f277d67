"""Appending chat messages: every chat's new messages in one statement, after its existing ones."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg import AsyncConnection

from sinas_common.ids import uuid7
from sinas_common.jsoncodec import dump_json
from sinas_scheduler.agent_models import ChatMessage

# Positions continue after the chat's last message; the unique (chat_id, position) makes a
# concurrent append to the same chat fail instead of interleaving.
_APPEND = """
WITH m AS (
    SELECT * FROM unnest(
        %(ids)s::text[], %(chat_ids)s::text[], %(offsets)s::int[],
        %(roles)s::text[], %(contents)s::text[], %(tool_calls)s::text[],
        %(tool_call_ids)s::text[]
    ) AS m(id, chat_id, offset_in_chat, role, content, tool_calls, tool_call_id)
),
base AS (
    SELECT c.chat_id, COALESCE(max(x.position) + 1, 0) AS first
    FROM (SELECT DISTINCT chat_id FROM m) AS c
    LEFT JOIN messages AS x ON x.chat_id = c.chat_id
    GROUP BY c.chat_id
),
touched AS (
    UPDATE chats SET updated_at = now() WHERE id IN (SELECT chat_id FROM base)
)
INSERT INTO messages (id, chat_id, position, role, content, tool_calls, tool_call_id, created_at)
SELECT m.id, m.chat_id, base.first + m.offset_in_chat, m.role, m.content,
       CAST(m.tool_calls AS json), m.tool_call_id, clock_timestamp()
FROM m JOIN base ON base.chat_id = m.chat_id
ORDER BY m.chat_id, m.offset_in_chat
"""

_COLUMNS = ("ids", "chat_ids", "offsets", "roles", "contents", "tool_calls", "tool_call_ids")


async def append_messages(
    conn: AsyncConnection[Any], appended: Sequence[tuple[str, Sequence[ChatMessage]]]
) -> None:
    """Appends per chat its messages, in order, in the caller's transaction (on an engine
    connection, pass its `driver_connection`)."""
    params: dict[str, list[Any]] = {key: [] for key in _COLUMNS}
    for chat_id, added in appended:
        for offset, message in enumerate(added):
            params["ids"].append(uuid7())
            params["chat_ids"].append(chat_id)
            params["offsets"].append(offset)
            params["roles"].append(message.role)
            params["contents"].append(message.content)
            params["tool_calls"].append(
                None if message.tool_calls is None else dump_json(message.tool_calls).decode()
            )
            params["tool_call_ids"].append(message.tool_call_id)
    if params["ids"]:
        await conn.execute(_APPEND, params)
