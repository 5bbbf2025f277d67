"""Small building blocks for end-to-end tests: function and user factories, polling."""

from __future__ import annotations

import asyncio
import textwrap
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

TERMINAL = {"COMPLETED", "FAILED", "CANCELLED"}

ECHO_CODE = """
def handler(input_data, context):
    return {"echo": input_data}
"""

OPEN_SCHEMA: dict[str, Any] = {"type": "object"}


@dataclass(frozen=True, slots=True)
class CreatedFunction:
    namespace: str
    name: str
    document: dict[str, Any]

    @property
    def async_path(self) -> str:
        return f"/functions/{self.namespace}/{self.name}/execute/async"

    @property
    def sync_path(self) -> str:
        return f"/functions/{self.namespace}/{self.name}/execute"


FunctionFactory = Callable[..., Awaitable[CreatedFunction]]


def make_function_factory(admin: httpx.AsyncClient) -> FunctionFactory:
    async def create(
        code: str = ECHO_CODE,
        *,
        namespace: str | None = None,
        name: str | None = None,
        input_schema: dict[str, Any] | None = None,
        output_schema: dict[str, Any] | None = None,
        timeout: int | None = None,
    ) -> CreatedFunction:
        namespace = namespace or f"ns_{uuid.uuid4().hex[:8]}"
        name = name or f"fn_{uuid.uuid4().hex[:8]}"
        body: dict[str, Any] = {
            "namespace": namespace,
            "name": name,
            "code": textwrap.dedent(code),
            "input_schema": input_schema or OPEN_SCHEMA,
            "output_schema": output_schema or OPEN_SCHEMA,
        }
        if timeout is not None:
            body["timeout"] = timeout
        reply = await admin.post("/api/v1/functions", json=body)
        assert reply.status_code == 201, reply.text
        return CreatedFunction(namespace, name, reply.json())

    return create


@dataclass(frozen=True, slots=True)
class CreatedUser:
    id: str
    email: str
    key: str
    client: httpx.AsyncClient


UserFactory = Callable[..., Awaitable[CreatedUser]]


def make_user_factory(
    admin: httpx.AsyncClient, base_url: str, opened: list[httpx.AsyncClient]
) -> UserFactory:
    """Users with one role of the given permissions; their clients are appended to `opened`."""

    async def create(permissions: list[str]) -> CreatedUser:
        role = f"role_{uuid.uuid4().hex[:8]}"
        reply = await admin.post("/api/v1/roles", json={"name": role, "permissions": permissions})
        assert reply.status_code == 201, reply.text
        email = f"user-{uuid.uuid4().hex[:8]}@example.com"
        reply = await admin.post("/api/v1/users", json={"email": email, "roles": [role]})
        assert reply.status_code == 201, reply.text
        user_id = reply.json()["id"]
        reply = await admin.post("/api/v1/api-keys", json={"name": "test", "user_id": user_id})
        assert reply.status_code == 201, reply.text
        key = reply.json()["key"]
        client = httpx.AsyncClient(
            base_url=base_url,
            headers={"Authorization": f"Bearer {key}"},
            timeout=httpx.Timeout(60.0),
        )
        opened.append(client)
        return CreatedUser(user_id, email, key, client)

    return create


async def wait_for_status(
    client: httpx.AsyncClient,
    execution_id: str,
    statuses: set[str] = TERMINAL,
    *,
    timeout: float = 60.0,
) -> dict[str, Any]:
    """Polls GET /executions/{id} until its status is one of `statuses`."""
    deadline = time.monotonic() + timeout
    document: dict[str, Any] = {}
    while time.monotonic() < deadline:
        reply = await client.get(f"/executions/{execution_id}")
        assert reply.status_code == 200, reply.text
        document = reply.json()
        if document["status"] in statuses:
            return document
        await asyncio.sleep(0.05)
    raise AssertionError(f"execution never reached {statuses}: {document}")


async def enqueue(client: httpx.AsyncClient, fn: CreatedFunction, **body: Any) -> str:
    body.setdefault("input", {})
    reply = await client.post(fn.async_path, json=body)
    assert reply.status_code == 202, reply.text
    assert reply.json()["status"] == "queued"
    return str(reply.json()["execution_id"])


async def run_once_as_new_user(
    admin: httpx.AsyncClient, gateway_url: str, code: str = ECHO_CODE, **body: Any
) -> dict[str, Any]:
    """`code` made a function by the admin, then enqueued once by a new ordinary user, who
    may only run functions and read their own executions: the execution as it ended."""
    fn = await make_function_factory(admin)(code)
    opened: list[httpx.AsyncClient] = []
    user = await make_user_factory(admin, gateway_url, opened)(
        ["sinas.functions/*/*.execute:own", "sinas.executions.read:own"]
    )
    try:
        return await wait_for_status(user.client, await enqueue(user.client, fn, **body))
    finally:
        for client in opened:
            await client.aclose()


def query_one(database_url: str, sql: str, *params: Any) -> tuple[Any, ...] | None:
    """One row straight from the system's database, to see what was (not) stored."""
    import psycopg

    libpq = database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(libpq) as conn:
        return conn.execute(sql, params).fetchone()


def count_executions(database_url: str) -> int:
    row = query_one(database_url, "SELECT count(*) FROM executions")
    assert row is not None
    return int(row[0])
