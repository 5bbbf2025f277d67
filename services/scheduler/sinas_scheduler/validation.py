"""Checks on function definitions and execution inputs, each failure a field violation."""

from __future__ import annotations

import ast
import re
from typing import Any

from sinas_common.errors import FieldViolation, InvalidArgument, SchemaViolation
from sinas_common.json_schema import schema_problem, violations
from sinas_common.jsoncodec import load_json
from sinas_scheduler.models import FunctionSpec

IDENTIFIER = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
MAX_IDENTIFIER_LENGTH = 255
MAX_TRIGGER_ID_LENGTH = 255
MAX_DELAY_SECONDS = 31_536_000


def identifier_violations(namespace: str, name: str) -> list[FieldViolation]:
    found: list[FieldViolation] = []
    for field, value in (("namespace", namespace), ("name", name)):
        if len(value) > MAX_IDENTIFIER_LENGTH or not IDENTIFIER.match(value):
            found.append(
                FieldViolation(
                    field=field,
                    description=(
                        "must match ^[a-zA-Z_][a-zA-Z0-9_]*$ and be at most "
                        f"{MAX_IDENTIFIER_LENGTH} characters"
                    ),
                )
            )
    return found


def code_violations(code: str) -> list[FieldViolation]:
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError) as exc:
        return [FieldViolation(field="code", description=f"code does not parse: {exc}")]
    has_handler = any(
        isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == "handler"
        for node in tree.body
    )
    if not has_handler:
        return [
            FieldViolation(
                field="code", description="code must define a top-level function named handler"
            )
        ]
    return []


def schema_violations(field: str, schema: Any) -> list[FieldViolation]:
    problem = schema_problem(schema)
    return [] if problem is None else [FieldViolation(field=field, description=problem)]


def timeout_violations(timeout_seconds: int, max_seconds: int) -> list[FieldViolation]:
    if 1 <= timeout_seconds <= max_seconds:
        return []
    return [
        FieldViolation(field="timeout", description=f"must be between 1 and {max_seconds} seconds")
    ]


def check_function(
    *, namespace: str, name: str, spec: FunctionSpec, max_timeout_seconds: int
) -> None:
    """Raises SchemaViolation listing every problem of a function definition."""
    violations = [
        *identifier_violations(namespace, name),
        *code_violations(spec.code),
        *schema_violations("input_schema", spec.input_schema),
        *schema_violations("output_schema", spec.output_schema),
        *timeout_violations(spec.timeout_seconds, max_timeout_seconds),
    ]
    if violations:
        raise SchemaViolation("Invalid function definition", violations=violations)


def parse_json_field(field: str, raw: bytes, *, empty: Any) -> Any:
    """Decodes JSON bytes from a request; malformed JSON is a violation of `field`."""
    try:
        return load_json(raw, empty=empty)
    except (ValueError, RecursionError) as exc:
        raise SchemaViolation(
            f"{field} is not valid JSON",
            violations=[FieldViolation(field=field, description=f"invalid JSON: {exc}")],
        ) from exc


def input_violations(schema: Any, value: Any, *, root: str = "input") -> list[FieldViolation]:
    """Every way `value` breaks `schema`, each with a path such as `input.items[2].name`."""
    if not isinstance(value, dict):
        return [FieldViolation(field=root, description="must be a JSON object")]
    return violations(schema, value, root=root)


def check_trigger_id(trigger_id: str) -> None:
    if len(trigger_id) > MAX_TRIGGER_ID_LENGTH:
        raise InvalidArgument(
            f"trigger_id must be at most {MAX_TRIGGER_ID_LENGTH} characters",
            violations=[
                FieldViolation(
                    field="trigger_id",
                    description=f"at most {MAX_TRIGGER_ID_LENGTH} characters",
                )
            ],
        )


def check_delay(delay_seconds: int) -> None:
    if not 0 <= delay_seconds <= MAX_DELAY_SECONDS:
        raise InvalidArgument(
            f"delay_seconds must be between 0 and {MAX_DELAY_SECONDS}",
            violations=[
                FieldViolation(
                    field="delay_seconds", description=f"must be between 0 and {MAX_DELAY_SECONDS}"
                )
            ],
        )
