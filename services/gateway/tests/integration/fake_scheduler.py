"""An in-memory scheduler behind real gRPC servicers, raising sinas_common errors as the real
one does, so the whole error path (interceptor → rich status → client → HTTP) runs."""

from __future__ import annotations

import asyncio
import itertools
import secrets
from dataclasses import dataclass, field
from typing import Any

import grpc
import jsonschema

from sinas_common import errors
from sinas_common.grpc_server import GrpcServer
from sinas_common.jsoncodec import dump_json, load_json
from sinas_common.settings import InternalTlsSettings
from sinas_common.timeconv import to_timestamp, utcnow
from sinas_proto.scheduler.v1 import scheduler_pb2 as pb
from sinas_proto.scheduler.v1 import scheduler_pb2_grpc as pb_grpc

ADMIN_TOKEN = "Bearer admin-jwt"
USER_KEY = "sk-user-key"
OTHER_KEY = "sk-other-key"
BODY_LIMIT = 16 * 1024
TERMINAL = {
    pb.EXECUTION_STATUS_COMPLETED,
    pb.EXECUTION_STATUS_FAILED,
    pb.EXECUTION_STATUS_CANCELLED,
}


@dataclass
class FakeSchedulerState:
    """Users by credential, their API keys, functions, executions, and every call's
    metadata."""

    users: dict[str, pb.User] = field(default_factory=dict)
    admins: set[str] = field(default_factory=set)
    functions: dict[tuple[str, str], pb.Function] = field(default_factory=dict)
    executions: dict[str, pb.Execution] = field(default_factory=dict)
    # Newest first, as the scheduler lists them.
    api_keys: list[pb.ApiKey] = field(default_factory=list)
    calls: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    ids: itertools.count[int] = field(default_factory=itertools.count)

    def new_id(self, prefix: str) -> str:
        return f"{prefix}-{next(self.ids)}"

    def caller(self, method: str, context: grpc.aio.ServicerContext[Any, Any]) -> pb.User:
        metadata = {key: value for key, value in context.invocation_metadata() or ()}
        self.calls.append((method, metadata))
        credential = metadata.get("x-api-key")
        if credential is None and "authorization" in metadata:
            credential = metadata["authorization"].removeprefix("Bearer ")
        if credential is None:
            raise errors.MissingCredentials("Missing authorization header")
        user = self.users.get(credential)
        if user is None:
            raise errors.Unauthenticated("Invalid or expired credentials")
        return user

    def admin(self, method: str, context: grpc.aio.ServicerContext[Any, Any]) -> pb.User:
        user = self.caller(method, context)
        if user.id not in self.admins:
            raise errors.PermissionDenied("Not authorized")
        return user


def _field_path(error: jsonschema.ValidationError) -> str:
    path = "input"
    parts = list(error.absolute_path)
    if error.validator == "required" and isinstance(error.instance, dict):
        parts += [name for name in error.validator_value if name not in error.instance][:1]
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


class FakeIdentity(pb_grpc.IdentityServiceServicer):
    def __init__(self, state: FakeSchedulerState) -> None:
        self.state = state

    async def GetMe(self, request: pb.GetMeRequest, context: Any) -> pb.GetMeResponse:
        return pb.GetMeResponse(user=self.state.caller("GetMe", context))

    async def GetJwks(self, request: pb.GetJwksRequest, context: Any) -> pb.GetJwksResponse:
        self.state.calls.append(("GetJwks", dict(context.invocation_metadata() or ())))
        jwks = {
            "keys": [
                {
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
                    "kid": "k1",
                }
            ]
        }
        return pb.GetJwksResponse(jwks_json=dump_json(jwks))

    async def CreateRole(
        self, request: pb.CreateRoleRequest, context: Any
    ) -> pb.CreateRoleResponse:
        self.state.admin("CreateRole", context)
        role = pb.Role(
            id=self.state.new_id("role"), name=request.name, permissions=request.permissions
        )
        return pb.CreateRoleResponse(role=role)

    async def CreateUser(
        self, request: pb.CreateUserRequest, context: Any
    ) -> pb.CreateUserResponse:
        self.state.admin("CreateUser", context)
        user = pb.User(
            id=self.state.new_id("user"),
            email=request.email,
            roles=request.roles,
            created_at=to_timestamp(utcnow()),
        )
        return pb.CreateUserResponse(user=user)

    async def CreateApiKey(
        self, request: pb.CreateApiKeyRequest, context: Any
    ) -> pb.CreateApiKeyResponse:
        caller = self.state.caller("CreateApiKey", context)
        if request.user_id and request.user_id != caller.id and caller.id not in self.state.admins:
            raise errors.PermissionDenied("Not authorized")
        # Longer than the prefix, as real keys are, so a listing can't contain the key whole.
        key = f"sk-{self.state.new_id('key')}-{secrets.token_urlsafe(16)}"
        self.state.users[key] = caller
        record = pb.ApiKey(
            id=self.state.new_id("apikey"),
            name=request.name,
            user_id=request.user_id or caller.id,
            prefix=key[:8],
            created_at=to_timestamp(utcnow()),
            expires_at=request.expires_at if request.HasField("expires_at") else None,
        )
        self.state.api_keys.insert(0, record)
        return pb.CreateApiKeyResponse(
            id=record.id,
            name=record.name,
            user_id=record.user_id,
            key=key,
            created_at=record.created_at,
            expires_at=record.expires_at if record.HasField("expires_at") else None,
            prefix=record.prefix,
        )

    async def ListApiKeys(
        self, request: pb.ListApiKeysRequest, context: Any
    ) -> pb.ListApiKeysResponse:
        caller = self.state.caller("ListApiKeys", context)
        target = request.user_id or caller.id
        if target != caller.id and caller.id not in self.state.admins:
            raise errors.PermissionDenied("Not authorized")
        return pb.ListApiKeysResponse(
            api_keys=[k for k in self.state.api_keys if k.user_id == target]
        )

    async def RevokeApiKey(
        self, request: pb.RevokeApiKeyRequest, context: Any
    ) -> pb.RevokeApiKeyResponse:
        caller = self.state.caller("RevokeApiKey", context)
        for record in self.state.api_keys:
            if record.id == request.id and (
                record.user_id == caller.id or caller.id in self.state.admins
            ):
                if not record.HasField("revoked_at"):
                    record.revoked_at.GetCurrentTime()
                return pb.RevokeApiKeyResponse(api_key=record)
        raise errors.ApiKeyNotFound()


