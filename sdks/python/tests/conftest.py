"""SDK test fixtures: a running stack (from the sinas_devstack plugin), its functions and users."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from sinas_devstack.stack import Stack

ECHO_CODE = """
def handler(input_data, context):
    if input_data.get("fail"):
        raise ValueError("asked to fail")
    return {"n": input_data["n"], "batch_id": context["batch_id"]}
"""
ECHO_SCHEMA = {
    "type": "object",
    "properties": {"n": {"type": "integer"}, "fail": {"type": "boolean"}},
    "required": ["n"],
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Function:
    namespace: str
    name: str


@dataclass(frozen=True, slots=True, kw_only=True)
class User:
    email: str
    api_key: str


FunctionFactory = Callable[..., Coroutine[Any, Any, Function]]
UserFactory = Callable[[list[str]], Coroutine[Any, Any, User]]


@pytest.fixture
def create_function(admin: httpx.AsyncClient) -> FunctionFactory:
    """Registers a function (an echo of `n` by default) under a namespace of its own."""

    async def create(code: str = ECHO_CODE, **overrides: Any) -> Function:
        body = {
            "namespace": f"sdk{uuid.uuid4().hex[:8]}",
            "name": "echo",
            "code": code,
            "input_schema": ECHO_SCHEMA,
            "output_schema": {"type": "object"},
        } | overrides
        reply = await admin.post("/api/v1/functions", json=body)
        assert reply.status_code == 201, reply.text
        return Function(namespace=body["namespace"], name=body["name"])

    return create


@pytest.fixture
def create_user(admin: httpx.AsyncClient) -> UserFactory:
    """A user holding a fresh role with these permissions, and an API key of theirs."""

    async def create(permissions: list[str]) -> User:
        tag = uuid.uuid4().hex[:10]
        reply = await admin.post(
            "/api/v1/roles", json={"name": f"r{tag}", "permissions": permissions}
        )
        assert reply.status_code == 201, reply.text
        email = f"u{tag}@example.com"
        reply = await admin.post("/api/v1/users", json={"email": email, "roles": [f"r{tag}"]})
        assert reply.status_code == 201, reply.text
        reply = await admin.post(
            "/api/v1/api-keys", json={"name": "sdk", "user_id": reply.json()["id"]}
        )
        assert reply.status_code == 201, reply.text
        return User(email=email, api_key=reply.json()["key"])

    return create


@pytest.fixture
async def function(create_function: FunctionFactory) -> AsyncIterator[Function]:
    yield await create_function()


@pytest.fixture
def admin_key(stack: Stack) -> str:
    return stack.config.admin_key
