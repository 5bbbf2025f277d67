"""The scripted LLM server answers each trigger as documented and records what it was sent."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from sinas_devstack.llm_stub import COMPLETION_TOKENS, PROMPT_TOKENS, LlmStub


@pytest.fixture(scope="module")
def llm_stub() -> Iterator[LlmStub]:
    with LlmStub() as stub:
        yield stub


def _body(*messages: dict[str, Any]) -> dict[str, Any]:
    return {"model": "stub-model", "messages": list(messages)}


async def _post(stub: LlmStub, body: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=stub.base_url, timeout=30) as client:
        return await client.post(
            "/chat/completions", json=body, headers={"Authorization": "Bearer sk-test"}
        )


async def test_base_url_ends_in_v1(llm_stub: LlmStub) -> None:
    assert llm_stub.base_url == f"http://127.0.0.1:{llm_stub.port}/v1"


async def test_echoes_the_last_user_message_with_usage(llm_stub: LlmStub) -> None:
    response = await _post(
        llm_stub,
        _body({"role": "system", "content": "Be terse & kind"}, {"role": "user", "content": "hi"}),
    )
    assert response.status_code == 200
    document = response.json()
    assert document["model"] == "stub-model"
    assert document["choices"][0]["message"] == {"role": "assistant", "content": "Echo: hi"}
    assert document["choices"][0]["finish_reason"] == "stop"
    assert document["usage"]["prompt_tokens"] == PROMPT_TOKENS
    assert document["usage"]["completion_tokens"] == COMPLETION_TOKENS


async def test_call_tool_asks_for_one_tool_call(llm_stub: LlmStub) -> None:
    response = await _post(
        llm_stub, _body({"role": "user", "content": 'please CALL_TOOL math/add {"a": 1, "b": 2}'})
    )
    message = response.json()["choices"][0]["message"]
    assert response.json()["choices"][0]["finish_reason"] == "tool_calls"
    assert message["content"] is None
    [call] = message["tool_calls"]
    assert call["type"] == "function"
    assert call["id"].startswith("call_")
    assert call["function"]["name"] == "math__add"
    assert json.loads(call["function"]["arguments"]) == {"a": 1, "b": 2}


async def test_call_tool_without_arguments_sends_an_empty_object(llm_stub: LlmStub) -> None:
    response = await _post(llm_stub, _body({"role": "user", "content": "CALL_TOOL ops/ping"}))
    [call] = response.json()["choices"][0]["message"]["tool_calls"]
    assert call["function"]["name"] == "ops__ping"
    assert json.loads(call["function"]["arguments"]) == {}


async def test_a_tool_message_gets_a_final_answer_quoting_it(llm_stub: LlmStub) -> None:
    response = await _post(
        llm_stub,
        _body(
            {"role": "user", "content": "CALL_TOOL math/add {}"},
            {"role": "assistant", "content": None, "tool_calls": []},
            {"role": "tool", "tool_call_id": "call_1", "content": '{"sum": 3}'},
        ),
    )
    message = response.json()["choices"][0]["message"]
    assert message == {"role": "assistant", "content": 'Tool said: {"sum": 3}'}


async def test_fail500_and_garbage(llm_stub: LlmStub) -> None:
    failed = await _post(llm_stub, _body({"role": "user", "content": "FAIL500 now"}))
    assert failed.status_code == 500
    garbage = await _post(llm_stub, _body({"role": "user", "content": "GARBAGE please"}))
    assert garbage.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(garbage.content)


async def test_slow_sleeps_before_answering(llm_stub: LlmStub) -> None:
    async with httpx.AsyncClient(base_url=llm_stub.base_url) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.post(
                "/chat/completions",
                json=_body({"role": "user", "content": "SLOW30"}),
                timeout=0.5,
            )
        # A short sleep then answers as usual.
        response = await client.post(
            "/chat/completions", json=_body({"role": "user", "content": "SLOW0.1 hi"}), timeout=30
        )
    assert response.json()["choices"][0]["message"]["content"] == "Echo: SLOW0.1 hi"


async def test_records_every_body_until_cleared(llm_stub: LlmStub) -> None:
    llm_stub.clear()
    first = _body({"role": "user", "content": "one & two"})
    second = _body({"role": "user", "content": "FAIL500"})
    await _post(llm_stub, first)
    await _post(llm_stub, second)
    assert llm_stub.requests() == [first, second]
    assert llm_stub.authorizations() == ["Bearer sk-test", "Bearer sk-test"]
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{llm_stub.port}") as client:
        listed = await client.get("/_requests")
        assert listed.json() == [first, second]
        cleared = await client.delete("/_requests")
        assert cleared.status_code == 204
        assert (await client.get("/_requests")).json() == []


async def test_rejects_a_request_without_messages(llm_stub: LlmStub) -> None:
    response = await _post(llm_stub, {"model": "m"})
    assert response.status_code == 400
