"""`python -m sinas_executor`: builds settings once and runs the executor."""

from __future__ import annotations

import asyncio

from sinas_common.hardening import make_non_dumpable
from sinas_common.logs import configure_logging
from sinas_common.metrics import MetricsServer
from sinas_executor.app import run_executor
from sinas_executor.settings import ExecutorSettings


def main() -> None:
    # First of all: from here on no other process of our uid reads our environ or memory.
    make_non_dumpable()
    settings = ExecutorSettings()
    configure_logging("executor", settings.log_level)
    metrics = MetricsServer.start(settings.metrics_bind, settings.metrics_port)
    try:
        asyncio.run(run_executor(settings))
    finally:
        metrics.close()


if __name__ == "__main__":
    main()
