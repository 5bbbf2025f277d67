"""The one way a service connects to NATS: as its own user, with inboxes only it may read."""

from __future__ import annotations

from typing import Any

import nats
from nats.aio.client import Client

from sinas_common.settings import NatsSettings

DEFAULT_INBOX_PREFIX = "_INBOX"


def inbox_prefix(user: str) -> str:
    """Where replies to this user's requests (JetStream API answers, publish acks, fetched
    messages) arrive. Per user, so the server can let each user subscribe to its own
    replies only: a shared `_INBOX.>` would let any service read every other's."""
    return f"{DEFAULT_INBOX_PREFIX}.{user}" if user else DEFAULT_INBOX_PREFIX


async def connect_nats(settings: NatsSettings, *, name: str, **options: Any) -> Client:
    """Connects to every server in NATS_URL as NATS_USER; `options` go to `nats.connect`
    (its reconnect defaults stay unless overridden)."""
    credentials: dict[str, Any] = {}
    if settings.user:
        credentials = {
            "user": settings.user,
            "password": settings.password.get_secret_value(),
        }
    return await nats.connect(
        servers=settings.servers,
        name=name,
        inbox_prefix=inbox_prefix(settings.user),
        **credentials,
        **options,
    )
