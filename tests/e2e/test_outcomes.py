"""How a run ends and what the code sees: errors, timeouts, schemas, context, isolation."""

from __future__ import annotations

import httpx

from sinas_devstack.stack import Stack

from .helpers import FunctionFactory, UserFactory, enqueue, wait_for_status


async def test_raising_function_fails_with_error_and_traceback(
    admin: httpx.AsyncClient, create_function: FunctionFactory
) -> None:
    fn = await create_function(
        "def helper():\n    raise KeyError('missing thing')\n"
        "def handler(input_data, context):\n    helper()\n"
    )
    document = await wait_for_status(admin, await enqueue(admin, fn))
    assert document["status"] == "FAILED"
    assert "missing thing" in document["error"]
    assert "KeyError" in document["error"]
    assert "helper" in document["traceback"]
    assert document["output_data"] is None


async def test_timeout_fails_the_execution_and_the_function_still_serves(
    admin: httpx.AsyncClient, create_function: FunctionFactory
) -> None:
    fn = await create_function(
        "import time\n"
        "def handler(input_data, context):\n"
        "    if input_data.get('quick'):\n"
        "        return {'quick': True}\n"
        "    time.sleep(30)\n",
        timeout=1,
    )
    document = await wait_for_status(admin, await enqueue(admin, fn, input={}))
    assert document["status"] == "FAILED"
    assert "timed out" in document["error"]
    # The killed worker is replaced: the next run of the same function completes.
    quick = await wait_for_status(admin, await enqueue(admin, fn, input={"quick": True}))
    assert quick["status"] == "COMPLETED", quick


async def test_output_schema_violation_fails(
    admin: httpx.AsyncClient, create_function: FunctionFactory
) -> None:
    fn = await create_function(
        "def handler(input_data, context):\n    return {'count': 'many'}\n",
        output_schema={
            "type": "object",
            "properties": {"count": {"type": "integer"}},
            "required": ["count"],
        },
    )
    document = await wait_for_status(admin, await enqueue(admin, fn))
    assert document["status"] == "FAILED"
    assert "utput" in document["error"]


CONTEXT_CODE = """
import json, os, urllib.request

def handler(input_data, context):
    request = urllib.request.Request(
        context["api_url"] + "/auth/me",
        headers={"Authorization": "Bearer " + context["access_token"]},
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        me = json.loads(reply.read())
    return {"context": context, "me": me, "environ": dict(os.environ)}
"""


async def test_context_and_token_act_as_the_user(
    stack: Stack, create_function: FunctionFactory, create_user: UserFactory
) -> None:
    fn = await create_function(CONTEXT_CODE)
    user = await create_user(
        [f"sinas.functions/{fn.namespace}/{fn.name}.execute:own", "sinas.executions.read:own"]
    )
    execution_id = await enqueue(user.client, fn, trigger_id="ctx-test")
    document = await wait_for_status(user.client, execution_id)
    assert document["status"] == "COMPLETED", (document["error"], document["traceback"])
    output = document["output_data"]
    context = output["context"]
    assert context["user_id"] == user.id
    assert context["user_email"] == user.email
    assert context["execution_id"] == execution_id
    assert context["trigger_type"] == "API"
    assert context["trigger_id"] == "ctx-test"
    assert context["batch_id"] is None
    assert context["chat_id"] is None
    assert context["api_url"] == stack.gateway_url
    assert output["me"]["id"] == user.id

    # The token also works on the runtime API as that user.
    async with httpx.AsyncClient(
        base_url=stack.gateway_url,
        headers={"Authorization": f"Bearer {context['access_token']}"},
    ) as as_user:
        reply = await as_user.get(f"/executions/{execution_id}")
        assert reply.status_code == 200, reply.text

    # None of the executor's own settings or secrets reach the code.
    environ = output["environ"]
    for leaked in ("DATABASE_URL", "NATS_URL", "SCHEDULER_ADDR", "SINAS_BOOTSTRAP_ADMIN_KEY"):
        assert leaked not in environ
    assert stack.config.admin_key not in str(environ)


