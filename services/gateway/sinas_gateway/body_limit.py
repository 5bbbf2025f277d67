"""A pure ASGI middleware that refuses request bodies over the configured size with 413.

It reads the whole body before the application sees any of it, so an oversized request
never reaches a route, let alone the scheduler. Both a declared `Content-Length` and the
bytes actually streamed count (a chunked body declares no length).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sinas_common.errors import PayloadTooLarge
from sinas_common.jsoncodec import dump_json


class BodySizeLimit:
    """Answers 413 {"detail", "reason": "payload_too_large"} for bodies over `max_bytes`."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self._declared_length(scope) > self.max_bytes:
            await self._refuse(send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                # The client went away before finishing its body: nothing to answer.
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(b"".join(chunks), receive), send)

    @staticmethod
    def _declared_length(scope: Scope) -> int:
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    return int(value)
                except ValueError:
                    # The server rejects a malformed length itself; the byte count still holds.
                    return 0
        return 0

    async def _refuse(self, send: Send) -> None:
        # No `Connection: close`: closing with the unread body still in the socket buffer
        # makes the kernel reset the connection, and the client may never see this answer.
        # The HTTP server discards the rest of the body once the response is complete.
        body = dump_json(
            {
                "detail": f"Request body exceeds {self.max_bytes} bytes",
                "reason": PayloadTooLarge.reason,
            }
        )
        await send(
            {
                "type": "http.response.start",
                "status": PayloadTooLarge.http_status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that hands the buffered body over once, then defers to the real one."""
    delivered = False

    async def replay() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
