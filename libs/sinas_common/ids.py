"""Time-ordered UUIDv7 ids, so primary-key indexes stay compact under insert load."""

from __future__ import annotations

import os
import time
import uuid


def uuid7() -> str:
    """A random UUID version 7 (RFC 9562) as a string: 48 bits of Unix ms, then randomness."""
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (millis & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= ((rand >> 62) & 0xFFF) << 64
    value |= 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    return str(uuid.UUID(int=value))
