"""Parsing Chat Completions replies: what is a usable completion and what fails the run."""

from __future__ import annotations

from typing import Any

import pytest

from sinas_executor.llm import ModelError, parse_completion


def _reply(message: Any, usage: Any = None) -> dict[str, Any]:
    document: dict[str, Any] = {"choices": [{"index": 0, "message": message}]}
    if usage is not None:
        document["usage"] = usage
    return document


def test_content_and_usage() -> None:
    reply = parse_completion(
        _reply({"role": "assistant", "content": "hi"}, {"prompt_tokens": 3, "completion_tokens": 1})
    )
    assert (reply.content, reply.tool_calls) == ("hi", ())
    assert (reply.prompt_tokens, reply.completion_tokens) == (3, 1)


def test_tool_calls_are_normalised() -> None:
    reply = parse_completion(
        _reply(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "c1", "function": {"name": "a__b", "arguments": "{}"}}],
            }
        )
    )
    assert reply.content is None
    assert reply.tool_calls == (
        {"id": "c1", "type": "function", "function": {"name": "a__b", "arguments": "{}"}},
    )


def test_missing_or_odd_usage_counts_nothing() -> None:
    assert parse_completion(_reply({"content": "x"})).prompt_tokens == 0
    odd = parse_completion(
        _reply({"content": "x"}, {"prompt_tokens": True, "completion_tokens": -1})
    )
    assert (odd.prompt_tokens, odd.completion_tokens) == (0, 0)


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        ([], "not a JSON object"),
        ({}, "no choices"),
        ({"choices": []}, "no choices"),
        ({"choices": [{"message": "text"}]}, "the choice has no message"),
        (_reply({"content": 5}), "message content is not text"),
        (_reply({"content": None}), "neither content nor tool calls"),
        (_reply({"content": None, "tool_calls": {}}), "tool_calls is not a list"),
        (_reply({"content": None, "tool_calls": [{"id": "c"}]}), "lacks its id or function name"),
    ],
)
def test_malformed_replies_fail(document: Any, reason: str) -> None:
    with pytest.raises(ModelError, match=reason):
        parse_completion(document)