async def test_one_execution_cannot_read_anothers_files(
    admin: httpx.AsyncClient, create_function: FunctionFactory, create_user: UserFactory
) -> None:
    writer = await create_function(
        "import os\n"
        "def handler(input_data, context):\n"
        "    with open('secret.txt', 'w') as f:\n"
        "        f.write('top secret')\n"
        "    return {'path': os.path.abspath('secret.txt')}\n"
    )
    reader = await create_function(
        "def handler(input_data, context):\n"
        "    try:\n"
        "        with open(input_data['path']) as f:\n"
        "            return {'read': f.read()}\n"
        "    except OSError as exc:\n"
        "        return {'refused': type(exc).__name__}\n"
    )
    other = await create_user(
        [
            f"sinas.functions/{reader.namespace}/{reader.name}.execute:own",
            "sinas.executions.read:own",
        ]
    )
    written = await wait_for_status(admin, await enqueue(admin, writer))
    assert written["status"] == "COMPLETED", written
    path = written["output_data"]["path"]

    for client in (admin, other.client):
        document = await wait_for_status(
            client, await enqueue(client, reader, input={"path": path})
        )
        assert document["status"] == "COMPLETED", (document["error"], document["traceback"])
        assert "read" not in document["output_data"], document


RECURSIVE_CODE = """
import json, urllib.error, urllib.request

def handler(input_data, context):
    request = urllib.request.Request(
        context["api_url"] + "/functions/{ns}/{name}/execute/async",
        data=json.dumps({"input": {"level": input_data["level"] + 1}}).encode(),
        headers={"Authorization": "Bearer " + context["access_token"],
                 "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return {"level": input_data["level"], "child": json.loads(reply.read())["execution_id"]}
    except urllib.error.HTTPError as exc:
        return {"level": input_data["level"], "refused": exc.code, "detail": exc.read().decode()}
"""


async def test_recursion_is_bounded_by_max_execution_depth(
    admin: httpx.AsyncClient, create_function: FunctionFactory
) -> None:
    namespace, name = "recursion", "descend"
    fn = await create_function(
        RECURSIVE_CODE.replace("{ns}", namespace).replace("{name}", name),
        namespace=namespace,
        name=name,
    )
    document = await wait_for_status(admin, await enqueue(admin, fn, input={"level": 0}))
    levels = []
    while True:
        assert document["status"] == "COMPLETED", (document["error"], document["traceback"])
        output = document["output_data"]
        levels.append(output["level"])
        if "refused" in output:
            break
        document = await wait_for_status(admin, output["child"])
    # Depth 0 is the user's own submit; executions at depths 0..4 run, depth 5 is refused.
    assert levels == [0, 1, 2, 3, 4]
    assert output["refused"] == 400
    assert "depth" in output["detail"].lower()


async def test_standard_library_imports_work_in_the_sandbox(
    admin: httpx.AsyncClient, create_function: FunctionFactory
) -> None:
    fn = await create_function(
        "def handler(input_data, context):\n"
        "    import sqlite3, xml.dom.minidom, zoneinfo, encodings.idna\n"
        "    db = sqlite3.connect(':memory:')\n"
        "    (value,) = db.execute('select 6 * 7').fetchone()\n"
        "    node = xml.dom.minidom.parseString('<a>b</a>').documentElement.tagName\n"
        "    idna = 'b\\u00fccher.de'.encode('idna').decode()\n"
        "    return {'value': value, 'node': node, 'idna': idna}\n"
    )
    document = await wait_for_status(admin, await enqueue(admin, fn))
    assert document["status"] == "COMPLETED", (document["error"], document["traceback"])
    assert document["output_data"] == {"value": 42, "node": "a", "idna": "xn--bcher-kva.de"}
