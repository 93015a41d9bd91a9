"""gRPC health and reflection, as a plain client and an orchestrator's probe see them:
readiness while warming up and while the engine fails every batch, liveness apart."""

from __future__ import annotations

import asyncio
import contextlib
import threading

import grpc
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from loadtest.local_server import free_port
from segmentation_client import SegmentationClient, SegmentationError
from service.api.readiness import LIVENESS
from service.app import SERVICE_NAME, running_server
from service.engines.tflite import TFLiteEngine
from tests.breakable import FAILURE, break_engines
from tests.helpers import health_status, loopback_config, wait_until
from tests.photos import astronaut_jpeg

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


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


async def wait_for_status(target: str, wanted: int) -> float:
    """Seconds until readiness says `wanted`, while the caller's frames keep coming."""

    async def says_wanted() -> bool:
        return await health_status(target) == wanted

    return await wait_until(says_wanted, timeout_s=30.0, what=f"readiness {wanted}")


async def test_readiness_follows_an_engine_that_fails_every_batch_and_liveness_stays(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    switches = break_engines(monkeypatch)
    config = loopback_config(models=("selfie-general",), engine_failing_after_s=1.0)
    async with running_server(config) as service, SegmentationClient(service.target) as client:
        assert await health_status(service.target, LIVENESS) == SERVING
        switches[0].break_engine()

        async def frames_keep_coming() -> None:
            while True:  # each frame fails INTERNAL while the engine is broken
                with contextlib.suppress(SegmentationError):
                    await client.segment(astronaut_jpeg())
                await asyncio.sleep(0.03)

        sender = asyncio.create_task(frames_keep_coming())
        try:
            not_serving_after_s = await wait_for_status(service.target, NOT_SERVING)
        finally:
            sender.cancel()
        assert await health_status(service.target, SERVICE_NAME) == NOT_SERVING
        assert await health_status(service.target, LIVENESS) == SERVING
        with pytest.raises(SegmentationError) as caught:
            await client.segment(astronaut_jpeg())
        assert caught.value.code == grpc.StatusCode.UNAVAILABLE
        assert "fails every batch" in caught.value.details and FAILURE in caught.value.details

        switches[0].mend()  # no call reaches it now: its own probe finds it working
        serving_after_s = await wait_for_status(service.target, SERVING)
        assert (await client.segment(astronaut_jpeg())).mask.data
        assert await health_status(service.target, LIVENESS) == SERVING
    print(
        f"\nreadiness NOT_SERVING {not_serving_after_s:.1f} s after the engine broke "
        f"(engine_failing_after_s 1.0), SERVING {serving_after_s:.1f} s after it was mended"
    )
    assert not_serving_after_s >= 1.0  # not on the first failed batch
