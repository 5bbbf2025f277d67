"""Permission matching exactly as upstream §7.2."""

from __future__ import annotations

import pytest

from sinas_scheduler.permissions import DEFAULT_ROLES, has_permission, matches


@pytest.mark.parametrize(
    ("pattern", "concrete"),
    [
        ("sinas.*:all", "sinas.functions/ns/fn.execute:own"),
        ("sinas.*:all", "sinas.executions.read:all"),
        ("sinas.*:all", "sinas.functions.create:all"),
        ("sinas.functions/*/*.execute:own", "sinas.functions/ns/fn.execute:own"),
        ("sinas.functions/ns/*.execute:all", "sinas.functions/ns/fn.execute:own"),
        ("sinas.functions/ns/fn.execute:all", "sinas.functions/ns/fn.execute:all"),
        ("sinas.functions/ns/fn.*:own", "sinas.functions/ns/fn.read:own"),
        ("sinas.functions.*:all", "sinas.functions/ns/fn.delete:all"),
        ("sinas.*.read:own", "sinas.executions.read:own"),
        ("sinas.executions.read:*", "sinas.executions.read:all"),
        ("titan.*:all", "titan.reports/a/b.view:own"),
        ("sinas.functions/*/send_*.execute:own", "sinas.functions/x/send_*.execute:own"),
        # Managing one's own API keys, each action through the one wildcard.
        ("sinas.api_keys.*:own", "sinas.api_keys.create:own"),
        ("sinas.api_keys.*:own", "sinas.api_keys.read:own"),
        ("sinas.api_keys.*:own", "sinas.api_keys.delete:own"),
        ("sinas.api_keys.*:all", "sinas.api_keys.delete:own"),
    ],
)
def test_matches(pattern: str, concrete: str) -> None:
    assert matches(pattern, concrete)


@pytest.mark.parametrize(
    ("pattern", "concrete"),
    [
        # :own never grants :all.
        ("sinas.executions.read:own", "sinas.executions.read:all"),
        ("sinas.*:own", "sinas.functions.create:all"),
        # A pattern without a path does not cover a concrete one with a path.
        ("sinas.functions.execute:own", "sinas.functions/ns/fn.execute:own"),
        # A pattern with a path does not cover one without.
        ("sinas.functions/*/*.execute:own", "sinas.functions.execute:own"),
        # Managing one's own keys never reaches anyone else's.
        ("sinas.api_keys.*:own", "sinas.api_keys.delete:all"),
        ("sinas.api_keys.*:own", "sinas.api_keys.read:all"),
        # Segment counts must agree; `*` is one whole segment.
        ("sinas.functions/*.execute:own", "sinas.functions/ns/fn.execute:own"),
        ("sinas.functions/*/send_*.execute:own", "sinas.functions/x/send_mail.execute:own"),
        ("sinas.functions/ns/fn.read:own", "sinas.functions/ns/fn.execute:own"),
        ("sinas.functions/ns/fn.execute:own", "sinas.functions/ns/other.execute:own"),
        ("sinas.agents/*/*.chat:all", "sinas.functions/ns/fn.chat:all"),
        ("titan.*:all", "sinas.functions/ns/fn.execute:own"),
        ("sinas.functions.read:own", "sinas.functions.read.extra:own"),
        # Unknown scopes and malformed strings match nothing.
        ("sinas.*:some", "sinas.executions.read:own"),
        ("sinas.*:all", "sinas.executions.read:some"),
        ("sinas", "sinas.executions.read:own"),
        ("sinas:all", "sinas.executions.read:own"),
    ],
)
def test_does_not_match(pattern: str, concrete: str) -> None:
    assert not matches(pattern, concrete)


def test_exact_grant_and_union_of_roles() -> None:
    granted = frozenset({"custom.thing", "sinas.executions.read:own"})
    assert has_permission(granted, "custom.thing")
    assert has_permission(granted, "sinas.executions.read:own")
    assert not has_permission(granted, "sinas.executions.read:all")
    assert not has_permission(frozenset(), "sinas.executions.read:own")


def test_default_roles() -> None:
    users = DEFAULT_ROLES["Users"]
    for needed in (
        "sinas.functions/ns/fn.execute:own",
        "sinas.functions/ns/fn.read:own",
        "sinas.executions.read:own",
        "sinas.api_keys.create:own",
        "sinas.users.read:own",
    ):
        assert has_permission(users, needed)
    assert not has_permission(users, "sinas.functions.create:all")
    assert not has_permission(users, "sinas.executions.read:all")
    assert has_permission(DEFAULT_ROLES["Admins"], "sinas.functions/a/b.update:all")
    assert not has_permission(DEFAULT_ROLES["GuestUsers"], "sinas.functions/a/b.execute:own")
