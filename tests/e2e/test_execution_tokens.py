"""A run's own token, used from inside the function: refused by every management route, still
good on the runtime API, and unable to get past MAX_EXECUTION_DEPTH by submitting again."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from sinas_devstack.stack import Stack

from .helpers import (
    CreatedUser,
    FunctionFactory,
    UserFactory,
    enqueue,
    query_one,
    wait_for_status,
)

# Calls each (method, path, body) with the run's token, as an attacker's function code would.
PROBE_CODE = """
import json, urllib.error, urllib.request

def call(context, method, path, body):
    request = urllib.request.Request(
        context["api_url"] + path,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": "Bearer " + context["access_token"],
                 "Content-Type": "application/json"},
        method=method,
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            text = reply.read().decode()
            return {"status": reply.status, "body": json.loads(text) if text else None}
    except urllib.error.HTTPError as exc:
        return {"status": exc.code, "body": json.loads(exc.read().decode() or "null")}

def handler(input_data, context):
    return {"answers": [call(context, *each) for each in input_data["calls"]]}
"""

# Enqueues itself (or a batch of itself) with its own token, one level deeper each time.
CHAIN_CODE = """
import json, urllib.error, urllib.request

def handler(input_data, context):
    level, via = input_data["level"], input_data["via"]
    child = {"level": level + 1, "via": via}
    if via == "batch":
        path, body = "/functions/{ns}/{name}/execute/batch", {"inputs": [child]}
    else:
        path, body = "/functions/{ns}/{name}/execute/async", {"input": child}
    request = urllib.request.Request(
        context["api_url"] + path,
        data=json.dumps(body).encode(),
        headers={"Authorization": "Bearer " + context["access_token"],
                 "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            answer = json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return {"level": level, "refused": exc.code, "body": json.loads(exc.read())}
    return {"level": level, "child": (answer.get("execution_ids") or [None])[0]
            or answer["execution_id"]}
"""

MAX_EXECUTION_DEPTH = 4  # the default the stack runs with


def _sample(schema: dict[str, Any], components: dict[str, Any]) -> Any:
    """A small value the gateway's validation accepts for `schema`, so that a request reaches
    the scheduler, whose answer is what this test is about."""
    if "$ref" in schema:
        return _sample(components[schema["$ref"].rsplit("/", 1)[-1]], components)
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            options = [s for s in schema[key] if s.get("type") != "null"]
            return _sample(options[0], components)
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        properties = schema.get("properties", {})
        return {name: _sample(properties[name], components) for name in schema.get("required", [])}
    if kind == "array":
        return [_sample(schema.get("items", {}), components)] * schema.get("minItems", 0)
    if kind == "integer":
        return max(int(schema.get("minimum", 1)), int(schema.get("exclusiveMinimum", 0)) + 1)
    if kind == "number":
        return 1.0
    if kind == "boolean":
        return False
    if kind == "string":
        if schema.get("format") == "date-time":
            return (datetime.now(UTC) + timedelta(days=1)).isoformat()
        return "probe" + "x" * max(schema.get("minLength", 0) - 5, 0)
    return {}


async def _management_calls(client: httpx.AsyncClient) -> list[tuple[str, str, Any]]:
    """Every method of every /api/v1 path the gateway serves, with a body it accepts."""
    document = (await client.get("/openapi.json")).json()
    components = document.get("components", {}).get("schemas", {})
    calls: list[tuple[str, str, Any]] = []
    for path, operations in document["paths"].items():
        if not path.startswith("/api/v1/"):
            continue
        for method, operation in operations.items():
            concrete = re.sub(r"\{[^}]+\}", "probe", path)
            required = [
                p["name"]
                for p in operation.get("parameters", [])
                if p.get("in") == "query" and p.get("required")
            ]
            if required:
                concrete += "?" + "&".join(f"{name}=probe" for name in required)
            content = operation.get("requestBody", {}).get("content", {})
            schema = content.get("application/json", {}).get("schema")
            body = None if schema is None else _sample(schema, components)
            calls.append((method.upper(), concrete, body))
    return calls


async def test_an_execution_token_is_refused_on_every_management_route(
    stack: Stack,
    admin: httpx.AsyncClient,
    create_function: FunctionFactory,
    create_user: UserFactory,
) -> None:
    probe = await create_function(PROBE_CODE)
    echo = await create_function()
    user = await create_user(
        [
            f"sinas.functions/{probe.namespace}/{probe.name}.execute:own",
            f"sinas.functions/{echo.namespace}/{echo.name}.execute:own",
            "sinas.executions.read:own",
        ]
    )
    management = await _management_calls(admin)
    # The routes the issue names, at least: a vanished one would make this test say little.
    paths = {(method, path.split("?")[0]) for method, path, _ in management}
    for expected in (
        ("POST", "/api/v1/functions"),
        ("PUT", "/api/v1/functions/probe/probe"),
        ("POST", "/api/v1/agents"),
        ("POST", "/api/v1/llm-providers"),
        ("POST", "/api/v1/roles"),
        ("POST", "/api/v1/users"),
        ("POST", "/api/v1/api-keys"),
    ):
        assert expected in paths, expected
    runtime = [
        ("GET", "/auth/me", None),
        ("POST", echo.async_path, {"input": {"from": "the run"}}),
    ]

    admin_id = (await admin.get("/auth/me")).json()["id"]
    # An ordinary user's run, and the admin's own: neither token can manage anything.
    runner: CreatedUser | None
    for runner in (user, None):
        client = admin if runner is None else runner.client
        document = await wait_for_status(
            client,
            await enqueue(client, probe, input={"calls": [list(c) for c in management + runtime]}),
        )
        assert document["status"] == "COMPLETED", (document["error"], document["traceback"])
        answers = document["output_data"]["answers"]
        assert len(answers) == len(management) + len(runtime)
        for (method, path, _), answer in zip(management, answers, strict=False):
            assert answer["status"] == 403, (method, path, answer)
            assert answer["body"]["reason"] == "execution_token_not_allowed", (method, path)
            assert "execution token" in answer["body"]["detail"]
        me, enqueued = answers[len(management) :]
        # The same token still works within the runtime API.
        assert me["status"] == 200 and me["body"]["id"] == (
            admin_id if runner is None else runner.id
        )
        assert enqueued["status"] == 202, enqueued
        child = await wait_for_status(client, enqueued["body"]["execution_id"])
        assert child["status"] == "COMPLETED" and child["output_data"] == {
            "echo": {"from": "the run"}
        }
    # Nothing was made by all of that: the user still has the one key the test gave them.
    assert query_one(
        stack.config.database_url, "SELECT count(*) FROM api_keys WHERE user_id = %s", user.id
    ) == (1,)


async def test_the_depth_limit_holds_through_a_chain_of_submits(
    stack: Stack, create_function: FunctionFactory, create_user: UserFactory
) -> None:
    namespace, name = "chain", "deeper"
    fn = await create_function(
        CHAIN_CODE.replace("{ns}", namespace).replace("{name}", name),
        namespace=namespace,
        name=name,
    )
    user = await create_user(
        [f"sinas.functions/{namespace}/{name}.execute:own", "sinas.executions.read:own"]
    )
    for via in ("enqueue", "batch"):
        document = await wait_for_status(
            user.client, await enqueue(user.client, fn, input={"level": 0, "via": via})
        )
        levels = []
        while True:
            assert document["status"] == "COMPLETED", (document["error"], document["traceback"])
            output = document["output_data"]
            levels.append(output["level"])
            # Each child is recorded one level deeper than the run that submitted it.
            depth = query_one(
                stack.config.database_url,
                "SELECT depth FROM executions WHERE id = %s",
                document["execution_id"],
            )
            assert depth == (output["level"],), document
            if "refused" in output:
                break
            document = await wait_for_status(user.client, output["child"])
        # Depth 0 is the user's own submit; depths 0..MAX run, the next one is refused.
        assert levels == list(range(MAX_EXECUTION_DEPTH + 1)), via
        assert output["refused"] == 400, output
        assert output["body"]["reason"] == "execution_depth_exceeded", output
        assert json.dumps(output["body"]["detail"]).lower().count("depth"), output
