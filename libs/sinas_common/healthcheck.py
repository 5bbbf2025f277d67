"""`python -m sinas_common.healthcheck ADDR SERVER_NAME`: exit 0 when a gRPC server is SERVING.

Kubelet gRPC probes speak no TLS; this presents the pod's own certificate (INTERNAL_TLS_*
variables) and checks the server's carries SERVER_NAME, so it works as an exec probe.
"""

from __future__ import annotations

import argparse
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sinas_common.settings import InternalTlsSettings
from sinas_common.tls import channel_credentials


def check_serving(
    address: str, *, tls: InternalTlsSettings, server_name: str, timeout: float = 1.0
) -> bool:
    """True when the gRPC health service at `address` answers SERVING to our certificate."""
    channel = (
        grpc.secure_channel(
            address,
            channel_credentials(tls),
            options=[("grpc.ssl_target_name_override", server_name)],
        )
        if tls.enabled
        else grpc.insecure_channel(address)
    )
    try:
        with channel:
            stub = health_pb2_grpc.HealthStub(channel)
            reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
            return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
    except grpc.RpcError:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sinas_common.healthcheck", description=__doc__)
    parser.add_argument("address", help="host:port of the gRPC server, e.g. 127.0.0.1:50051")
    parser.add_argument("server_name", help="the DNS name its certificate carries")
    parser.add_argument("--timeout", type=float, default=2.0)
    args = parser.parse_args(argv)
    try:
        serving = check_serving(
            args.address,
            tls=InternalTlsSettings(),
            server_name=args.server_name,
            timeout=args.timeout,
        )
    except ValueError as exc:
        print(f"healthcheck: {exc}", file=sys.stderr)
        return 2
    return 0 if serving else 1


if __name__ == "__main__":
    sys.exit(main())
