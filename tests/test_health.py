"""gRPC health and reflection, as a plain client and an orchestrator's probe see them."""

from __future__ import annotations

import asyncio
import threading

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from loadtest.local_server import free_port
from segmentation_client import SegmentationClient, SegmentationError
from service.app import SERVICE_NAME, running_server
from service.engines.tflite import TFLiteEngine
from tests.helpers import loopback_config
from tests.photos import astronaut_jpeg

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def health_status(target: str, service: str = "") -> int:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        response = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        return response.status


async def test_health_is_serving_only_after_the_models_are_warm(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Hold the warm-up until the test has looked at the server while it warms up.
    warm_up_may_run = threading.Event()
    real_warm_up = TFLiteEngine.warm_up

    def held_warm_up(engine: TFLiteEngine) -> None:
        warm_up_may_run.wait(timeout=60)
        real_warm_up(engine)

    monkeypatch.setattr(TFLiteEngine, "warm_up", held_warm_up)
    port = free_port()
    target = f"127.0.0.1:{port}"
    config = loopback_config(address=target, models=("selfie-general",))
    ready = asyncio.Event()
    stop = asyncio.Event()

    async def serve() -> None:
        async with running_server(config):
            ready.set()
            await stop.wait()

    server = asyncio.create_task(serve())
    try:
        async with SegmentationClient(target) as client:
            await client.wait_until_ready()
            assert await health_status(target) == NOT_SERVING
            assert await health_status(target, SERVICE_NAME) == NOT_SERVING
            with pytest.raises(SegmentationError) as caught:
                await client.segment(astronaut_jpeg())
            assert caught.value.code == grpc.StatusCode.UNAVAILABLE
            assert "warming up" in caught.value.details

            warm_up_may_run.set()
            await asyncio.wait_for(ready.wait(), 60)
            assert await health_status(target) == SERVING
            assert await health_status(target, SERVICE_NAME) == SERVING
            assert (await client.segment(astronaut_jpeg())).mask.data
    finally:
        warm_up_may_run.set()
        stop.set()
        await server


async def test_reflection_lists_the_services(server) -> None:
    async with grpc.aio.insecure_channel(server.target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        responses = [response async for response in stub.ServerReflectionInfo(iter([request]))]
    names = {s.name for s in responses[0].list_services_response.service}
    assert {SERVICE_NAME, "grpc.health.v1.Health"} <= names
