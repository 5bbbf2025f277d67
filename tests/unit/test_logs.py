"""The JSON lines every service writes: one object per record, context from `extra`."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from sinas_common.logs import configure_logging


@pytest.fixture
def written() -> Iterator[io.StringIO]:
    """What the configured handler writes (to stderr in a service; to a buffer here)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    factory = logging.getLogRecordFactory()
    configure_logging("scheduler")
    [handler] = root.handlers
    assert isinstance(handler, logging.StreamHandler)
    buffer = io.StringIO()
    handler.setStream(buffer)
    try:
        yield buffer
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        logging.setLogRecordFactory(factory)


def lines(written: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in written.getvalue().splitlines()]


def test_a_record_is_one_json_line_with_its_extra_fields(written: io.StringIO) -> None:
    logging.getLogger("sinas_scheduler.scheduler").info(
        "execution finished", extra={"action": "complete", "execution_id": "e-1", "count": 2}
    )
    [entry] = lines(written)
    assert entry.pop("time")
    assert entry == {
        "level": "info",
        "logger": "sinas_scheduler.scheduler",
        "message": "execution finished",
        "service": "scheduler",
        "action": "complete",
        "execution_id": "e-1",
        "count": 2,
    }


def test_below_the_level_nothing_is_written_and_exceptions_come_with_their_traceback(
    written: io.StringIO,
) -> None:
    logger = logging.getLogger("sinas_executor.consumer")
    logger.debug("not written")
    try:
        raise ValueError("broken")
    except ValueError:
        logger.exception("claim failed", extra={"action": "claim"})
    [entry] = lines(written)
    assert entry["level"] == "error" and entry["action"] == "claim"
    assert "ValueError: broken" in str(entry["exception"])


def test_values_json_cannot_encode_are_written_as_text(written: io.StringIO) -> None:
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    logging.getLogger("x").warning("odd value", extra={"due_at": at})
    [entry] = lines(written)
    assert entry["due_at"] == "2026-01-02 03:04:05+00:00"
