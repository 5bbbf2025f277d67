"""The NATS users `make run` and the tests provision: private files, kept passwords, no wildcard."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from sinas_devstack.nats_auth import (
    CONFIG_FILE,
    NATS_ROLES,
    PASSWORDS_FILE,
    provision_nats_users,
    role_permissions,
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_users_are_written_for_the_owner_only(tmp_path: Path) -> None:
    accounts = provision_nats_users(tmp_path / "nats", prefixes=("SINAS",))

    assert _mode(tmp_path / "nats") == 0o700
    assert _mode(accounts.config_file) == 0o600
    assert _mode(tmp_path / "nats" / PASSWORDS_FILE) == 0o600


def test_a_restart_keeps_the_passwords_and_new_ones_differ(tmp_path: Path) -> None:
    first = provision_nats_users(tmp_path / "a", prefixes=("SINAS",))
    again = provision_nats_users(tmp_path / "a", prefixes=("SINAS",))
    other = provision_nats_users(tmp_path / "b", prefixes=("SINAS",))

    assert again.passwords == first.passwords
    assert len(set(first.passwords.values())) == len(NATS_ROLES)
    assert set(first.passwords.values()).isdisjoint(other.passwords.values())
    assert all(len(password) >= 32 for password in first.passwords.values())


def test_the_config_has_one_user_per_service_and_no_anonymous_user(tmp_path: Path) -> None:
    accounts = provision_nats_users(tmp_path, prefixes=("SINAS",))
    config = (tmp_path / CONFIG_FILE).read_text()

    assert "no_auth_user" not in config
    for role in NATS_ROLES:
        assert f'user: "{role}", password: {json.dumps(accounts.passwords[role])}' in config
    assert config.count("user:") == len(NATS_ROLES)
    assert set(accounts.role_env()) == set(NATS_ROLES)
    assert accounts.role_env()["executor"] == {
        "NATS_USER": "executor",
        "NATS_PASSWORD": accounts.passwords["executor"],
    }


def test_no_user_may_subscribe_or_publish_by_a_wildcard_over_the_streams() -> None:
    for role in NATS_ROLES:
        granted = role_permissions(role, ["SINAS"])
        assert ">" not in granted.subscribe
        assert "_INBOX.>" not in granted.subscribe
        assert granted.subscribe[0] == f"_INBOX.{role}.>"
        for subject in granted.publish:
            # A `>` only as the last token below a name of its own (acks, a stream's subjects).
            assert "*" not in subject
            assert ">" not in subject or subject.endswith(".>"), subject
            assert not subject.startswith((">", "$JS.API.>", "$JS.>")), subject


def test_only_the_scheduler_may_publish_jobs_events_and_control() -> None:
    owned = {"sinas.jobs.>", "sinas.events.>", "sinas.control.executions"}
    assert owned <= set(role_permissions("scheduler", ["SINAS"]).publish)
    for role in ("executor", "notifier"):
        granted = role_permissions(role, ["SINAS"])
        assert not any(subject.startswith("sinas.") for subject in granted.publish)
        assert not any("STREAM" in subject for subject in granted.publish)


def test_each_prefix_is_granted_exactly(tmp_path: Path) -> None:
    accounts = provision_nats_users(tmp_path, prefixes=())
    assert accounts.grant("TONE")
    assert not accounts.grant("TONE")
    config = accounts.config_file.read_text()

    assert "$JS.API.CONSUMER.MSG.NEXT.TONE_JOBS.TONE_function_executor" in config
    assert "$JS.API.CONSUMER.MSG.NEXT.TONE_EVENTS.TONE_notifier" in config
    assert "TTWO" not in config
