"""A scripted OpenAI-compatible Chat Completions server for tests: real HTTP on 127.0.0.1.

`POST /v1/chat/completions` answers by the LAST message of the request:
- a `tool` message: a final assistant reply `Tool said: <tool content>`;
- a user message containing `SLOW<n>`: sleeps n seconds, then goes on with the rules below;
- `FAIL500`: an HTTP 500; `GARBAGE`: a 200 whose body is not JSON;
- `CALL_TOOL ns/name {json args}`: one tool call to the function tool `ns__name` (no JSON
  object after the name: `{}`);
- anything else: `Echo: <user content>`.
Every reply carries `usage` with PROMPT_TOKENS and COMPLETION_TOKENS. Every request body is
recorded: `GET /_requests` lists them in arrival order and `DELETE /_requests` clears them.
The server runs its own event loop in a thread, so a test that blocks never stalls it.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import time
import uuid
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

# Fixed per reply so a test can predict sums: a run of n model calls uses n times each.
PROMPT_TOKENS = 11
COMPLETION_TOKENS = 5

_CALL_TOOL = re.compile(r"CALL_TOOL\s+([A-Za-z0-9_.-]+)/([A-Za-z0-9_.-]+)")
_SLOW = re.compile(r"SLOW(\d+(?:\.\d+)?)")


def _text(content: Any) -> str:
    """A message's content as text: a string, or the text parts of a content list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def _tool_call(content: str) -> dict[str, Any] | None:
    match = _CALL_TOOL.search(content)
    if match is None:
        return None
    namespace, name = match.groups()
    arguments: Any = {}
    rest = content[match.end() :].lstrip()
    if rest.startswith("{"):
        try:
            arguments, _ = json.JSONDecoder().raw_decode(rest)
        except json.JSONDecodeError:
            arguments = {}
    return {
        "id": f"call_{uuid.uuid4().hex[:24]}",
        "type": "function",
        "function": {"name": f"{namespace}__{name}", "arguments": json.dumps(arguments)},
    }


def _completion(model: str, message: dict[str, Any], finish_reason: str) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
        "usage": {
            "prompt_tokens": PROMPT_TOKENS,
            "completion_tokens": COMPLETION_TOKENS,
            "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
        },
    }


class LlmStub:
    """The scripted server; `start()` binds a free port, `stop()` shuts it down."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._bodies: list[Any] = []
        self._authorizations: list[str] = []
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        """The provider base URL to configure: `http://127.0.0.1:<port>/v1`."""
        return f"http://127.0.0.1:{self.port}/v1"

    def requests(self) -> list[Any]:
        """The recorded request bodies (parsed JSON), in arrival order."""
        with self._lock:
            return list(self._bodies)

    def authorizations(self) -> list[str]:
        """The Authorization header of each recorded request, in the same order."""
        with self._lock:
            return list(self._authorizations)

    def clear(self) -> None:
        with self._lock:
            self._bodies.clear()
            self._authorizations.clear()

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat_completions, methods=["POST"]),
                Route("/_requests", self._list_requests, methods=["GET"]),
                Route("/_requests", self._clear_requests, methods=["DELETE"]),
            ]
        )

    def start(self) -> LlmStub:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = int(sock.getsockname()[1])
        config = uvicorn.Config(
            self.app(),
            log_config=None,
            log_level="warning",
            access_log=False,
            lifespan="off",
            ws="none",
            timeout_graceful_shutdown=1,
        )
        server = uvicorn.Server(config)
        self._server = server
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="llm-stub", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the LLM stub did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = None
        self._thread = None

    def __enter__(self) -> LlmStub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- handlers ------------------------------------------------------------------------------

    async def _list_requests(self, request: Request) -> Response:
        return JSONResponse(self.requests())

    async def _clear_requests(self, request: Request) -> Response:
        self.clear()
        return Response(status_code=204)

    async def _chat_completions(self, request: Request) -> Response:
        raw = await request.body()
        try:
            body = json.loads(raw)
        except json.JSONDecodeError:
            return JSONResponse({"error": {"message": "body is not JSON"}}, status_code=400)
        with self._lock:
            self._bodies.append(body)
            self._authorizations.append(request.headers.get("authorization", ""))
        messages = body.get("messages") if isinstance(body, dict) else None
        if not isinstance(messages, list) or not messages or not isinstance(messages[-1], dict):
            return JSONResponse({"error": {"message": "messages are required"}}, status_code=400)
        model = str(body.get("model", ""))
        last = messages[-1]
        content = _text(last.get("content"))
        reply: dict[str, Any]
        if last.get("role") == "tool":
            reply = {"role": "assistant", "content": f"Tool said: {content}"}
            return JSONResponse(_completion(model, reply, "stop"))
        slow = _SLOW.search(content)
        if slow is not None:
            await asyncio.sleep(float(slow.group(1)))
        if "FAIL500" in content:
            return JSONResponse({"error": {"message": "scripted failure"}}, status_code=500)
        if "GARBAGE" in content:
            return PlainTextResponse("<html>this is not JSON</html>")
        call = _tool_call(content)
        if call is not None:
            reply = {"role": "assistant", "content": None, "tool_calls": [call]}
            return JSONResponse(_completion(model, reply, "tool_calls"))
        reply = {"role": "assistant", "content": f"Echo: {content}"}
        return JSONResponse(_completion(model, reply, "stop"))
