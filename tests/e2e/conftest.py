"""End-to-end fixtures: the real services as processes, driven over HTTP."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from sinas_devstack.stack import Stack, StackConfig

from .helpers import FunctionFactory, UserFactory, make_function_factory, make_user_factory


def _new_database(admin_url: str) -> str:
    name = f"e2e_{uuid.uuid4().hex[:12]}"
    libpq = admin_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(libpq, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    head, _, query = admin_url.partition("?")
    return f"{head.rsplit('/', 1)[0]}/{name}?{query}"


StackFactory = Callable[..., Stack]


@pytest.fixture(scope="session")
def stack_factory(
    postgres_admin_url: str, nats_url: str, scratch_root: Path
) -> Iterator[StackFactory]:
    """Builds stacks on fresh databases and stream prefixes; stops them all at the end."""
    built: list[Stack] = []

    def build(**extra_env: str) -> Stack:
        tag = uuid.uuid4().hex[:10]
        stack = Stack(
            StackConfig(
                database_url=_new_database(postgres_admin_url),
                nats_url=nats_url,
                log_dir=scratch_root / f"logs-{tag}",
                admin_key="sk-" + secrets.token_urlsafe(32),
                nats_stream_prefix=f"E{tag.upper()}",
                extra_env=extra_env,
            )
        )
        built.append(stack)
        return stack

    yield build
    for stack in built:
        stack.stop_all()


@pytest.fixture(scope="session")
def stack(stack_factory: StackFactory) -> Stack:
    """One shared, running system for tests that don't crash anything."""
    shared = stack_factory()
    shared.start_all()
    return shared


@pytest.fixture
def isolated_stack(stack_factory: StackFactory) -> Stack:
    """A system of this test's own, not started: the test starts and kills what it needs."""
    return stack_factory(EXECUTOR_ACK_WAIT_SECONDS="3")


def admin_client_for(stack: Stack) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=stack.gateway_url,
        headers={"X-API-Key": stack.config.admin_key},
        timeout=httpx.Timeout(60.0),
    )


@pytest.fixture
async def admin(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with admin_client_for(stack) as client:
        yield client


@pytest.fixture
def create_function(admin: httpx.AsyncClient) -> FunctionFactory:
    return make_function_factory(admin)


@pytest.fixture
async def create_user(admin: httpx.AsyncClient, stack: Stack) -> AsyncIterator[UserFactory]:
    opened: list[httpx.AsyncClient] = []
    yield make_user_factory(admin, stack.gateway_url, opened)
    for client in opened:
        await client.aclose()
