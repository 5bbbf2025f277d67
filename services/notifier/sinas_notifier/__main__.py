"""`python -m sinas_notifier`: builds settings once and runs the notifier."""

from __future__ import annotations

import asyncio

from sinas_common.hardening import make_non_dumpable
from sinas_common.logs import configure_logging
from sinas_common.metrics import MetricsServer
from sinas_notifier.app import run_notifier
from sinas_notifier.settings import NotifierSettings


def main() -> None:
    # First of all: from here on no other process of our uid reads our environ or memory.
    make_non_dumpable()
    settings = NotifierSettings()
    configure_logging("notifier", settings.log_level)
    metrics = MetricsServer.start(settings.metrics_bind, settings.metrics_port)
    try:
        asyncio.run(run_notifier(settings))
    finally:
        metrics.close()


if __name__ == "__main__":
    main()
