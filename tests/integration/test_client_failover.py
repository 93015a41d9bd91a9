"""Client failover against real server processes: streams go on across a replica's drain
(SIGTERM), its death (SIGKILL) and its silence (SIGSTOP), one answer per frame, in order."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request

from loadtest.local_server import ServerProcess, free_port
from segmentation_client import SegmentationClient
from service.app import running_server
from tests.helpers import MAX_FRAMES_WITHOUT_MASK, loopback_config
from tests.photos import astronaut_jpeg
from tests.replica_dns import NAME, REPLICAS

SERVER_FLAGS = (
    "--models", "selfie-general", "--engine", "tflite", "--shutdown-grace-s", "5",
    "--engine-threads", "1", "--decode-workers", "1",
)  # fmt: skip

# The streams run in their own process: the resolver that reads a DNS server from the target
# is c-ares, which a fresh process picks up from GRPC_DNS_RESOLVER.
CLIENT = textwrap.dedent(
    """
    import asyncio, json, sys
    from segmentation_client import FrameToSend, RetryPolicy, SegmentationClient
    from tests.photos import video_frame_jpeg

    async def main(target, streams, frames, answer_timeout_s):
        jpegs = [video_frame_jpeg(320, 240, shift=4 * n) for n in range(8)]
        policy = RetryPolicy(answer_timeout_s=answer_timeout_s)
        async with SegmentationClient(target, retry_policy=policy) as client:
            await client.wait_until_serving()

            async def one(n):
                async def camera():
                    started = asyncio.get_running_loop().time()
                    for frame_id in range(frames):  # open loop at 30 FPS
                        at = started + frame_id / 30
                        await asyncio.sleep(max(0.0, at - asyncio.get_running_loop().time()))
                        yield FrameToSend(frame_id, jpegs[frame_id % len(jpegs)])

                stream = client.stream(camera(), stream_id=f"call-{n}")
                answers = []
                try:
                    async for r in stream:
                        answers.append([r.frame_id, r.status, r.error_reason, bool(r.mask.data)])
                    error = None
                except Exception as e:
                    error = repr(e)
                return {"answers": answers, "error": error, "reconnects": stream.stats.reconnects,
                        "dropped_locally": stream.stats.frames_dropped_locally}

            print(json.dumps(await asyncio.gather(*(one(n) for n in range(streams)))))

    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])))
    """
)


def active_streams(server: ServerProcess) -> int:
    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=2) as response:
        text = response.read().decode()
    return int(sum(float(v) for v in re.findall(r"^segmentation_active_streams\{.*\} (\S+)$",
                                                  text, re.M)))  # fmt: skip


async def wait_for_streams(servers: list[ServerProcess], total: int) -> None:
    """Until the live servers hold `total` streams between them."""
    for _ in range(600):
        if sum([await asyncio.to_thread(active_streams, s) for s in servers]) >= total:
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"the streams did not open: {[active_streams(s) for s in servers]}")


async def serving_one(servers: list[ServerProcess]) -> ServerProcess:
    for server in servers:
        if await asyncio.to_thread(active_streams, server):
            return server
    raise AssertionError("no live server holds a stream")


def start_client(
    target: str, streams: int, frames: int, answer_timeout_s: float
) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", CLIENT, target, str(streams), str(frames), str(answer_timeout_s)],
        env={**os.environ, "GRPC_DNS_RESOLVER": "ares"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def stop_client(client: subprocess.Popen) -> None:
    if client.poll() is None:  # the test failed before the streams ended
        client.kill()
        client.communicate()


def check_streams(results: list[dict], frames: int) -> None:
    for result in results:
        assert result["error"] is None, result["error"]
        answers = result["answers"]
        # One answer per frame, in order; only OK ones carry a mask.
        assert [a[0] for a in answers] == list(range(frames))
        assert all(has_mask == (status == 1) for _, status, _, has_mask in answers)
        local = [a for a in answers if a[2] == "reconnecting"]
        assert len(local) == result["dropped_locally"]
        assert all(status == 2 for _, status, _, _ in local)  # DROPPED


def longest_run_without_mask(answers: list[list]) -> int:
    longest = run = 0
    for _, _, _, has_mask in answers:
        run = 0 if has_mask else run + 1
        longest = max(longest, run)
    return longest


def start_servers(count: int, **where: object) -> list[ServerProcess]:
    """Starts them side by side (the model load overlaps), then waits for each."""
    servers = [ServerProcess(*SERVER_FLAGS, **where_for(where, n)) for n in range(count)]
    try:
        for server in servers:
            server.__enter__()
    except BaseException:
        for server in servers:
            server.stop(signal.SIGKILL)
        raise
    return servers


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
