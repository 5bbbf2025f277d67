"""JSON Schema checks of a function's input before a run and its output after."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jsonschema.protocols import Validator

from sinas_common.json_schema import compiled_validator, schema_problem, validator_violations
from sinas_executor.models import FunctionVersion


class ValidationFailed(Exception):
    """The value does not match its schema; the message names the path."""


class SchemaCheck:
    """One schema made ready once (an empty schema accepts all), to check many values."""

    __slots__ = ("_problem", "_validator")

    def __init__(self, schema: Any) -> None:
        self._problem: str | None = None
        self._validator: Validator | None = None
        if schema is None or schema == {}:
            return
        self._problem = schema_problem(schema)
        if self._problem is None:
            self._validator = compiled_validator(schema)

    def validate(self, value: Any, *, root: str) -> None:
        """Raises ValidationFailed naming the first broken path."""
        if self._problem is not None:
            raise ValidationFailed(f"invalid schema: {self._problem}")
        if self._validator is None:
            return
        found = validator_violations(self._validator, value, root=root)
        if found:
            raise ValidationFailed(f"{found[0].field}: {found[0].description}")


@dataclass(frozen=True, slots=True)
class FunctionChecks:
    """A function version's input and output checks, made once for all the runs of a claim."""

    input: SchemaCheck
    output: SchemaCheck

    @classmethod
    def of(cls, function: FunctionVersion) -> FunctionChecks:
        return cls(
            input=SchemaCheck(function.input_schema), output=SchemaCheck(function.output_schema)
        )
