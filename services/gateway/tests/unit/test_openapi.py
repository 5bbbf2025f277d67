"""The OpenAPI document names every path with its request and response schemas."""

from __future__ import annotations

from typing import Any

import httpx

EXPECTED = {
    ("post", "/functions/{namespace}/{name}/execute/async"): ("AsyncExecuteRequest", "202"),
    ("post", "/functions/{namespace}/{name}/execute"): ("SyncExecuteRequest", "200"),
    ("post", "/functions/{namespace}/{name}/execute/batch"): ("BatchExecuteRequest", "202"),
    ("get", "/batches"): (None, "200"),
    ("get", "/batches/{batch_id}"): (None, "200"),
    ("get", "/batches/{batch_id}/executions"): (None, "200"),
    ("get", "/executions/{execution_id}"): (None, "200"),
    ("get", "/executions"): (None, "200"),
    ("post", "/executions/{execution_id}/continue"): ("ContinueRequest", "200"),
    ("post", "/executions/{execution_id}/cancel"): (None, "200"),
    ("post", "/batches/{batch_id}/cancel"): (None, "200"),
    ("get", "/auth/me"): (None, "200"),
    ("get", "/.well-known/jwks.json"): (None, "200"),
    ("get", "/health"): (None, "200"),
    ("post", "/api/v1/functions"): ("FunctionCreate", "201"),
    ("get", "/api/v1/functions/{namespace}/{name}"): (None, "200"),
    ("put", "/api/v1/functions/{namespace}/{name}"): ("FunctionUpdate", "200"),
    ("delete", "/api/v1/functions/{namespace}/{name}"): (None, "204"),
    ("post", "/api/v1/roles"): ("RoleCreate", "201"),
    ("post", "/api/v1/users"): ("UserCreate", "201"),
    ("post", "/api/v1/api-keys"): ("ApiKeyCreate", "201"),
    ("get", "/api/v1/api-keys"): (None, "200"),
    ("delete", "/api/v1/api-keys/{key_id}"): (None, "200"),
    ("post", "/api/v1/llm-providers"): ("LlmProviderCreate", "201"),
    ("post", "/api/v1/agents"): ("AgentCreate", "201"),
    ("get", "/api/v1/agents/{namespace}/{name}"): (None, "200"),
    ("put", "/api/v1/agents/{namespace}/{name}"): ("AgentUpdate", "200"),
    ("delete", "/api/v1/agents/{namespace}/{name}"): (None, "204"),
    ("post", "/agents/{namespace}/{name}/execute/async"): ("AgentRunRequest", "202"),
    ("post", "/agents/{namespace}/{name}/invoke"): ("AgentInvokeRequest", "200"),
    ("post", "/agents/{namespace}/{name}/chats/batch"): ("AgentBatchRequest", "202"),
    ("get", "/chats"): (None, "200"),
    ("get", "/chats/{chat_id}"): (None, "200"),
}


def _ref(schema: dict[str, Any]) -> str:
    return str(schema.get("$ref") or schema.get("items", {}).get("$ref", "")).rsplit("/", 1)[-1]


async def test_every_route_documents_its_bodies(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()

    operations = {
        (method, path): operation
        for path, item in document["paths"].items()
        for method, operation in item.items()
    }
    assert set(operations) == set(EXPECTED)
    for key, (request_model, success) in EXPECTED.items():
        operation = operations[key]
        if request_model is not None:
            body = operation["requestBody"]["content"]["application/json"]["schema"]
            assert _ref(body) == request_model, key
        assert success in operation["responses"], key
        if success != "204":
            schema = operation["responses"][success]["content"]["application/json"]["schema"]
            assert _ref(schema) or schema.get("type"), key
    assert (
        _ref(
            operations[("get", "/executions")]["responses"]["200"]["content"]["application/json"][
                "schema"
            ]
        )
        == "ExecutionDocument"
    )
    assert "ErrorBody" in document["components"]["schemas"]
    assert {"HTTPBearer", "APIKeyHeader"} <= set(document["components"]["securitySchemes"])