class FakeFunctions(pb_grpc.FunctionServiceServicer):
    def __init__(self, state: FakeSchedulerState) -> None:
        self.state = state

    def _find(self, namespace: str, name: str) -> pb.Function:
        found = self.state.functions.get((namespace, name))
        if found is None:
            raise errors.FunctionNotFound("Function not found")
        return found

    async def CreateFunction(
        self, request: pb.CreateFunctionRequest, context: Any
    ) -> pb.CreateFunctionResponse:
        user = self.state.admin("CreateFunction", context)
        if (request.namespace, request.name) in self.state.functions:
            raise errors.AlreadyExists(
                f"Function {request.namespace}/{request.name} already exists"
            )
        now = to_timestamp(utcnow())
        function = pb.Function(
            id=self.state.new_id("fn"),
            namespace=request.namespace,
            name=request.name,
            description=request.description,
            code=request.code,
            input_schema_json=request.input_schema_json,
            output_schema_json=request.output_schema_json,
            timeout_seconds=request.timeout_seconds if request.HasField("timeout_seconds") else 300,
            requires_approval=request.requires_approval,
            version=1,
            owner_user_id=user.id,
            created_at=now,
            updated_at=now,
        )
        self.state.functions[(request.namespace, request.name)] = function
        return pb.CreateFunctionResponse(function=function)

    async def GetFunction(
        self, request: pb.GetFunctionRequest, context: Any
    ) -> pb.GetFunctionResponse:
        self.state.admin("GetFunction", context)
        return pb.GetFunctionResponse(function=self._find(request.namespace, request.name))

    async def UpdateFunction(
        self, request: pb.UpdateFunctionRequest, context: Any
    ) -> pb.UpdateFunctionResponse:
        self.state.admin("UpdateFunction", context)
        updated = pb.Function()
        updated.CopyFrom(self._find(request.namespace, request.name))
        for name in (
            "description",
            "code",
            "input_schema_json",
            "output_schema_json",
            "timeout_seconds",
            "requires_approval",
        ):
            if request.HasField(name):
                setattr(updated, name, getattr(request, name))
        updated.version += 1
        updated.updated_at.CopyFrom(to_timestamp(utcnow()))
        self.state.functions[(request.namespace, request.name)] = updated
        return pb.UpdateFunctionResponse(function=updated)

    async def DeleteFunction(
        self, request: pb.DeleteFunctionRequest, context: Any
    ) -> pb.DeleteFunctionResponse:
        self.state.admin("DeleteFunction", context)
        self._find(request.namespace, request.name)
        del self.state.functions[(request.namespace, request.name)]
        return pb.DeleteFunctionResponse()


