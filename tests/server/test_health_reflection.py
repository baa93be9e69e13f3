import asyncio

from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from protos.tailor.v1 import diagnostics_pb2, diagnostics_pb2_grpc


async def test_health_reports_serving(channel):
    stub = health_pb2_grpc.HealthStub(channel)
    for service in ("", "tailor.v1.RecommendationService"):
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=service))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_lists_every_service(channel):
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    names = set()
    requests = iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    async for reply in stub.ServerReflectionInfo(requests):
        names |= {s.name for s in reply.list_services_response.service}
    assert {"tailor.v1.RecommendationService", "tailor.v1.ModelAdminService",
            "tailor.v1.DiagnosticsService", "grpc.health.v1.Health"} <= names


async def test_ping(channel):
    assert await diagnostics_pb2_grpc.DiagnosticsServiceStub(channel).Ping(diagnostics_pb2.PingRequest()) \
        == diagnostics_pb2.PingResponse()


async def test_rpcs_are_counted_by_method_and_status(channel):
    import grpc
    import pytest
    from prometheus_client import REGISTRY

    from protos.tailor.v1 import recommendation_pb2, recommendation_pb2_grpc
    labels = {"grpc_type": "unary", "grpc_service": "tailor.v1.RecommendationService",
              "grpc_method": "Recommend"}

    def counts() -> tuple[float, float]:
        """grpc_server_handled_total of Recommend for OK and INVALID_ARGUMENT, as /metrics shows."""
        return tuple(REGISTRY.get_sample_value("grpc_server_handled_total", {**labels, "grpc_code": code})
                     or 0.0 for code in ("OK", "INVALID_ARGUMENT"))
    before = counts()
    stub = recommendation_pb2_grpc.RecommendationServiceStub(channel)
    await stub.Recommend(recommendation_pb2.RecommendRequest(user_id="1", k=3))
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.Recommend(recommendation_pb2.RecommendRequest(user_id="1", k=0))
    # `context.abort` sends the status before the interceptor sees the error: allow a moment
    for _ in range(200):
        if counts()[1] > before[1]:
            break
        await asyncio.sleep(0.01)
    assert counts() == (before[0] + 1, before[1] + 1)
