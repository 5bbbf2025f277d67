"""Who may do what: credentials, permissions, and other users' executions."""

from __future__ import annotations

import base64
import json
import time
import uuid

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sinas_devstack.stack import Stack
from sinas_scheduler.encryption import FernetCipher

from .helpers import FunctionFactory, UserFactory, enqueue, query_one, wait_for_status


def _signing_key(stack: Stack) -> tuple[str, str]:
    row = query_one(
        stack.config.database_url,
        "SELECT kid, private_key_pem FROM signing_keys WHERE retired_at IS NULL LIMIT 1",
    )
    assert row is not None
    # Stored encrypted with the scheduler's encryption key, which the test holds as its owner.
    return str(row[0]), FernetCipher(stack.config.encryption_key).decrypt(str(row[1]))


def _admin_id(stack: Stack) -> str:
    row = query_one(
        stack.config.database_url, "SELECT id FROM users WHERE email = 'admin@sinas.local'"
    )
    assert row is not None
    return str(row[0])


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


async def test_missing_malformed_expired_and_forged_tokens_are_401(
    stack: Stack, admin: httpx.AsyncClient, create_function: FunctionFactory
) -> None:
    fn = await create_function(
        "def handler(input_data, context):\n    return {'token': context['access_token']}\n"
    )
    document = await wait_for_status(admin, await enqueue(admin, fn))
    valid = document["output_data"]["token"]
    claims = jwt.decode(valid, options={"verify_signature": False})
    kid, private_pem = _signing_key(stack)
    now = int(time.time())
    expired = jwt.encode(
        {**claims, "iat": now - 600, "exp": now - 300}, private_pem, "EdDSA", {"kid": kid}
    )
    stranger = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    wrong_key = jwt.encode(claims, stranger, "EdDSA", {"kid": kid})
    alg_none = _b64({"alg": "none", "typ": "JWT", "kid": kid}) + "." + _b64(claims) + "."

    async with httpx.AsyncClient(base_url=stack.gateway_url) as anonymous:
        reply = await anonymous.get("/auth/me")
        assert reply.status_code == 401
        assert reply.json()["detail"] == "Missing authorization header"

        reply = await anonymous.get("/auth/me", headers={"Authorization": f"Bearer {valid}"})
        assert reply.status_code == 200, reply.text
        assert reply.json()["email"] == "admin@sinas.local"

        for bad in (expired, wrong_key, alg_none, "not-a-token", "sk-unknown-key"):
            reply = await anonymous.get("/auth/me", headers={"Authorization": f"Bearer {bad}"})
            assert reply.status_code == 401, (bad, reply.text)
            assert reply.json()["detail"] == "Invalid or expired credentials"
        reply = await anonymous.get("/auth/me", headers={"Authorization": "Basic abc"})
        assert reply.status_code == 401


async def test_api_key_works_as_bearer_and_x_api_key(
    stack: Stack, create_user: UserFactory
) -> None:
    user = await create_user(["sinas.users.read:own"])
    async with httpx.AsyncClient(base_url=stack.gateway_url) as anonymous:
        for headers in ({"Authorization": f"Bearer {user.key}"}, {"X-API-Key": user.key}):
            reply = await anonymous.get("/auth/me", headers=headers)
            assert reply.status_code == 200, reply.text
            me = reply.json()
            assert me["id"] == user.id
            assert me["email"] == user.email
            assert len(me["roles"]) == 1
            assert "created_at" in me and "last_login_at" in me


async def test_jwks_is_public_and_verifies_execution_tokens(
    stack: Stack, admin: httpx.AsyncClient, create_function: FunctionFactory
) -> None:
    async with httpx.AsyncClient(base_url=stack.gateway_url) as anonymous:
        reply = await anonymous.get("/.well-known/jwks.json")
    assert reply.status_code == 200
    keys = reply.json()["keys"]
    assert keys and all(key["kty"] == "OKP" and key["crv"] == "Ed25519" for key in keys)

    fn = await create_function(
        "def handler(input_data, context):\n    return {'token': context['access_token']}\n"
    )
    document = await wait_for_status(admin, await enqueue(admin, fn))
    token = document["output_data"]["token"]
    header = jwt.get_unverified_header(token)
    jwk = next(key for key in keys if key["kid"] == header["kid"])
    public_key = jwt.PyJWK(jwk).key
    claims = jwt.decode(token, public_key, algorithms=["EdDSA"], options={"verify_aud": False})
    assert claims["sub"] == _admin_id(stack)
    # Function timeout (default 300 s) plus 300 s.
    assert claims["exp"] - claims["iat"] == 600


