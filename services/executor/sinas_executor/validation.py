"""JSON Schema checks of a function's input before a run and its output after."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import jsonschema
from jsonschema.exceptions import best_match
from jsonschema.protocols import Validator

from sinas_common.jsoncodec import dump_json, load_json


class ValidationFailed(Exception):
    """The value does not match its schema; the message names the path."""


@lru_cache(maxsize=512)
def _validator(schema_json: bytes) -> Validator:
    schema = load_json(schema_json, empty={})
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    validator: Validator = cls(schema, format_checker=cls.FORMAT_CHECKER)
    return validator


def _path(error: jsonschema.ValidationError) -> str:
    parts = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    return parts.lstrip(".") or "(root)"


def validate(value: Any, schema: Any) -> None:
    """Raises ValidationFailed when `value` breaks `schema` (an empty schema accepts all)."""
    if schema is None or schema == {}:
        return
    try:
        validator = _validator(dump_json(schema))
    except jsonschema.SchemaError as exc:
        raise ValidationFailed(f"invalid schema: {exc.message}") from exc
    error = best_match(validator.iter_errors(value))
    if error is not None:
        raise ValidationFailed(f"{_path(error)}: {error.message}")
