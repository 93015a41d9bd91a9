"""Client failover against real server processes: streams go on across a replica's drain
(SIGTERM), its death (SIGKILL) and its silence (SIGSTOP), one answer per frame, in order."""

from __future__ import annotations

import asyncio
import json
import signal
import time

from loadtest.local_server import ServerProcess, free_port
from segmentation_client import SegmentationClient
from service.app import running_server
from tests.client_process import check_streams, longest_run_without_mask, start_client, stop_client
from tests.helpers import MAX_FRAMES_WITHOUT_MASK, loopback_config
from tests.photos import astronaut_jpeg
from tests.replica_dns import NAME, REPLICAS
from tests.replicas import REPLICA_FLAGS, serving_one, start_replicas_at, wait_for_streams


def start_servers(count: int, **where: object) -> list[ServerProcess]:
    return start_replicas_at([(REPLICA_FLAGS, where_for(where, n)) for n in range(count)])


def where_for(where: dict, n: int) -> dict:
    return {key: value[n] if isinstance(value, tuple) else value for key, value in where.items()}


async def test_streams_go_on_across_a_drain_and_a_death_behind_one_name(
    dns_port: int,
) -> None:
    port = free_port()
    servers = start_servers(3, host=REPLICAS, port=port)
    streams, frames = 3, 150  # 5 s at 30 FPS
    target = f"dns://127.0.0.1:{dns_port}/{NAME.rstrip('.')}:{port}"
    client = start_client(target, streams, frames, answer_timeout_s=2.0)
    try:
        await wait_for_streams(servers, streams)
        await asyncio.sleep(0.5)
        drained = await serving_one(servers)
        drained.process.send_signal(signal.SIGTERM)
        await asyncio.sleep(1.5)
        killed = await serving_one([s for s in servers if s is not drained])
        killed.process.send_signal(signal.SIGKILL)
        out, err = await asyncio.to_thread(client.communicate, timeout=120)
    finally:
        stop_client(client)
        for server in servers:
            server.stop(timeout_s=15)
    assert client.returncode == 0, err
    results = json.loads(out)
    check_streams(results, frames)
    reconnects = sum(r["reconnects"] for r in results)
    runs = [longest_run_without_mask(r["answers"]) for r in results]
    print(f"\nreconnects {reconnects}, longest runs without a mask {runs}, "
          f"dropped locally {[r['dropped_locally'] for r in results]}")  # fmt: skip
    assert reconnects >= 2, "the drained and the killed replica each moved a stream"
    assert max(runs) <= MAX_FRAMES_WITHOUT_MASK
    assert drained.process.returncode == 0, drained.output  # drained and exited in its grace
    assert killed.process.returncode == -signal.SIGKILL


async def test_a_replica_that_stops_answering_is_left_after_the_answer_timeout() -> None:
    # SIGSTOP: the process keeps its connections open and answers nothing, as a lost node does.
    servers = start_servers(2)
    streams, frames = 2, 120
    target = "ipv4:" + ",".join(server.target for server in servers)
    stopped = None
    client = start_client(target, streams, frames, answer_timeout_s=0.5)
    try:
        await wait_for_streams(servers, streams)
        await asyncio.sleep(0.5)
        stopped = await serving_one(servers)
        stopped.process.send_signal(signal.SIGSTOP)
        started = time.monotonic()
        out, err = await asyncio.to_thread(client.communicate, timeout=120)
    finally:
        stop_client(client)
        if stopped is not None:
            stopped.process.send_signal(signal.SIGCONT)
        for server in servers:
            server.stop(timeout_s=15)
    assert client.returncode == 0, err
    results = json.loads(out)
    check_streams(results, frames)
    assert sum(r["reconnects"] for r in results) >= 1
    assert time.monotonic() - started < 60, "the streams did not wait for keepalive"


async def test_segment_retries_unavailable_on_another_replica() -> None:
    # One replica drains (UNAVAILABLE to every call), the other serves: gRPC's retry policy
    # in the client's service config sends each refused attempt to the next replica.
    config = loopback_config(models=("selfie-general",))
    async with running_server(config) as draining, running_server(config) as serving:
        draining.drain()
        target = f"ipv4:{draining.target},{serving.target}"
        async with SegmentationClient(target) as client:
            for _ in range(6):  # without retries, about half would fail
                assert (await client.segment(astronaut_jpeg())).mask.data
        served = serving.metrics.frames.labels("selfie-general", "ok", "")._value.get()
        assert served == 6
