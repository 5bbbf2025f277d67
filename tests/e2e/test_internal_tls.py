"""Every method of every internal gRPC service, from the proto descriptors, against real
servers: no certificate, another CA's, a role's that may not call it, and the one that may."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor
from grpc_health.v1 import health_pb2

from sinas_common.errors import CallerRoleDenied, from_rpc_error
from sinas_common.grpc_client import open_channel
from sinas_common.grpc_server import GrpcServer
from sinas_common.reloading_channel import ReloadingChannel
from sinas_common.settings import InternalTlsSettings
from sinas_common.tls import ROLES, SCHEDULER_SERVER_NAME, TlsFiles, role_dns_name
from sinas_devstack.pki import provision_pki
from sinas_devstack.pytest_plugin import InternalTls, StackFactory
from sinas_devstack.stack import Stack
from sinas_proto.scheduler.v1 import scheduler_pb2

HEALTH = "grpc.health.v1.Health"
# The policy of the issue, written out independently of the scheduler's own table.
EXPECTED_ROLES: dict[str, frozenset[str]] = {
    "sinas.scheduler.v1.WorkerService": frozenset({"executor"}),
    "sinas.scheduler.v1.NotifierService": frozenset({"notifier"}),
    "sinas.scheduler.v1.IdentityService": frozenset({"gateway"}),
    "sinas.scheduler.v1.FunctionService": frozenset({"gateway"}),
    "sinas.scheduler.v1.ExecutionService": frozenset({"gateway"}),
    "sinas.scheduler.v1.BatchService": frozenset({"gateway"}),
    "sinas.scheduler.v1.AgentService": frozenset({"gateway"}),
    HEALTH: frozenset(ROLES),
}
# An agent run reads its tool calls' results as its user (with the run's token).
EXPECTED_METHOD_ROLES: dict[str, frozenset[str]] = {
    "/sinas.scheduler.v1.ExecutionService/WaitExecution": frozenset({"gateway", "executor"}),
}


def expected_roles(method: Method) -> frozenset[str]:
    return EXPECTED_METHOD_ROLES.get(method.path, EXPECTED_ROLES[method.service])


@dataclass(frozen=True)
class Method:
    service: str
    path: str
    request: Any
    streaming: bool


def scheduler_methods() -> list[Method]:
    """Every method the scheduler serves, read from the generated modules' descriptors."""
    found = []
    for module in (scheduler_pb2, health_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                found.append(_method(service.full_name, method))
    return found


def _method(service: str, method: MethodDescriptor) -> Method:
    request_class = message_factory.GetMessageClass(method.input_type)
    return Method(
        service=service,
        path=f"/{service}/{method.name}",
        request=request_class(),
        streaming=method.server_streaming,
    )


METHODS = scheduler_methods()


async def call(channel: grpc.aio.Channel, method: Method) -> grpc.StatusCode:
    """The status one call with an empty request ends with (a stream: its first message)."""
    serialize = type(method.request).SerializeToString
    try:
        if method.streaming:
            stream = channel.unary_stream(method.path, request_serializer=serialize)
            call = stream(method.request, timeout=10)
            await call.read()
            call.cancel()
        else:
            await channel.unary_unary(method.path, request_serializer=serialize)(
                method.request, timeout=10
            )
    except grpc.aio.AioRpcError as exc:
        if isinstance(from_rpc_error(exc), CallerRoleDenied):
            return grpc.StatusCode.PERMISSION_DENIED
        # Any other refusal came from past the role check; reported apart from it.
        return exc.code() if exc.code() == grpc.StatusCode.UNAVAILABLE else grpc.StatusCode.OK
    return grpc.StatusCode.OK


def refused_channel(
    address: str,
    tls: InternalTlsSettings | None,
    *,
    ca: InternalTlsSettings,
    server_name: str = SCHEDULER_SERVER_NAME,
) -> grpc.aio.Channel:
    """A channel that trusts `ca`'s CA (so it could verify the server) but presents `tls`'s
    certificate, or none when None."""
    ca_pem = Path(str(ca.ca_file)).read_bytes()
    credentials = (
        grpc.ssl_channel_credentials(root_certificates=ca_pem)
        if tls is None
        else grpc.ssl_channel_credentials(
            root_certificates=ca_pem,
            private_key=Path(str(tls.key_file)).read_bytes(),
            certificate_chain=Path(str(tls.cert_file)).read_bytes(),
        )
    )
    return grpc.aio.secure_channel(
        address, credentials, options=[("grpc.ssl_target_name_override", server_name)]
    )


def install_tls_files(env: dict[str, str], live: Path) -> InternalTlsSettings:
    """Puts the role's files in `live` the way a renewal does (each swapped in by a rename);
    returns settings naming the live files."""
    live.mkdir(exist_ok=True)
    files = {}
    for variable, name in (
        ("INTERNAL_TLS_CA_FILE", "ca.crt"),
        ("INTERNAL_TLS_CERT_FILE", "tls.crt"),
        ("INTERNAL_TLS_KEY_FILE", "tls.key"),
    ):
        staged = live / f".{name}"
        staged.write_bytes(Path(env[variable]).read_bytes())
        staged.replace(live / name)
        files[variable] = str(live / name)
    return InternalTlsSettings.model_validate(files)


@pytest.fixture(scope="module")
def tls_stack(stack_factory: StackFactory) -> Stack:
    """A system of this module's own, so calls with empty requests touch no other test's data."""
    stack = stack_factory()
    stack.start_all()
    return stack


@pytest.fixture(scope="module")
def foreign_tls(tmp_path_factory: pytest.TempPathFactory) -> InternalTls:
    """Certificates with our role names, from a CA of their own."""
    pki = provision_pki(tmp_path_factory.mktemp("foreign-pki"))
    return lambda role: InternalTlsSettings.model_validate(pki[role])


def test_the_descriptors_list_every_service_the_policy_names() -> None:
    assert {method.service for method in METHODS} == set(EXPECTED_ROLES)


@pytest.mark.parametrize("method", METHODS, ids=[m.path for m in METHODS])
async def test_no_certificate_no_handshake(
    tls_stack: Stack, internal_tls: InternalTls, method: Method
) -> None:
    ours = internal_tls("gateway")
    async with refused_channel(tls_stack.scheduler_addr, None, ca=ours) as channel:
        assert await call(channel, method) == grpc.StatusCode.UNAVAILABLE
    async with grpc.aio.insecure_channel(tls_stack.scheduler_addr) as channel:
        assert await call(channel, method) == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("method", METHODS, ids=[m.path for m in METHODS])
async def test_another_ca_no_handshake(
    tls_stack: Stack, internal_tls: InternalTls, foreign_tls: InternalTls, method: Method
) -> None:
    ours = internal_tls("gateway")
    for role in expected_roles(method):
        forged = foreign_tls(role)
        async with refused_channel(tls_stack.scheduler_addr, forged, ca=ours) as channel:
            assert await call(channel, method) == grpc.StatusCode.UNAVAILABLE, role


@pytest.mark.parametrize("method", METHODS, ids=[m.path for m in METHODS])
async def test_only_the_allowed_roles_pass(
    tls_stack: Stack, internal_tls: InternalTls, method: Method
) -> None:
    allowed = expected_roles(method)
    for role in ROLES:
        async with open_channel(tls_stack.scheduler_addr, tls=internal_tls(role)) as channel:
            expected = grpc.StatusCode.OK if role in allowed else grpc.StatusCode.PERMISSION_DENIED
            assert await call(channel, method) == expected, role


@pytest.mark.parametrize(
    "path", ["/sinas.scheduler.v1.WorkerService/NoSuchMethod", "/no.such.Service/Method"]
)
async def test_an_unknown_method_is_refused_to_every_role(
    tls_stack: Stack, internal_tls: InternalTls, path: str
) -> None:
    method = Method(service="", path=path, request=health_pb2.HealthCheckRequest(), streaming=False)
    for role in ROLES:
        async with open_channel(tls_stack.scheduler_addr, tls=internal_tls(role)) as channel:
            assert await call(channel, method) == grpc.StatusCode.PERMISSION_DENIED, role


async def test_a_user_service_still_wants_the_users_credential(
    tls_stack: Stack, internal_tls: InternalTls
) -> None:
    async with open_channel(tls_stack.scheduler_addr, tls=internal_tls("gateway")) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await channel.unary_unary(
                "/sinas.scheduler.v1.IdentityService/GetMe",
                request_serializer=scheduler_pb2.GetMeRequest.SerializeToString,
            )(scheduler_pb2.GetMeRequest(), timeout=10)
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("role", ["executor", "notifier"])
async def test_health_listeners_want_a_certificate_of_our_ca(
    tls_stack: Stack, internal_tls: InternalTls, foreign_tls: InternalTls, role: str
) -> None:
    port = tls_stack.executor_health_port if role == "executor" else tls_stack.notifier_health_port
    address = f"127.0.0.1:{port}"
    [check] = [m for m in METHODS if m.path == f"/{HEALTH}/Check"]
    ours, name = internal_tls(role), role_dns_name(role)
    async with refused_channel(address, None, ca=ours, server_name=name) as channel:
        assert await call(channel, check) == grpc.StatusCode.UNAVAILABLE
    forged = foreign_tls(role)
    async with refused_channel(address, forged, ca=ours, server_name=name) as channel:
        assert await call(channel, check) == grpc.StatusCode.UNAVAILABLE
    async with grpc.aio.insecure_channel(address) as channel:
        assert await call(channel, check) == grpc.StatusCode.UNAVAILABLE
    for caller in ROLES:
        tls = internal_tls(caller)
        async with open_channel(address, tls=tls, server_name=role_dns_name(role)) as channel:
            assert await call(channel, check) == grpc.StatusCode.OK, caller


async def test_another_roles_certificate_cant_pose_as_the_scheduler(
    internal_tls: InternalTls,
) -> None:
    # An executor's certificate serving on loopback (as a function could, holding it) is not
    # the scheduler's: clients check the name `sinas-scheduler`, and no certificate names IPs.
    impostor = GrpcServer(
        bind="127.0.0.1:0", registrars=[], service_names=[], tls=internal_tls("executor")
    )
    await impostor.start()
    try:
        [check] = [m for m in METHODS if m.path == f"/{HEALTH}/Check"]
        address = f"127.0.0.1:{impostor.port}"
        async with open_channel(address, tls=internal_tls("gateway")) as channel:
            assert await call(channel, check) == grpc.StatusCode.UNAVAILABLE
    finally:
        await impostor.stop(0)


async def test_a_renewed_server_certificate_is_served_without_a_restart(
    tmp_path: Path,
) -> None:
    # The scheduler's files are replaced the way a renewal does (here by another CA's, so the
    # change is visible from outside): new connections get the new files, no restart.
    old, new = provision_pki(tmp_path / "old"), provision_pki(tmp_path / "new")
    live = tmp_path / "live"
    served = install_tls_files(old["scheduler"], live)
    server = GrpcServer(bind="127.0.0.1:0", registrars=[], service_names=[], tls=served)
    await server.start()
    [check] = [m for m in METHODS if m.path == f"/{HEALTH}/Check"]
    address = f"127.0.0.1:{server.port}"

    async def status_for(pki: dict[str, dict[str, str]]) -> grpc.StatusCode:
        tls = InternalTlsSettings.model_validate(pki["gateway"])
        async with open_channel(address, tls=tls) as channel:
            return await call(channel, check)

    try:
        assert await status_for(old) == grpc.StatusCode.OK
        assert await status_for(new) == grpc.StatusCode.UNAVAILABLE
        install_tls_files(new["scheduler"], live)
        assert await status_for(new) == grpc.StatusCode.OK
        assert await status_for(old) == grpc.StatusCode.UNAVAILABLE
    finally:
        await server.stop(0)


async def test_a_client_follows_its_renewed_certificate_without_a_restart(
    tls_stack: Stack, internal_pki: dict[str, dict[str, str]], tmp_path: Path
) -> None:
    # A client holding the notifier's files is refused the worker API; once its files are
    # replaced by the executor's (as a renewal replaces them), its next calls present them.
    live = tmp_path / "client"
    tls = install_tls_files(internal_pki["notifier"], live)
    [heartbeat] = [m for m in METHODS if m.path == "/sinas.scheduler.v1.WorkerService/Heartbeat"]

    def connect() -> grpc.aio.Channel:
        return open_channel(tls_stack.scheduler_addr, tls=tls)

    async with ReloadingChannel(connect, TlsFiles.from_settings(tls), check_seconds=0) as channel:
        assert await call(channel, heartbeat) == grpc.StatusCode.PERMISSION_DENIED
        install_tls_files(internal_pki["executor"], live)
        assert await call(channel, heartbeat) == grpc.StatusCode.OK
        # Files caught mid-rotation (a key that is no PEM) leave the loaded certificate in use.
        (live / "tls.key").write_text("rotating")
        assert await call(channel, heartbeat) == grpc.StatusCode.OK