async def test_permission_matching_on_execute(
    admin: httpx.AsyncClient, create_function: FunctionFactory, create_user: UserFactory
) -> None:
    fn = await create_function()
    nobody = await create_user(["sinas.users.read:own"])
    exact = await create_user([f"sinas.functions/{fn.namespace}/{fn.name}.execute:own"])
    wildcard = await create_user(["sinas.functions/*/*.execute:own"])
    scope_all = await create_user([f"sinas.functions/{fn.namespace}/*.execute:all"])
    no_path = await create_user(["sinas.functions.execute:own"])
    other_fn = await create_user([f"sinas.functions/{fn.namespace}/other.execute:all"])

    reply = await nobody.client.post(fn.async_path, json={"input": {}})
    assert reply.status_code == 403
    assert reply.json()["detail"] == "Not authorized to execute this function"
    for user in (no_path, other_fn):
        assert (await user.client.post(fn.async_path, json={"input": {}})).status_code == 403
    for user in (exact, wildcard, scope_all):
        reply = await user.client.post(fn.async_path, json={"input": {}})
        assert reply.status_code == 202, reply.text

    reply = await exact.client.post(
        f"/functions/{fn.namespace}/missing/execute/async", json={"input": {}}
    )
    assert reply.status_code == 404
    assert reply.json()["detail"] == "Function not found"


async def test_other_users_executions_are_404_unless_read_all(
    admin: httpx.AsyncClient, create_function: FunctionFactory, create_user: UserFactory
) -> None:
    fn = await create_function()
    perms = [f"sinas.functions/{fn.namespace}/{fn.name}.execute:own", "sinas.executions.read:own"]
    alice = await create_user(perms)
    bob = await create_user(perms)
    auditor = await create_user(["sinas.executions.read:all"])
    execution_id = await enqueue(alice.client, fn, input={"secret": "alice's"})
    await wait_for_status(alice.client, execution_id)

    reply = await bob.client.get(f"/executions/{execution_id}")
    assert reply.status_code == 404
    assert reply.json()["detail"] == "Execution not found"
    assert (await bob.client.get(f"/executions/{uuid.uuid4()}")).status_code == 404
    assert (await bob.client.get("/executions/not-a-uuid")).status_code == 404
    listed = (await bob.client.get("/executions", params={"function_name": fn.name})).json()
    assert listed == []

    reply = await auditor.client.get(f"/executions/{execution_id}")
    assert reply.status_code == 200
    listed = (await auditor.client.get("/executions", params={"function_name": fn.name})).json()
    assert [doc["execution_id"] for doc in listed] == [execution_id]


async def test_management_api_is_admin_only(
    create_user: UserFactory, admin: httpx.AsyncClient
) -> None:
    user = await create_user(["sinas.functions/*/*.execute:own", "sinas.api_keys.create:own"])
    body = {
        "namespace": "blocked",
        "name": "fn",
        "code": "def handler(input_data, context):\n    return {}\n",
        "input_schema": {"type": "object"},
        "output_schema": {"type": "object"},
    }
    assert (await user.client.post("/api/v1/functions", json=body)).status_code == 403
    assert (
        await user.client.post("/api/v1/roles", json={"name": "x", "permissions": ["sinas.*:all"]})
    ).status_code == 403
    assert (
        await user.client.post("/api/v1/users", json={"email": "x@example.com", "roles": []})
    ).status_code == 403
    reply = await user.client.post("/api/v1/api-keys", json={"name": "mine"})
    assert reply.status_code == 201, reply.text
    assert reply.json()["user_id"] == user.id
    admin_id = (await admin.get("/auth/me")).json()["id"]
    reply = await user.client.post("/api/v1/api-keys", json={"name": "theirs", "user_id": admin_id})
    assert reply.status_code == 403
