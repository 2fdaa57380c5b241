"""Health follows the loaded bundle; reflection lists the services."""

from __future__ import annotations

import json

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from server._gen.orderpolicy.v1 import order_policy_pb2 as pb
from server._gen.orderpolicy.v1 import order_policy_pb2_grpc as pb_grpc
from tests.support.servers import serving

pytestmark = pytest.mark.integration

SERVICE = "orderpolicy.v1.OrderPolicyService"
ORDER = json.dumps({"id": "o-1", "status": "received", "details": {"type": "testkit"}})


def _health(channel: grpc.Channel, service: str = "") -> int:
    return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status


def test_health_is_not_serving_before_a_bundle_and_serving_after(bundle_dir) -> None:
    """Without a bundle: NOT_SERVING and calls UNAVAILABLE; after loading: SERVING, decisions."""
    with serving(None) as server, grpc.insecure_channel(server.address) as channel:
        not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
        assert _health(channel) == not_serving
        assert _health(channel, SERVICE) == not_serving
        stub = pb_grpc.OrderPolicyServiceStub(channel)
        request = pb.DecideRequest(action=pb.ACTION_CANCEL_ORDER, order_json=ORDER)
        with pytest.raises(grpc.RpcError) as info:
            stub.Decide(request, timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        with pytest.raises(grpc.RpcError) as info:
            stub.DecideBatch(pb.DecideBatchRequest(requests=[request]), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        [streamed] = stub.DecideStream(iter([pb.DecideStreamRequest(request=request)]), timeout=5)
        assert streamed.error.code == grpc.StatusCode.UNAVAILABLE.value[0]

        server.load(bundle_dir)
        assert _health(channel) == health_pb2.HealthCheckResponse.SERVING
        assert _health(channel, SERVICE) == health_pb2.HealthCheckResponse.SERVING
        assert stub.Decide(request, timeout=5).decision.outcome == pb.OUTCOME_ALLOW


def test_health_turns_not_serving_on_shutdown(bundle_dir) -> None:
    """Graceful stop reports NOT_SERVING to watchers before the port closes."""
    with serving(bundle_dir) as server, grpc.insecure_channel(server.address) as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=SERVICE), timeout=10)
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        server.stop(2)
        assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING


def test_unknown_health_service_is_not_found(server_address: str) -> None:
    """Asking for a service the server does not have is NOT_FOUND."""
    with grpc.insecure_channel(server_address) as channel, pytest.raises(grpc.RpcError) as info:
        _health(channel, "no.such.Service")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_the_services(server_address: str) -> None:
    """Server reflection names OrderPolicyService, health and reflection."""
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    with grpc.insecure_channel(server_address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        [response] = list(stub.ServerReflectionInfo(iter([request]), timeout=5))
        names = {s.name for s in response.list_services_response.service}
        assert {SERVICE, "grpc.health.v1.Health"} <= names
        request = reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE)
        [response] = list(stub.ServerReflectionInfo(iter([request]), timeout=5))
        assert response.file_descriptor_response.file_descriptor_proto


def test_health_port_serves_probes_only(bundle_dir) -> None:
    """--health-port: readiness ("") follows the bundle, "liveness" does not; no decisions there."""
    from server.app import LIVENESS_SERVICE

    with serving(None, health_port=0) as server:
        assert server.health_port not in (None, 0, server.port)
        with grpc.insecure_channel(f"127.0.0.1:{server.health_port}") as probes:
            not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
            assert _health(probes) == not_serving
            assert _health(probes, LIVENESS_SERVICE) == health_pb2.HealthCheckResponse.SERVING
            request = pb.DecideRequest(action=pb.ACTION_CANCEL_ORDER, order_json=ORDER)
            with pytest.raises(grpc.RpcError) as info:
                pb_grpc.OrderPolicyServiceStub(probes).Decide(request, timeout=5)
            assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
            server.load(bundle_dir)
            assert _health(probes) == health_pb2.HealthCheckResponse.SERVING
        with grpc.insecure_channel(server.address) as channel:
            assert _health(channel, LIVENESS_SERVICE) == health_pb2.HealthCheckResponse.SERVING
            watch = health_pb2_grpc.HealthStub(channel).Watch(
                health_pb2.HealthCheckRequest(service=LIVENESS_SERVICE), timeout=10
            )
            assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
            server.stop(2)
            assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
