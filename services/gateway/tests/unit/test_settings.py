"""Gateway settings come from the environment with the documented defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from sinas_common.settings import SchedulerClientSettings
from sinas_gateway.settings import GatewaySettings


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "GATEWAY_HOST",
        "GATEWAY_PORT",
        "MAX_REQUEST_BODY_BYTES",
        "SYNC_EXECUTE_DEFAULT_TIMEOUT",
        "SCHEDULER_ADDR",
    ):
        monkeypatch.delenv(name, raising=False)

    settings = GatewaySettings()

    assert (settings.host, settings.port) == ("0.0.0.0", 8000)
    assert settings.max_request_body_bytes == 1048576
    assert settings.sync_execute_default_timeout == 300
    assert settings.scheduler.scheduler_addr == "127.0.0.1:50051"


def test_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_HOST", "127.0.0.1")
    monkeypatch.setenv("GATEWAY_PORT", "9000")
    monkeypatch.setenv("MAX_REQUEST_BODY_BYTES", "2048")
    monkeypatch.setenv("SYNC_EXECUTE_DEFAULT_TIMEOUT", "15")
    monkeypatch.setenv("SCHEDULER_ADDR", "scheduler:50051")
    monkeypatch.setenv("LOG_LEVEL", "DEBUG")

    settings = GatewaySettings()

    assert (settings.host, settings.port) == ("127.0.0.1", 9000)
    assert settings.max_request_body_bytes == 2048
    assert settings.sync_execute_default_timeout == 15
    assert settings.scheduler.scheduler_addr == "scheduler:50051"
    assert settings.log_level == "DEBUG"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GATEWAY_PORT", "70000"),
        ("MAX_REQUEST_BODY_BYTES", "0"),
        ("SYNC_EXECUTE_DEFAULT_TIMEOUT", "x"),
    ],
)
def test_bad_values_fail_fast(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)

    with pytest.raises(ValidationError):
        GatewaySettings()


def test_env_example_lists_every_setting_with_its_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    example = Path(__file__).parents[2] / ".env.example"
    documented = dict(
        line.split("=", 1)
        for line in example.read_text().splitlines()
        if line and not line.startswith("#")
    )
    for name in documented:
        monkeypatch.delenv(name, raising=False)

    from_example = GatewaySettings.model_validate(documented)

    aliases = {
        str(field.validation_alias)
        for model in (GatewaySettings, SchedulerClientSettings)
        for field in model.model_fields.values()
        if field.validation_alias is not None
    }
    assert set(documented) == aliases
    assert from_example == GatewaySettings()
    assert SchedulerClientSettings.model_validate(documented) == SchedulerClientSettings()