class FakeExecutions(pb_grpc.ExecutionServiceServicer):
    """Runs nothing: `echo` completes with its input, `explode` fails, others stay PENDING."""

    def __init__(self, state: FakeSchedulerState) -> None:
        self.state = state

    def _owned(self, user: pb.User, execution_id: str) -> pb.Execution:
        execution = self.state.executions.get(execution_id)
        if execution is None or (execution.user_id != user.id and user.id not in self.state.admins):
            raise errors.ExecutionNotFound("Execution not found")
        return execution

    async def SubmitExecution(
        self, request: pb.SubmitExecutionRequest, context: Any
    ) -> pb.SubmitExecutionResponse:
        user = self.state.caller("SubmitExecution", context)
        function = self.state.functions.get((request.namespace, request.name))
        if function is None:
            raise errors.FunctionNotFound("Function not found")
        if request.callback_url:
            raise errors.CallbackUrlRejected("Callbacks are disabled on this instance")
        input_data = load_json(request.input_json)
        validator = jsonschema.Draft202012Validator(load_json(function.input_schema_json))
        violations = [
            errors.FieldViolation(field=_field_path(error), description=error.message)
            for error in validator.iter_errors(input_data)
        ]
        if violations:
            raise errors.SchemaViolation("Input validation failed", violations=violations)
        now = utcnow()
        execution = pb.Execution(
            execution_id=self.state.new_id("exec"),
            user_id=user.id,
            kind="function",
            namespace=request.namespace,
            function_name=request.name,
            function_version=function.version,
            status=pb.EXECUTION_STATUS_PENDING,
            input_json=request.input_json,
            trigger_type="API",
            trigger_id=request.trigger_id or "runtime-api",
            created_at=to_timestamp(now),
        )
        if request.name == "echo":
            execution.status = pb.EXECUTION_STATUS_COMPLETED
            execution.output_json = request.input_json
            execution.started_at.CopyFrom(to_timestamp(now))
            execution.completed_at.CopyFrom(to_timestamp(now))
            execution.duration_ms = 0
            execution.attempts = 1
        elif request.name == "explode":
            execution.status = pb.EXECUTION_STATUS_FAILED
            execution.error = "ZeroDivisionError: division by zero"
            execution.traceback = "Traceback (most recent call last): ..."
            execution.attempts = 1
        self.state.executions[execution.execution_id] = execution
        return pb.SubmitExecutionResponse(execution_id=execution.execution_id)

    async def SubmitExecutions(
        self, request: pb.SubmitExecutionsRequest, context: Any
    ) -> pb.SubmitExecutionsResponse:
        results = []
        for one in request.requests:
            try:
                submitted = await self.SubmitExecution(one, context)
            except errors.SinasError as exc:
                status = exc.to_status().SerializeToString()
                results.append(pb.SubmitExecutionResult(error_status=status))
            else:
                results.append(pb.SubmitExecutionResult(execution_id=submitted.execution_id))
        return pb.SubmitExecutionsResponse(results=results)

    async def WaitExecution(
        self, request: pb.WaitExecutionRequest, context: Any
    ) -> pb.WaitExecutionResponse:
        user = self.state.caller("WaitExecution", context)
        execution = self._owned(user, request.execution_id)
        if execution.status not in TERMINAL:
            await asyncio.sleep(request.timeout_seconds)
        return pb.WaitExecutionResponse(execution=execution, finished=execution.status in TERMINAL)

    async def GetExecution(
        self, request: pb.GetExecutionRequest, context: Any
    ) -> pb.GetExecutionResponse:
        user = self.state.caller("GetExecution", context)
        return pb.GetExecutionResponse(execution=self._owned(user, request.execution_id))

    async def ListExecutions(
        self, request: pb.ListExecutionsRequest, context: Any
    ) -> pb.ListExecutionsResponse:
        user = self.state.caller("ListExecutions", context)
        found = [
            execution
            for execution in reversed(self.state.executions.values())
            if execution.user_id == user.id
            and (not request.function_name or execution.function_name == request.function_name)
            and (not request.status or execution.status == request.status)
            and (not request.trigger_id or execution.trigger_id == request.trigger_id)
            and (not request.batch_id or execution.batch_id == request.batch_id)
        ]
        page = found[request.offset : request.offset + request.limit]
        return pb.ListExecutionsResponse(executions=page)


@dataclass
class FakeScheduler:
    state: FakeSchedulerState
    server: GrpcServer

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.port}"


def build_fake_scheduler(tls: InternalTlsSettings) -> FakeScheduler:
    """An unstarted fake with an admin (bearer token) and two users (API keys), serving
    mutual TLS with the `tls` certificate (the scheduler's)."""
    state = FakeSchedulerState()
    created = to_timestamp(utcnow())
    admin = pb.User(id="admin-1", email="admin@example.com", roles=["Admins"], created_at=created)
    user = pb.User(id="user-1", email="zoë@example.com", roles=["Users"], created_at=created)
    other = pb.User(id="user-2", email="other@example.com", roles=["Users"], created_at=created)
    state.users.update(
        {ADMIN_TOKEN.removeprefix("Bearer "): admin, USER_KEY: user, OTHER_KEY: other}
    )
    state.admins.add(admin.id)
    server = GrpcServer(
        bind="127.0.0.1:0",
        registrars=[
            lambda s: pb_grpc.add_IdentityServiceServicer_to_server(FakeIdentity(state), s),
            lambda s: pb_grpc.add_FunctionServiceServicer_to_server(FakeFunctions(state), s),
            lambda s: pb_grpc.add_ExecutionServiceServicer_to_server(FakeExecutions(state), s),
        ],
        service_names=["sinas.scheduler.v1.ExecutionService"],
        tls=tls,
    )
    return FakeScheduler(state=state, server=server)
