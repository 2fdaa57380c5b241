"""``order-policy health``: a probe that exits 0 only when the server says SERVING."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``health`` on the CLI's subparsers."""
    parser = subparsers.add_parser(
        "health",
        help="probe a server's gRPC health service",
        description="Exit 0 when the server reports SERVING, 1 otherwise.",
    )
    parser.add_argument("--address", default="localhost:50051", help="server address (default localhost:50051)")
    parser.add_argument("--service", default="", help="service to check (default: the whole server)")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for the answer (default 3)")
    parser.add_argument("--tls-ca", type=Path, help="use TLS, trusting this CA (PEM); system roots when `-`")
    parser.add_argument("--tls-cert", type=Path, help="client certificate (PEM), for mTLS")
    parser.add_argument("--tls-key", type=Path, help="client private key (PEM), for mTLS")
    parser.add_argument("--tls-server-name", default=None, help="expected name in the server's certificate")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Print the status and return 0 for SERVING, 1 for anything else."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    options: list[tuple[str, Any]] = []
    if args.tls_ca is None and args.tls_cert is None:
        channel = grpc.insecure_channel(args.address)
    else:
        try:
            ca = None if args.tls_ca in (None, Path("-")) else args.tls_ca.read_bytes()
            cert = args.tls_cert.read_bytes() if args.tls_cert else None
            key = args.tls_key.read_bytes() if args.tls_key else None
        except OSError as exc:
            print(f"error: cannot read `{exc.filename}`: {exc.strerror}", file=sys.stderr)
            return 1
        if args.tls_server_name:
            options.append(("grpc.ssl_target_name_override", args.tls_server_name))
        credentials = grpc.ssl_channel_credentials(ca, key, cert)
        channel = grpc.secure_channel(args.address, credentials, options=options)
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = stub.Check(health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout)
        except grpc.RpcError as exc:
            print(f"{args.address}: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    name = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    print(f"{args.address}: {name}")
    return 0 if response.status == health_pb2.HealthCheckResponse.SERVING else 1
