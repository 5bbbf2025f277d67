"""Function definition and input checks, each failure naming its field."""

from __future__ import annotations

from typing import Any

import pytest

from sinas_common.errors import (
    InvalidArgument,
    MissingCredentials,
    SchemaViolation,
    Unauthenticated,
)
from sinas_scheduler.identity import credential_from_metadata, hash_api_key, key_prefix, new_api_key
from sinas_scheduler.models import (
    ExecutionStatus,
    FunctionChanges,
    FunctionSpec,
    can_transition,
    worker_lost_error,
)
from sinas_scheduler.validation import (
    check_delay,
    check_function,
    check_trigger_id,
    input_violations,
    parse_json_field,
)

SPEC = FunctionSpec(
    description="",
    code="def handler(input_data, context):\n    return input_data\n",
    input_schema={},
    output_schema={},
    timeout_seconds=10,
    requires_approval=False,
)


def fields_of(**overrides: Any) -> list[str]:
    spec_fields = {k: overrides.pop(k) for k in list(overrides) if hasattr(SPEC, k)}
    spec = FunctionChanges(**spec_fields).apply(SPEC) if spec_fields else SPEC
    try:
        check_function(
            namespace=overrides.get("namespace", "ns"),
            name=overrides.get("name", "fn"),
            spec=spec,
            max_timeout_seconds=100,
        )
    except SchemaViolation as exc:
        return [v.field for v in exc.violations]
    return []


def test_a_good_definition_passes() -> None:
    assert fields_of() == []
    assert fields_of(code="async def handler(i, c):\n    return 1\n") == []
    assert fields_of(input_schema={"$schema": "http://json-schema.org/draft-07/schema#"}) == []


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"namespace": "9x"}, ["namespace"]),
        ({"name": "a b"}, ["name"]),
        ({"name": "_" * 256}, ["name"]),
        ({"code": "def handler(:"}, ["code"]),
        ({"code": "handler = lambda i, c: 1\n"}, ["code"]),
        ({"code": "if True:\n    def handler(i, c):\n        pass\n"}, ["code"]),
        ({"input_schema": []}, ["input_schema"]),
        ({"output_schema": {"type": 5}}, ["output_schema"]),
        (
            {
                "input_schema": {
                    "$schema": "http://json-schema.org/draft-04/schema#",
                    "type": "object",
                    "minProperties": -1,
                }
            },
            ["input_schema"],
        ),
        ({"timeout_seconds": 0}, ["timeout"]),
        ({"timeout_seconds": 101}, ["timeout"]),
        ({"namespace": "", "timeout_seconds": 0}, ["namespace", "timeout"]),
    ],
)
def test_each_problem_names_its_field(overrides: dict[str, Any], expected: list[str]) -> None:
    assert fields_of(**overrides) == expected


def test_input_paths() -> None:
    schema = {
        "type": "object",
        "properties": {
            "items": {"type": "array", "items": {"type": "object", "required": ["name"]}},
            "meta": {"type": "object", "properties": {"n": {"type": "integer"}}},
        },
        "required": ["items", "other"],
        "additionalProperties": False,
    }
    found = input_violations(schema, {"items": [{"name": 1}, {}], "meta": {"n": "x"}, "z": 1})
    assert sorted(v.field for v in found) == [
        "input",
        "input.items[1].name",
        "input.meta.n",
        "input.other",
    ]
    assert input_violations(schema, "text")[0].field == "input"
    assert input_violations({}, {"anything": [1]}) == []


def test_parse_json_field() -> None:
    assert parse_json_field("input", b"", empty={}) == {}
    assert parse_json_field("input", b'{"n": 1152921504606846976}', empty={}) == {"n": 2**60}
    with pytest.raises(SchemaViolation) as caught:
        parse_json_field("input", b"{", empty={})
    assert caught.value.violations[0].field == "input"


def test_trigger_and_delay_limits() -> None:
    check_trigger_id("t" * 255)
    check_delay(0)
    check_delay(31_536_000)
    with pytest.raises(InvalidArgument):
        check_trigger_id("t" * 256)
    for bad in (-1, 31_536_001):
        with pytest.raises(InvalidArgument):
            check_delay(bad)


def test_credentials_from_metadata() -> None:
    assert credential_from_metadata([("authorization", "Bearer abc")]) == "abc"
    assert credential_from_metadata([("authorization", "bearer  abc ")]) == "abc"
    assert credential_from_metadata([("authorization", "Bearer a"), ("x-api-key", "k")]) == "k"
    with pytest.raises(MissingCredentials):
        credential_from_metadata([("other", "x")])
    for bad in ("Basic abc", "Bearer", "abc"):
        with pytest.raises(Unauthenticated):
            credential_from_metadata([("authorization", bad)])


def test_api_keys() -> None:
    key = new_api_key()
    assert key.startswith("sk-") and len(key) > 40 and key != new_api_key()
    assert len(hash_api_key(key)) == 64 and key_prefix(key) == key[:8]


def test_status_transitions() -> None:
    for terminal in (ExecutionStatus.COMPLETED, ExecutionStatus.FAILED, ExecutionStatus.CANCELLED):
        assert terminal.is_terminal
        assert not any(can_transition(terminal, target) for target in ExecutionStatus)
    assert can_transition(ExecutionStatus.PENDING, ExecutionStatus.RUNNING)
    assert can_transition(ExecutionStatus.RUNNING, ExecutionStatus.COMPLETED)
    assert not can_transition(ExecutionStatus.PENDING, ExecutionStatus.COMPLETED)
    assert not ExecutionStatus.RUNNING.is_terminal


def test_worker_lost_error() -> None:
    assert worker_lost_error(3) == (
        "worker lost: the execution's worker stopped before it finished (3 attempts)"
    )


def test_function_changes_keep_unset_fields() -> None:
    changed = FunctionChanges(timeout_seconds=5, requires_approval=True).apply(SPEC)
    assert (changed.timeout_seconds, changed.requires_approval, changed.code) == (
        5,
        True,
        SPEC.code,
    )
