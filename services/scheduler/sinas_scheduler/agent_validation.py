"""Checks on agent definitions, and the rendering of a chat's opening transcript at submit."""

from __future__ import annotations

import re
from typing import Any

from sinas_common.errors import FieldViolation
from sinas_scheduler.agent_models import (
    INITIAL_MESSAGE_ROLES,
    MAX_AGENT_TURNS,
    ROLE_SYSTEM,
    ROLE_USER,
    AgentSpec,
    ChatMessage,
)
from sinas_scheduler.templates import render, template_violations
from sinas_scheduler.validation import identifier_violations, input_violations, schema_violations

MAX_TEMPERATURE = 2.0
_UNDEFINED = re.compile(r"^'([^']+)' is undefined$")


def split_function_name(value: str) -> tuple[str, str] | None:
    """`ns/name` as (ns, name), or None when it is not two valid identifiers."""
    namespace, slash, name = value.partition("/")
    if not slash or identifier_violations(namespace, name):
        return None
    return namespace, name


def agent_violations(*, namespace: str, name: str, spec: AgentSpec) -> list[FieldViolation]:
    """Every problem of a definition that needs no lookup (identifiers, templates, schemas,
    numbers, function names)."""
    found = [
        *identifier_violations(namespace, name),
        *template_violations("system_prompt", spec.system_prompt),
        *_initial_message_violations(spec.initial_messages),
        *schema_violations("input_schema", spec.input_schema),
    ]
    if spec.temperature is not None and not 0.0 <= spec.temperature <= MAX_TEMPERATURE:
        found.append(
            FieldViolation(
                field="temperature", description=f"must be between 0 and {MAX_TEMPERATURE}"
            )
        )
    if spec.max_tokens is not None and spec.max_tokens < 1:
        found.append(FieldViolation(field="max_tokens", description="must be at least 1"))
    if not 1 <= spec.max_turns <= MAX_AGENT_TURNS:
        found.append(
            FieldViolation(
                field="max_turns", description=f"must be between 1 and {MAX_AGENT_TURNS}"
            )
        )
    for index, function in enumerate(spec.enabled_functions):
        if split_function_name(function) is None:
            found.append(
                FieldViolation(
                    field=f"enabled_functions[{index}]",
                    description="must be namespace/name, each ^[a-zA-Z_][a-zA-Z0-9_]*$",
                )
            )
    return found


def _initial_message_violations(value: Any) -> list[FieldViolation]:
    if not isinstance(value, list):
        return [FieldViolation(field="initial_messages", description="must be a JSON list")]
    found: list[FieldViolation] = []
    roles = ", ".join(sorted(INITIAL_MESSAGE_ROLES))
    for index, item in enumerate(value):
        field = f"initial_messages[{index}]"
        if not isinstance(item, dict):
            found.append(FieldViolation(field=field, description="must be {role, content}"))
            continue
        if item.get("role") not in INITIAL_MESSAGE_ROLES:
            found.append(FieldViolation(field=f"{field}.role", description=f"one of {roles}"))
        content = item.get("content")
        if not isinstance(content, str):
            found.append(FieldViolation(field=f"{field}.content", description="must be a string"))
        else:
            found.extend(template_violations(f"{field}.content", content))
    return found


def render_transcript(
    spec: AgentSpec, variables: Any, message: str, *, item: str = ""
) -> tuple[tuple[ChatMessage, ...], list[FieldViolation]]:
    """The chat's first messages: the rendered system prompt (when not empty), the rendered
    initial messages, then the user message; or the violations, each field prefixed by `item`
    (such as `inputs[3].`)."""
    root = f"{item}input_variables"
    problems = input_violations(spec.input_schema, variables, root=root)
    if problems:
        return (), problems
    transcript: list[ChatMessage] = []
    system, problems = _render(item, "system_prompt", spec.system_prompt, variables)
    if system:
        transcript.append(ChatMessage(role=ROLE_SYSTEM, content=system))
    for index, initial in enumerate(spec.initial_messages):
        field = f"initial_messages[{index}].content"
        content, more = _render(item, field, str(initial.get("content", "")), variables)
        problems.extend(more)
        transcript.append(ChatMessage(role=str(initial.get("role")), content=content))
    if problems:
        return (), problems
    transcript.append(ChatMessage(role=ROLE_USER, content=message))
    return tuple(transcript), []


def _render(
    item: str, field: str, source: str, variables: dict[str, Any]
) -> tuple[str, list[FieldViolation]]:
    text, problems = render(f"{item}{field}", source, variables)
    named: list[FieldViolation] = []
    for problem in problems:
        # An undefined variable names the variable the caller must supply.
        undefined = _UNDEFINED.match(problem.description.removeprefix("template error: "))
        if undefined:
            named.append(
                FieldViolation(
                    field=f"{item}input_variables.{undefined.group(1)}",
                    description=f"undefined variable used by {field}",
                )
            )
        else:
            named.append(problem)
    return text, named
