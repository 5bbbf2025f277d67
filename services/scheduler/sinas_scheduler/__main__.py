"""`python -m sinas_scheduler [--migrate] [--migrate-only]`: run the scheduler until signalled."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from sinas_common.hardening import make_non_dumpable
from sinas_common.logs import configure_logging
from sinas_common.metrics import MetricsServer
from sinas_scheduler.app import SchedulerApp
from sinas_scheduler.migrate import upgrade_to_head
from sinas_scheduler.settings import SchedulerSettings

logger = logging.getLogger(__name__)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="sinas_scheduler", description=__doc__)
    parser.add_argument(
        "--migrate", action="store_true", help="run the database migrations before serving"
    )
    parser.add_argument(
        "--migrate-only", action="store_true", help="run the database migrations and exit"
    )
    return parser.parse_args(argv)


async def serve(settings: SchedulerSettings) -> None:
    app = SchedulerApp(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await app.start()
    try:
        await stop.wait()
        logger.info("stopping on signal", extra={"action": "stop"})
    finally:
        await app.stop()


def main(argv: list[str] | None = None) -> None:
    # First of all: from here on no other process of our uid reads our environ or memory.
    make_non_dumpable()
    args = parse_args(argv)
    settings = SchedulerSettings()  # type: ignore[call-arg]  # DATABASE_URL comes from the env
    configure_logging("scheduler", settings.log_level)
    if args.migrate or args.migrate_only:
        upgrade_to_head(settings.database_url)
        logger.info("database migrated", extra={"action": "migrate"})
        if args.migrate_only:
            return
    metrics = MetricsServer.start(settings.metrics_bind, settings.metrics_port)
    try:
        asyncio.run(serve(settings))
    finally:
        metrics.close()


if __name__ == "__main__":
    main()
