"""JSON Schema checks of a function's input before a run and its output after."""

from __future__ import annotations

from typing import Any

from sinas_common.json_schema import schema_problem, violations


class ValidationFailed(Exception):
    """The value does not match its schema; the message names the path."""


def validate(value: Any, schema: Any, *, root: str) -> None:
    """Raises ValidationFailed naming the first broken path (an empty schema accepts all)."""
    if schema is None or schema == {}:
        return
    problem = schema_problem(schema)
    if problem is not None:
        raise ValidationFailed(f"invalid schema: {problem}")
    found = violations(schema, value, root=root)
    if found:
        raise ValidationFailed(f"{found[0].field}: {found[0].description}")
