"""JSON Schema checks shared by submit time (scheduler) and run time (executor), so both agree.

A schema picks its draft with `$schema`, Draft 2020-12 otherwise; `format` is asserted.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any

from jsonschema import Draft202012Validator, ValidationError, validators
from jsonschema.exceptions import SchemaError
from jsonschema.protocols import Validator

from sinas_common.errors import FieldViolation
from sinas_common.jsoncodec import dump_json, load_json


def _validator_class(schema: dict[str, Any]) -> type[Validator]:
    found: type[Validator] = validators.validator_for(schema, default=Draft202012Validator)
    return found


def schema_problem(schema: Any) -> str | None:
    """Why `schema` is not a usable JSON Schema object, or None when it is."""
    if not isinstance(schema, dict):
        return "must be a JSON object"
    return _schema_problem(dump_json(schema))


@lru_cache(maxsize=1024)
def _schema_problem(schema_json: bytes) -> str | None:
    # Checking a schema against its meta-schema costs far more than a run of a small
    # function: every run of one function version checks the same schema, so once is enough.
    schema = load_json(schema_json)
    try:
        _validator_class(schema).check_schema(schema)
    except SchemaError as exc:
        return f"not a valid JSON Schema: {exc.message}"
    return None


@lru_cache(maxsize=1024)
def _validator(schema_json: bytes) -> Validator:
    # Keyed by the schema's JSON so that a stream of runs of one function builds one validator.
    schema = load_json(schema_json)
    cls = _validator_class(schema)
    validator: Validator = cls(schema, format_checker=cls.FORMAT_CHECKER)
    return validator


def join_path(root: str, parts: Iterable[str | int]) -> str:
    """`input` + ["items", 2, "name"] -> `input.items[2].name`."""
    text = root
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


def _error_path(root: str, error: ValidationError) -> str:
    path: list[str | int] = list(error.absolute_path)
    # `required` reports at the parent object; point at the missing property itself.
    if error.validator == "required" and isinstance(error.validator_value, Sequence):
        for prop in error.validator_value:
            if isinstance(prop, str) and error.message.startswith(repr(prop)):
                path.append(prop)
                break
    return join_path(root, path)


def compiled_validator(schema: dict[str, Any]) -> Validator:
    """The validator of a schema that `schema_problem` accepts, built once per distinct schema.

    Checking many values against one schema, keep it: getting it costs encoding the schema.
    """
    return _validator(dump_json(schema))


def validator_violations(validator: Validator, value: Any, *, root: str) -> list[FieldViolation]:
    """Every way `value` breaks the validator's schema, each with a path under `root`, in path
    order."""
    errors = sorted(validator.iter_errors(value), key=lambda e: [str(p) for p in e.absolute_path])
    return [
        FieldViolation(field=_error_path(root, error), description=error.message)
        for error in errors
    ]


def violations(schema: Any, value: Any, *, root: str) -> list[FieldViolation]:
    """Every way `value` breaks `schema`, each with a path under `root`, in path order.

    A missing or empty schema accepts everything; so does one that is not an object (such
    schemas are refused when a function is defined).
    """
    if not isinstance(schema, dict) or not schema:
        return []
    return validator_violations(compiled_validator(schema), value, root=root)
