"""A bare echo of OrderPolicyService on the same gRPC stack: the load test's baseline.

Same methods, same request parsing (the real ``DecideRequest`` messages), the same
``grpc.Server`` (built by ``server.app.grpc_server`` from ``ServerOptions`` defaults:
thread pool, ``grpc.so_reuseport``, message size, ``maximum_concurrent_rpcs``), health
and reflection registered, and
the same process model (compile nothing, fork ``workers`` processes sharing the port
with SO_REUSEPORT). Each answer is a canned decision of realistic size (read from
``--decision``, a serialized ``Decision``) with the request's ``request_id``: the RPC
layer and protobuf work of the real service without any policy work.

    python -m tests.load.echo_server --port N --workers N --decision FILE [--aio]

With ``--aio`` the same echo runs on ``grpc.aio`` in one process: the baseline of the
asyncio server model (``python -m tests.load.server_model`` compares the two).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from tests.load.corpus import SERVICE, pb


def _table(decide: Any, batch: Any, stream: Any) -> grpc.GenericRpcHandler:
    """The service's three methods with the real request and response messages."""
    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Decide": grpc.unary_unary_rpc_method_handler(
                decide, pb.DecideRequest.FromString, pb.DecideResponse.SerializeToString
            ),
            "DecideBatch": grpc.unary_unary_rpc_method_handler(
                batch, pb.DecideBatchRequest.FromString, pb.DecideBatchResponse.SerializeToString
            ),
            "DecideStream": grpc.stream_stream_rpc_method_handler(
                stream, pb.DecideStreamRequest.FromString, pb.DecideStreamResponse.SerializeToString
            ),
        },
    )


def _handlers(decision: Any) -> grpc.GenericRpcHandler:
    def decide(request: Any, _context: Any) -> Any:
        return pb.DecideResponse(decision=decision, request_id=request.request_id)

    def batch(request: Any, _context: Any) -> Any:
        return pb.DecideBatchResponse(
            results=[pb.DecideResult(request_id=r.request_id, decision=decision) for r in request.requests]
        )

    def stream(requests: Iterator[Any], _context: Any) -> Iterator[Any]:
        for message in requests:
            yield pb.DecideStreamResponse(request_id=message.request.request_id, decision=decision)

    return _table(decide, batch, stream)


def build(host: str, port: int, decision: Any, *, reuse_port: bool) -> tuple[grpc.Server, int]:
    """One echo server built by ``server.app.grpc_server``, as the service's servers are."""
    from server.app import ServerOptions, grpc_server

    server = grpc_server(ServerOptions(host=host, port=port), reuse_port=reuse_port)
    server.add_generic_rpc_handlers((_handlers(decision),))
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    for name in ("", SERVICE):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return server, bound


def _serve_aio(host: str, port: int, decision: Any) -> int:
    """The same echo on ``grpc.aio`` (one process): the asyncio server model's baseline."""
    import asyncio

    async def decide(request: Any, _context: Any) -> Any:
        return pb.DecideResponse(decision=decision, request_id=request.request_id)

    async def batch(request: Any, _context: Any) -> Any:
        return pb.DecideBatchResponse(
            results=[pb.DecideResult(request_id=r.request_id, decision=decision) for r in request.requests]
        )

    async def stream(requests: Any, _context: Any) -> Any:
        async for message in requests:
            yield pb.DecideStreamResponse(request_id=message.request.request_id, decision=decision)

    async def main() -> None:
        from server.app import ServerOptions

        options = ServerOptions(host=host, port=port)
        server = grpc.aio.server(
            options=[("grpc.so_reuseport", 0), ("grpc.max_receive_message_length", options.max_message_bytes)]
        )
        server.add_generic_rpc_handlers((_table(decide, batch, stream),))
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        bound = server.add_insecure_port(f"{host}:{port}")
        await server.start()
        for name in ("", SERVICE):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        os.write(
            sys.stdout.fileno(),
            (
                f'{{"event":"server_started","echo":true,"aio":true,"worker_index":0,'
                f'"port":{bound},"pid":{os.getpid()}}}\n'
            ).encode(),
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await server.stop(2)

    asyncio.run(main())
    return 0


def _serve_one(host: str, port: int, decision: Any, reuse_port: bool, index: int) -> int:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server, bound = build(host, port, decision, reuse_port=reuse_port)
    server.start()
    # One write per line: workers share stdout, and with unbuffered output print()
    # writes the text and the newline separately, so lines could interleave.
    line = f'{{"event":"server_started","echo":true,"worker_index":{index},"port":{bound},"pid":{os.getpid()}}}\n'
    sys.stdout.flush()
    os.write(sys.stdout.fileno(), line.encode())
    while not stop.wait(0.5):
        pass
    server.stop(2).wait()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--decision", type=Path, required=True, help="a serialized pb.Decision")
    parser.add_argument("--aio", action="store_true", help="serve with grpc.aio (one worker)")
    args = parser.parse_args(argv)
    decision = pb.Decision.FromString(args.decision.read_bytes())
    if args.aio:
        return _serve_aio(args.host, args.port, decision)
    if args.workers == 1:
        return _serve_one(args.host, args.port, decision, False, 0)
    # As server.app: hold the port with SO_REUSEPORT, fork, never touch gRPC in the parent.
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    holder.bind((args.host, args.port))
    children = []
    for index in range(args.workers):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = _serve_one(args.host, args.port, decision, True, index)
            finally:
                os._exit(code)
        children.append(pid)

    def forward(signum: int, _frame: object) -> None:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    for pid in children:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
    holder.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
