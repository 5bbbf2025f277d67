"""Aware UTC datetimes and their protobuf Timestamp form."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp


def utcnow() -> datetime:
    return datetime.now(UTC)


def to_timestamp(value: datetime | None) -> Timestamp | None:
    """None stays None so that an unset proto field means "no time"."""
    if value is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(value.astimezone(UTC))
    return stamp


def from_timestamp(stamp: Timestamp, *, present: bool = True) -> datetime | None:
    """The aware datetime of a Timestamp field, or None when the field is unset."""
    if not present:
        return None
    return stamp.ToDatetime(tzinfo=UTC)
