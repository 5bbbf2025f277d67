"""Permission strings, matched exactly as upstream Sinas does, and the default roles."""

from __future__ import annotations

from collections.abc import Iterable

_SCOPES = frozenset({"own", "all", "*"})
# What a granted scope covers: `:all` (and `:*`) imply `:own`, never the reverse.
_COVERS = {"own": frozenset({"own"}), "all": _SCOPES, "*": _SCOPES}

ADMIN_PERMISSION = "sinas.*:all"

DEFAULT_ROLES: dict[str, tuple[str, ...]] = {
    "Admins": (ADMIN_PERMISSION,),
    "Users": (
        "sinas.functions.create:own",
        "sinas.functions/*/*.read:own",
        "sinas.functions/*/*.update:own",
        "sinas.functions/*/*.delete:own",
        "sinas.functions/*/*.execute:own",
        "sinas.agents.create:own",
        "sinas.agents/*/*.read:all",
        "sinas.agents/*/*.update:own",
        "sinas.agents/*/*.delete:own",
        "sinas.agents/*/*.chat:all",
        "sinas.executions.read:own",
        "sinas.executions.update:own",
        "sinas.api_keys.create:own",
        "sinas.api_keys.read:own",
        "sinas.api_keys.delete:own",
        "sinas.users.read:own",
        "sinas.users.update:own",
        "sinas.logs.read:own",
    ),
    "GuestUsers": ("sinas.users.read:own", "sinas.users.update:own"),
}


def has_permission(granted: Iterable[str], required: str) -> bool:
    """True when any granted permission equals or, as a pattern, matches `required`."""
    granted_set = granted if isinstance(granted, frozenset | set) else frozenset(granted)
    if required in granted_set:
        return True
    return any(matches(pattern, required) for pattern in granted_set)


def matches(pattern: str, concrete: str) -> bool:
    """Matches one granted pattern against one concrete permission string (upstream §7.2)."""
    p_rest, p_sep, p_scope = pattern.rpartition(":")
    c_rest, c_sep, c_scope = concrete.rpartition(":")
    if not p_sep or not c_sep or p_scope not in _SCOPES or c_scope not in _SCOPES:
        return False
    if c_scope not in _COVERS[p_scope]:
        return False

    p_resource, p_dot, p_action = p_rest.rpartition(".")
    c_resource, c_dot, c_action = c_rest.rpartition(".")
    if not p_dot or not c_dot:
        return False
    if p_action != "*" and p_action != c_action:
        return False

    p_base, p_slash, p_path = p_resource.partition("/")
    c_base, c_slash, c_path = c_resource.partition("/")
    p_segments = p_base.split(".")
    c_segments = c_base.split(".")

    prefix_mode = p_segments[-1] == "*" or (p_action == "*" and len(p_segments) < len(c_segments))
    if prefix_mode:
        head = p_segments[:-1] if p_segments[-1] == "*" else p_segments
        if len(head) > len(c_segments):
            return False
        if not all(_segment_matches(p, c) for p, c in zip(head, c_segments, strict=False)):
            return False
    elif len(p_segments) != len(c_segments) or not all(
        _segment_matches(p, c) for p, c in zip(p_segments, c_segments, strict=True)
    ):
        return False

    is_wildcard_pattern = p_action == "*" or p_segments[-1] == "*"
    if not p_slash:
        return not c_slash or is_wildcard_pattern
    if not c_slash:
        return False
    p_parts = p_path.split("/")
    c_parts = c_path.split("/")
    return len(p_parts) == len(c_parts) and all(
        _segment_matches(p, c) for p, c in zip(p_parts, c_parts, strict=True)
    )


def _segment_matches(pattern: str, concrete: str) -> bool:
    # `*` stands for exactly one whole segment; partial globs such as `send_*` are literal.
    return pattern == "*" or pattern == concrete


def function_permission(namespace: str, name: str, action: str, scope: str = "own") -> str:
    return f"sinas.functions/{namespace}/{name}.{action}:{scope}"


def agent_permission(namespace: str, name: str, action: str, scope: str = "own") -> str:
    return f"sinas.agents/{namespace}/{name}.{action}:{scope}"


AGENTS_CREATE_ALL = "sinas.agents.create:all"
LLM_PROVIDERS_CREATE_ALL = "sinas.llm_providers.create:all"
FUNCTIONS_CREATE_ALL = "sinas.functions.create:all"
EXECUTIONS_READ_ALL = "sinas.executions.read:all"
EXECUTIONS_READ_OWN = "sinas.executions.read:own"
EXECUTIONS_UPDATE_ALL = "sinas.executions.update:all"
EXECUTIONS_UPDATE_OWN = "sinas.executions.update:own"
ROLES_CREATE_ALL = "sinas.roles.create:all"
USERS_CREATE_ALL = "sinas.users.create:all"
API_KEYS_CREATE_OWN = "sinas.api_keys.create:own"
API_KEYS_CREATE_ALL = "sinas.api_keys.create:all"
API_KEYS_READ_OWN = "sinas.api_keys.read:own"
API_KEYS_READ_ALL = "sinas.api_keys.read:all"
API_KEYS_DELETE_OWN = "sinas.api_keys.delete:own"
API_KEYS_DELETE_ALL = "sinas.api_keys.delete:all"
