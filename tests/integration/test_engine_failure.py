"""A replica whose engine fails: the streams open on it end UNAVAILABLE and move, through the
client library, to a healthy replica behind the same name; an engine that cannot recover ends
its process with a clear log line, so that the orchestrator restarts it.

The engine is broken through `tests.breakable` (the real model behind a switch): a broken GPU
cannot happen on a CPU test machine."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2

from loadtest.local_server import free_port
from segmentation_client import SegmentationError
from service.api.readiness import LIVENESS
from service.app import RunningService, running_server
from tests.breakable import break_engines
from tests.client_process import check_streams, longest_run_without_mask, start_client, stop_client
from tests.helpers import health_status, loopback_config, wait_until
from tests.photos import astronaut_jpeg
from tests.replica_dns import ReplicasResolver, dns_server, dns_target


async def test_streams_on_a_replica_whose_engine_fails_move_to_a_healthy_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    switches = break_engines(monkeypatch)
    port = free_port()
    resolver = ReplicasResolver(["127.0.0.1", "127.0.0.2"])
    configs = [
        loopback_config(
            address=f"{address}:{port}", models=("selfie-general",), engine_failing_after_s=1.0
        )
        for address in resolver.addresses
    ]
    streams, frames = 4, 240  # 8 s at 30 FPS
    with dns_server(resolver) as dns_port:
        async with running_server(configs[0]) as failing, running_server(configs[1]) as healthy:
            replicas: tuple[RunningService, RunningService] = (failing, healthy)
            client = start_client(dns_target(dns_port, port), streams, frames, 2.0)

            def on_each_replica() -> bool:
                if client.poll() is not None:  # it will never open them: say why
                    raise AssertionError(f"the client ended: {client.communicate()[1]}")
                return all(len(r.streams) for r in replicas)

            def held() -> str:
                return f"a stream on each replica; they hold {[len(r.streams) for r in replicas]}"

            try:
                await wait_until(on_each_replica, what=held)
                on_failing = len(failing.streams)
                switches[0].break_engine()
                moved_after_s = await wait_until(lambda: len(healthy.streams) == streams)
                assert (
                    await health_status(failing.target)
                    == health_pb2.HealthCheckResponse.NOT_SERVING
                )
                assert (
                    await health_status(failing.target, LIVENESS)
                    == health_pb2.HealthCheckResponse.SERVING
                )
                out, err = await asyncio.to_thread(client.communicate, timeout=120)
            finally:
                stop_client(client)
            refused = failing.metrics.streams_refused.labels("engine_failing")._value.get()
    assert client.returncode == 0, err
    results = json.loads(out)
    check_streams(results, frames)  # every frame answered, in order, and no stream failed
    runs = [longest_run_without_mask(r["answers"]) for r in results]
    reconnects = [r["reconnects"] for r in results]
    print(
        f"\n{on_failing} of {streams} streams on the failing replica; all on the healthy one "
        f"{moved_after_s:.1f} s after the engine broke (engine_failing_after_s 1.0); "
        f"reconnects {reconnects}, refused by the failing replica {refused:.0f}, "
        f"longest runs without a mask {runs}"
    )
    assert sum(reconnects) >= on_failing


async def test_an_engine_that_cannot_recover_ends_its_process_with_a_clear_line(
    tmp_path: Path,
) -> None:
    from segmentation_client import FrameToSend, RetryPolicy, SegmentationClient

    port = free_port()
    command = [
        sys.executable, "-m", "tests.breakable", "--address", f"127.0.0.1:{port}",
        "--metrics-port", "-1", "--models", "selfie-general", "--engine", "tflite",
        "--shutdown-grace-s", "2",
    ]  # fmt: skip
    log = (tmp_path / "server.log").open("w+")
    # Warm-up, then a few good batches, then the engine is lost for good.
    process = await asyncio.to_thread(
        subprocess.Popen,
        command,
        env={**os.environ, "BREAK_AFTER_BATCHES": "4"},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    statuses: list[int] = []
    try:
        policy = RetryPolicy(give_up_after_s=1.0)
        async with SegmentationClient(f"127.0.0.1:{port}", retry_policy=policy) as client:
            await client.wait_until_serving()

            async def frames():  # type: ignore[no-untyped-def]
                for frame_id in range(150):
                    yield FrameToSend(frame_id, astronaut_jpeg())
                    await asyncio.sleep(1 / 30)

            with contextlib.suppress(SegmentationError):  # no replica left to move to
                async for response in client.stream(frames()):
                    statuses.append(response.status)
        await asyncio.to_thread(process.wait, timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    log.seek(0)
    output = log.read()
    lines = [line for line in output.splitlines() if "beyond recovery" in line]
    print(f"\nexit status {process.returncode}, {statuses.count(1)} frames OK first; {lines}")
    assert process.returncode == 1, output
    assert "CRITICAL" in lines[0] and "the process ends, to be restarted" in lines[0]
