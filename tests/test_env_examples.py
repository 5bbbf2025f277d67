"""Each service's `.env.example` names every setting it reads, with the default it has."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic_settings import BaseSettings

from sinas_executor.settings import ExecutorSettings
from sinas_gateway.settings import GatewaySettings
from sinas_notifier.settings import NotifierSettings
from sinas_scheduler.settings import SchedulerSettings

ROOT = Path(__file__).resolve().parent.parent
# Settings with no default (or one computed per host) are documented with an example value.
EXAMPLE_VALUES = {
    "CALLBACK_CA_FILE",
    "CALLBACK_SIGNING_SECRET",
    "DATABASE_URL",
    "EXECUTOR_ID",
    "EXECUTOR_SANDBOX_ROOT",
    "INTERNAL_TLS_CA_FILE",
    "INTERNAL_TLS_CERT_FILE",
    "INTERNAL_TLS_KEY_FILE",
    "NOTIFIER_ID",
    "SINAS_BOOTSTRAP_ADMIN_KEY",
    "SINAS_ENCRYPTION_KEY",
}


def variables_read_by(model: type[BaseSettings]) -> dict[str, object]:
    """Environment variable -> default, through nested settings sections."""
    found: dict[str, object] = {}
    for field in model.model_fields.values():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseSettings):
            found.update(variables_read_by(annotation))
        elif field.validation_alias is not None:
            found[str(field.validation_alias)] = field.default
    return found


def documented(path: Path) -> dict[str, str]:
    lines = path.read_text().splitlines()
    pairs = (line.split("=", 1) for line in lines if line.strip() and not line.startswith("#"))
    return {name: value for name, value in pairs}


@pytest.mark.parametrize(
    ("service", "settings"),
    [
        ("scheduler", SchedulerSettings),
        ("executor", ExecutorSettings),
        ("gateway", GatewaySettings),
        ("notifier", NotifierSettings),
    ],
)
def test_env_example_lists_every_setting_with_its_default(
    service: str, settings: type[BaseSettings]
) -> None:
    example = documented(ROOT / "services" / service / ".env.example")
    read = variables_read_by(settings)

    assert set(example) == set(read)
    for name, default in read.items():
        if name in EXAMPLE_VALUES:
            continue
        value = example[name]
        if isinstance(default, bool):
            assert value == str(default).lower(), name
        elif isinstance(default, int | float):
            assert float(value) == float(default), name
        else:
            assert value == str(default), name
