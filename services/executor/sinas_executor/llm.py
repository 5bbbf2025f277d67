"""The chat model port and its adapter for any OpenAI-compatible Chat Completions endpoint."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

logger = logging.getLogger(__name__)

# How much of a provider's error body goes into the execution's error.
ERROR_BODY_EXCERPT = 300


class ModelError(Exception):
    """The provider failed: an HTTP error, a timeout, or a reply that is not a completion."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelRequest:
    """One Chat Completions call: where to send it and what to send."""

    base_url: str
    api_key: str
    model: str
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] = field(default_factory=list)
    temperature: float | None = None
    max_tokens: int | None = None

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "messages": self.messages}
        if self.tools:
            body["tools"] = self.tools
        if self.temperature is not None:
            body["temperature"] = self.temperature
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        return body


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelReply:
    """The assistant's message of one completion and the tokens the call used."""

    content: str | None
    tool_calls: tuple[dict[str, Any], ...] = ()
    prompt_tokens: int = 0
    completion_tokens: int = 0


class ChatModel(Protocol):
    """Answers a transcript with the assistant's next message."""

    async def complete(self, request: ModelRequest, *, timeout_seconds: float) -> ModelReply:
        """The reply; raises ModelError when there is none to use."""
        ...


def _token_count(usage: Any, key: str) -> int:
    value = usage.get(key) if isinstance(usage, dict) else None
    # bool is an int subclass; a provider sending true is not counting tokens.
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def parse_completion(document: Any) -> ModelReply:
    """The first choice's message of a Chat Completions reply; ModelError when malformed."""
    if not isinstance(document, dict):
        raise ModelError("malformed LLM reply: not a JSON object")
    choices = document.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise ModelError("malformed LLM reply: no choices")
    message = choices[0].get("message")
    if not isinstance(message, dict):
        raise ModelError("malformed LLM reply: the choice has no message")
    content = message.get("content")
    if content is not None and not isinstance(content, str):
        raise ModelError("malformed LLM reply: message content is not text")
    raw_calls = message.get("tool_calls")
    if raw_calls is None:
        raw_calls = []
    if not isinstance(raw_calls, list):
        raise ModelError("malformed LLM reply: tool_calls is not a list")
    calls: list[dict[str, Any]] = []
    for call in raw_calls:
        function = call.get("function") if isinstance(call, dict) else None
        if (
            not isinstance(function, dict)
            or not isinstance(call.get("id"), str)
            or not isinstance(function.get("name"), str)
        ):
            raise ModelError("malformed LLM reply: a tool call lacks its id or function name")
        arguments = function.get("arguments")
        calls.append(
            {
                "id": call["id"],
                "type": "function",
                "function": {
                    "name": function["name"],
                    "arguments": arguments if isinstance(arguments, str) else "",
                },
            }
        )
    if content is None and not calls:
        raise ModelError("malformed LLM reply: neither content nor tool calls")
    usage = document.get("usage")
    return ModelReply(
        content=content,
        tool_calls=tuple(calls),
        prompt_tokens=_token_count(usage, "prompt_tokens"),
        completion_tokens=_token_count(usage, "completion_tokens"),
    )


class HttpxChatModel:
    """ChatModel over HTTP with one shared connection pool; streaming is not used."""

    def __init__(self, client: httpx.AsyncClient | None = None) -> None:
        self._client = client or httpx.AsyncClient(follow_redirects=False)

    async def close(self) -> None:
        await self._client.aclose()

    async def complete(self, request: ModelRequest, *, timeout_seconds: float) -> ModelReply:
        headers = {"Content-Type": "application/json"}
        if request.api_key:
            headers["Authorization"] = f"Bearer {request.api_key}"
        url = request.base_url.rstrip("/") + "/chat/completions"
        try:
            response = await self._client.post(
                url,
                content=json.dumps(request.body()).encode(),
                headers=headers,
                timeout=httpx.Timeout(timeout_seconds),
            )
        except httpx.TimeoutException as exc:
            raise ModelError(f"LLM provider timed out after {timeout_seconds:g} s") from exc
        except httpx.HTTPError as exc:
            raise ModelError(f"LLM provider unreachable: {type(exc).__name__}: {exc}") from exc
        if response.status_code >= 400:
            excerpt = response.text[:ERROR_BODY_EXCERPT]
            raise ModelError(f"LLM provider answered HTTP {response.status_code}: {excerpt}")
        try:
            document = response.json()
        except ValueError as exc:
            raise ModelError(
                f"malformed LLM reply: not JSON (HTTP {response.status_code})"
            ) from exc
        return parse_completion(document)
