"""JSON as it crosses gRPC and storage: bytes in, bytes out, numbers kept exactly."""

from __future__ import annotations

import json
from typing import Any


def dump_json(value: Any) -> bytes:
    """Compact UTF-8 JSON; integers of any size and floats round-trip exactly."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def load_json(raw: bytes, *, empty: Any = None) -> Any:
    """Parses JSON bytes; empty bytes mean `empty` (an absent optional value)."""
    if not raw:
        return empty
    return json.loads(raw)
