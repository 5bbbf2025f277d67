"""PostgreSQL adapter of the function registry port; every update writes a new version row."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from sinas_common.errors import AlreadyExists, FunctionNotFound
from sinas_common.ids import uuid7
from sinas_scheduler.models import Function, FunctionChanges, FunctionSpec, FunctionVersion
from sinas_scheduler.pg import HotPool
from sinas_scheduler.tables import function_versions, functions

_LIVE = functions.c.deleted_at.is_(None)

_LIVE_FUNCTION_BY_NAME = """
SELECT * FROM functions
WHERE namespace = %(namespace)s AND name = %(name)s AND deleted_at IS NULL
"""

_VERSIONS = """
SELECT v.function_id, v.version, f.namespace, f.name, v.code, v.input_schema, v.output_schema,
       v.timeout_seconds
FROM unnest(%(ids)s::text[], %(versions)s::int[]) AS k(function_id, version)
JOIN function_versions AS v ON v.function_id = k.function_id AND v.version = k.version
JOIN functions AS f ON f.id = v.function_id
"""

# Versions never change once written: claims keep the recent ones instead of asking again.
VERSION_CACHE_SIZE = 1024


class PostgresFunctionStore:
    def __init__(self, engine: AsyncEngine, hot: HotPool) -> None:
        self._engine = engine
        # Every submit looks a function up and every claim reads versions: straight psycopg.
        self._hot = hot
        self._versions: OrderedDict[tuple[str, int], FunctionVersion] = OrderedDict()

    async def create_function(
        self, *, namespace: str, name: str, owner_user_id: str, spec: FunctionSpec
    ) -> Function:
        function_id = uuid7()
        try:
            async with self._engine.begin() as conn:
                row = (
                    (
                        await conn.execute(
                            functions.insert()
                            .values(
                                id=function_id,
                                namespace=namespace,
                                name=name,
                                owner_user_id=owner_user_id,
                                version=1,
                                **_spec_values(spec),
                            )
                            .returning(functions)
                        )
                    )
                    .mappings()
                    .one()
                )
                await _insert_version(conn, function_id, 1, spec, owner_user_id)
        except IntegrityError as exc:
            raise AlreadyExists(f"Function {namespace}/{name} already exists") from exc
        return _function(row)

    async def get_function(self, namespace: str, name: str) -> Function | None:
        async with self._hot.connection() as conn:
            cursor = await conn.execute(
                _LIVE_FUNCTION_BY_NAME, {"namespace": namespace, "name": name}
            )
            row = await cursor.fetchone()
        return None if row is None else _function(row)

    async def update_function(
        self,
        *,
        namespace: str,
        name: str,
        changes: FunctionChanges,
        check: Callable[[FunctionSpec], None],
        updated_by: str,
    ) -> Function:
        async with self._engine.begin() as conn:
            current = (
                (
                    await conn.execute(
                        sa.select(functions)
                        .where(functions.c.namespace == namespace, functions.c.name == name, _LIVE)
                        .with_for_update()
                    )
                )
                .mappings()
                .one_or_none()
            )
            if current is None:
                raise FunctionNotFound()
            spec = changes.apply(_function(current).spec)
            check(spec)
            version = int(current["version"]) + 1
            row = (
                (
                    await conn.execute(
                        functions.update()
                        .where(functions.c.id == current["id"])
                        .values(version=version, updated_at=sa.func.now(), **_spec_values(spec))
                        .returning(functions)
                    )
                )
                .mappings()
                .one()
            )
            await _insert_version(conn, current["id"], version, spec, updated_by)
        return _function(row)

    async def delete_function(self, namespace: str, name: str) -> bool:
        async with self._engine.begin() as conn:
            result = await conn.execute(
                functions.update()
                .where(functions.c.namespace == namespace, functions.c.name == name, _LIVE)
                .values(deleted_at=sa.func.now())
            )
        return result.rowcount > 0

    async def function_versions(self, keys: Sequence[tuple[str, int]]) -> list[FunctionVersion]:
        missing = [key for key in keys if key not in self._versions]
        if missing:
            params = {"ids": [k[0] for k in missing], "versions": [k[1] for k in missing]}
            async with self._hot.connection() as conn:
                rows = await (await conn.execute(_VERSIONS, params)).fetchall()
            for row in rows:
                self._remember(_version(row))
        found = []
        for key in keys:
            version = self._versions.get(key)
            if version is not None:
                self._versions.move_to_end(key)
                found.append(version)
        return found

    def _remember(self, version: FunctionVersion) -> None:
        self._versions[(version.function_id, version.version)] = version
        while len(self._versions) > VERSION_CACHE_SIZE:
            self._versions.popitem(last=False)


def _version(row: Any) -> FunctionVersion:
    return FunctionVersion(
        function_id=row["function_id"],
        version=row["version"],
        namespace=row["namespace"],
        name=row["name"],
        code=row["code"],
        input_schema=row["input_schema"],
        output_schema=row["output_schema"],
        timeout_seconds=row["timeout_seconds"],
    )


def _spec_values(spec: FunctionSpec) -> dict[str, Any]:
    return {
        "description": spec.description,
        "code": spec.code,
        "input_schema": spec.input_schema,
        "output_schema": spec.output_schema,
        "timeout_seconds": spec.timeout_seconds,
        "requires_approval": spec.requires_approval,
    }


async def _insert_version(
    conn: AsyncConnection, function_id: str, version: int, spec: FunctionSpec, created_by: str
) -> None:
    await conn.execute(
        function_versions.insert().values(
            function_id=function_id, version=version, created_by=created_by, **_spec_values(spec)
        )
    )


def _function(row: Any) -> Function:
    return Function(
        id=row["id"],
        namespace=row["namespace"],
        name=row["name"],
        owner_user_id=row["owner_user_id"],
        spec=FunctionSpec(
            description=row["description"],
            code=row["code"],
            input_schema=row["input_schema"],
            output_schema=row["output_schema"],
            timeout_seconds=row["timeout_seconds"],
            requires_approval=row["requires_approval"],
        ),
        version=row["version"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def function_from_row(row: Any) -> Function:
    """A function from a `functions` row (other adapters read the registry too)."""
    return _function(row)
