"""Agent prompt templates: parse checks at definition time, sandboxed rendering at submit."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from sinas_common.errors import FieldViolation

# No HTML escaping: prompts are plain text, and an `&` must reach the model as `&`.
_ENVIRONMENT = SandboxedEnvironment(autoescape=False, undefined=StrictUndefined)


@lru_cache(maxsize=1024)
def _compiled(source: str) -> Template:
    return _ENVIRONMENT.from_string(source)


def template_violations(field: str, source: str) -> list[FieldViolation]:
    """Why `source` does not parse as a template, as a violation of `field`."""
    try:
        _compiled(source)
    except TemplateError as exc:
        return [FieldViolation(field=field, description=f"template does not parse: {exc}")]
    return []


def render(field: str, source: str, variables: dict[str, Any]) -> tuple[str, list[FieldViolation]]:
    """The rendered text, or a violation of `field` (an undefined variable, a template error)."""
    try:
        return _compiled(source).render(variables), []
    except TemplateError as exc:
        return "", [FieldViolation(field=field, description=f"template error: {exc}")]
