"""PostgreSQL adapter of the agent registry: LLM providers and versioned agent definitions."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from sinas_common.errors import AlreadyExists, Conflict, NotFound
from sinas_common.ids import uuid7
from sinas_scheduler.agent_models import Agent, AgentSpec, LlmProvider, NewLlmProvider
from sinas_scheduler.models import Function
from sinas_scheduler.postgres_functions import function_from_row
from sinas_scheduler.tables import agent_versions, agents, functions, llm_providers

AGENT_NOT_FOUND = "Agent not found"

_LIVE = agents.c.deleted_at.is_(None)
_VERSION_JOIN = sa.and_(
    agent_versions.c.agent_id == agents.c.id, agent_versions.c.version == agents.c.version
)
_AGENT_COLUMNS: list[Any] = [
    agents,
    *(c for c in agent_versions.c if c.name not in {"agent_id", "version", "created_at"}),
]


class PostgresAgentStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def create_provider(self, new: NewLlmProvider) -> LlmProvider:
        try:
            async with self._engine.begin() as conn:
                row = (
                    (
                        await conn.execute(
                            llm_providers.insert()
                            .values(
                                id=new.id,
                                name=new.name,
                                base_url=new.base_url,
                                api_key_encrypted=new.api_key_encrypted,
                                default_model=new.default_model,
                                created_by=new.created_by,
                            )
                            .returning(llm_providers)
                        )
                    )
                    .mappings()
                    .one()
                )
        except IntegrityError as exc:
            raise AlreadyExists(f"LLM provider {new.name} already exists") from exc
        return _provider(row)

    async def get_provider(self, name: str) -> LlmProvider | None:
        async with self._engine.connect() as conn:
            row = (
                (await conn.execute(sa.select(llm_providers).where(llm_providers.c.name == name)))
                .mappings()
                .one_or_none()
            )
        return None if row is None else _provider(row)

    async def reseal_provider_keys(self, reseal: Callable[[str], str | None]) -> int:
        async with self._engine.begin() as conn:
            # FOR UPDATE: a replica starting at the same time waits, then sees the new values.
            rows = await conn.execute(
                sa.select(llm_providers.c.id, llm_providers.c.api_key_encrypted).with_for_update()
            )
            changed = 0
            for provider_id, stored in rows.all():
                new = reseal(stored)
                if new is None:
                    continue
                await conn.execute(
                    llm_providers.update()
                    .where(llm_providers.c.id == provider_id)
                    .values(api_key_encrypted=new)
                )
                changed += 1
            return changed

    async def create_agent(
        self, *, namespace: str, name: str, owner_user_id: str, spec: AgentSpec
    ) -> Agent:
        agent_id = uuid7()
        try:
            async with self._engine.begin() as conn:
                await conn.execute(
                    agents.insert().values(
                        id=agent_id,
                        namespace=namespace,
                        name=name,
                        owner_user_id=owner_user_id,
                        version=1,
                    )
                )
                await _insert_version(conn, agent_id, 1, spec, owner_user_id)
                return await _read_agent(conn, agents.c.id == agent_id)
        except IntegrityError as exc:
            raise AlreadyExists(f"Agent {namespace}/{name} already exists") from exc

    async def get_agent(self, namespace: str, name: str) -> Agent | None:
        async with self._engine.connect() as conn:
            try:
                return await _read_agent(
                    conn, sa.and_(agents.c.namespace == namespace, agents.c.name == name, _LIVE)
                )
            except NotFound:
                return None

    async def update_agent(
        self, *, agent_id: str, expected_version: int, spec: AgentSpec, updated_by: str
    ) -> Agent:
        """Writes version `expected_version + 1`; Conflict when another update came first."""
        async with self._engine.begin() as conn:
            version = expected_version + 1
            bumped = await conn.execute(
                agents.update()
                .where(agents.c.id == agent_id, agents.c.version == expected_version, _LIVE)
                .values(version=version, updated_at=sa.func.now())
            )
            if bumped.rowcount == 0:
                raise Conflict("The agent was changed or deleted meanwhile; try again")
            await _insert_version(conn, agent_id, version, spec, updated_by)
            return await _read_agent(conn, agents.c.id == agent_id)

    async def delete_agent(self, namespace: str, name: str) -> bool:
        async with self._engine.begin() as conn:
            result = await conn.execute(
                agents.update()
                .where(agents.c.namespace == namespace, agents.c.name == name, _LIVE)
                .values(deleted_at=sa.func.now())
            )
        return result.rowcount > 0

    async def live_functions(self, names: Sequence[tuple[str, str]]) -> list[Function]:
        """The live functions among `(namespace, name)` pairs, in one statement."""
        if not names:
            return []
        query = sa.select(functions).where(
            sa.tuple_(functions.c.namespace, functions.c.name).in_(list(names)),
            functions.c.deleted_at.is_(None),
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [function_from_row(row) for row in rows]


async def _insert_version(
    conn: AsyncConnection, agent_id: str, version: int, spec: AgentSpec, created_by: str
) -> None:
    await conn.execute(
        agent_versions.insert().values(
            agent_id=agent_id,
            version=version,
            created_by=created_by,
            description=spec.description,
            llm_provider=spec.llm_provider,
            model=spec.model,
            system_prompt=spec.system_prompt,
            initial_messages=spec.initial_messages,
            input_schema=spec.input_schema,
            temperature=spec.temperature,
            max_tokens=spec.max_tokens,
            enabled_functions=list(spec.enabled_functions),
            max_turns=spec.max_turns,
        )
    )


async def _read_agent(conn: AsyncConnection, where: Any) -> Agent:
    query = sa.select(*_AGENT_COLUMNS).select_from(agents.join(agent_versions, _VERSION_JOIN))
    row = (await conn.execute(query.where(where))).mappings().one_or_none()
    if row is None:
        raise NotFound(AGENT_NOT_FOUND)
    return agent_from_row(row)


def agent_spec_from_row(row: Any) -> AgentSpec:
    return AgentSpec(
        description=row["description"],
        llm_provider=row["llm_provider"],
        model=row["model"],
        system_prompt=row["system_prompt"],
        initial_messages=list(row["initial_messages"]),
        input_schema=row["input_schema"],
        temperature=row["temperature"],
        max_tokens=row["max_tokens"],
        enabled_functions=tuple(row["enabled_functions"]),
        max_turns=row["max_turns"],
    )


def agent_from_row(row: Any) -> Agent:
    return Agent(
        id=row["id"],
        namespace=row["namespace"],
        name=row["name"],
        owner_user_id=row["owner_user_id"],
        spec=agent_spec_from_row(row),
        version=row["version"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _provider(row: Any) -> LlmProvider:
    return LlmProvider(
        id=row["id"],
        name=row["name"],
        base_url=row["base_url"],
        default_model=row["default_model"],
        created_at=row["created_at"],
    )
