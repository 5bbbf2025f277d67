"""Identity endpoints and the health check."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx

from sinas_common.timeconv import to_timestamp
from sinas_gateway.scheduler_client import ANONYMOUS
from sinas_gateway.testing import RecordingSchedulerClient
from sinas_proto.scheduler.v1 import scheduler_pb2 as pb

JWKS = b'{"keys":[{"kty":"OKP","crv":"Ed25519","x":"abc","kid":"k1","alg":"EdDSA","use":"sig"}]}'


async def test_me(client: httpx.AsyncClient, scheduler: RecordingSchedulerClient) -> None:
    user = pb.User(
        id="u-1",
        email="ada@example.com",
        roles=["Users"],
        created_at=to_timestamp(datetime(2025, 1, 1, tzinfo=UTC)),
    )
    scheduler.script("get_me", pb.GetMeResponse(user=user))

    response = await client.get("/auth/me")

    assert response.status_code == 200
    assert response.json() == {
        "id": "u-1",
        "email": "ada@example.com",
        "roles": ["Users"],
        "created_at": "2025-01-01T00:00:00Z",
        "last_login_at": None,
    }
    assert scheduler.calls[0].caller.authorization == "Bearer test-token"


async def test_jwks_is_served_without_forwarding_credentials(
    client: httpx.AsyncClient, scheduler: RecordingSchedulerClient
) -> None:
    scheduler.script("get_jwks", pb.GetJwksResponse(jwks_json=JWKS))

    response = await client.get("/.well-known/jwks.json")

    assert response.status_code == 200
    assert response.json()["keys"][0]["kid"] == "k1"
    assert scheduler.calls[0].caller == ANONYMOUS


async def test_health_follows_the_scheduler(
    client: httpx.AsyncClient, scheduler: RecordingSchedulerClient
) -> None:
    healthy = await client.get("/health")
    scheduler.serving = False
    unhealthy = await client.get("/health")

    assert healthy.status_code == 200
    assert healthy.json() == {"status": "ok"}
    assert unhealthy.status_code == 503
    assert unhealthy.json()["reason"] == "unavailable"
