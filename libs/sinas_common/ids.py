"""Time-ordered UUIDv7 ids, so primary-key indexes stay compact under insert load.

Ids made by one process are strictly increasing, even within one millisecond (RFC 9562,
6.2, method 3: the random part counts on from the last id by a random step, so the next id
is not guessable from this one). Due executions are published in id order among equals, so
a batch's children run in their batch order.
"""

from __future__ import annotations

import os
import threading
import time
import uuid

_RAND_B_BITS = 62
_COUNTER_BITS = 12 + _RAND_B_BITS
_RAND_B_MASK = (1 << _RAND_B_BITS) - 1
_MILLIS_MASK = (1 << 48) - 1

_lock = threading.Lock()
_last: tuple[int, int] = (0, 0)


def uuid7() -> str:
    """A UUID version 7 as a string: 48 bits of Unix ms, then 74 bits that are random, or the
    previous id's plus a random step when the clock has not moved past it."""
    global _last
    millis = (time.time_ns() // 1_000_000) & _MILLIS_MASK
    counter = int.from_bytes(os.urandom(10), "big") >> (80 - _COUNTER_BITS)
    with _lock:
        if (millis, counter) <= _last:
            step = 1 + int.from_bytes(os.urandom(4), "big")
            millis, counter = _last[0], _last[1] + step
            if counter >> _COUNTER_BITS:
                millis, counter = millis + 1, 0
        _last = (millis, counter)
    value = millis << 80
    value |= 0x7 << 76
    value |= (counter >> _RAND_B_BITS) << 64
    value |= 0b10 << 62
    value |= counter & _RAND_B_MASK
    return str(uuid.UUID(int=value))
