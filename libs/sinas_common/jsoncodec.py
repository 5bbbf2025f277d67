"""JSON as it crosses gRPC and storage: bytes in, bytes out, numbers kept exactly."""

from __future__ import annotations

import json
from typing import Any


def dump_json(value: Any) -> bytes:
    """Compact UTF-8 JSON; integers of any size and floats round-trip exactly."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def load_json(raw: bytes, *, empty: Any = None) -> Any:
    """Parses UTF-8 JSON bytes, strictly: NaN and infinities, which Python's parser lets in
    and no JSON column takes, are a ValueError. Empty bytes mean `empty` (an absent optional
    value). Bytes that parse are therefore fit to store as they are."""
    if not raw:
        return empty
    return json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
