"""Length-prefixed JSON frames between the executor and its sandboxed workers."""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import Any

from sinas_common.jsoncodec import dump_json, load_json

_HEADER = struct.Struct(">I")
# A frame carries one input or one output; anything bigger is refused rather than buffered.
MAX_FRAME_BYTES = 64 * 1024 * 1024


class FrameError(Exception):
    """The peer sent something that is not a frame, or a frame that is too large."""


def encode_frame(message: Any) -> bytes:
    body = dump_json(message)
    if len(body) > MAX_FRAME_BYTES:
        raise FrameError(f"frame of {len(body)} bytes exceeds {MAX_FRAME_BYTES}")
    return _HEADER.pack(len(body)) + body


def _recv_exactly(sock: socket.socket, size: int) -> bytes | None:
    chunks: list[bytes] = []
    remaining = size
    while remaining:
        chunk = sock.recv(min(remaining, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def read_frame_blocking(sock: socket.socket) -> Any | None:
    """The next message on a blocking socket, or None when the peer closed it."""
    header = _recv_exactly(sock, _HEADER.size)
    if header is None:
        return None
    (size,) = _HEADER.unpack(header)
    if size > MAX_FRAME_BYTES:
        raise FrameError(f"frame of {size} bytes exceeds {MAX_FRAME_BYTES}")
    body = _recv_exactly(sock, size)
    if body is None:
        return None
    return load_json(body)


def write_frame_blocking(sock: socket.socket, message: Any) -> None:
    sock.sendall(encode_frame(message))


async def read_frame(reader: asyncio.StreamReader) -> Any | None:
    """The next message from a stream, or None when the peer closed it."""
    try:
        header = await reader.readexactly(_HEADER.size)
        (size,) = _HEADER.unpack(header)
        if size > MAX_FRAME_BYTES:
            raise FrameError(f"frame of {size} bytes exceeds {MAX_FRAME_BYTES}")
        body = await reader.readexactly(size)
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    return load_json(body)
