"""Client-side balancing: three servers on loopback behind one DNS name, and the client's
`dns:///` target spreads new streams over all three; a replica that measures itself full
refuses new streams, and the client places them on one with room."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator

from loadtest.local_server import free_port
from segmentation_client import FrameToSend, SegmentationClient
from service.app import running_server
from tests.helpers import loopback_config
from tests.photos import video_frame_jpeg
from tests.replica_dns import NAME, REPLICAS

CLIENT = textwrap.dedent(
    """
    import asyncio, sys
    from segmentation_client import FrameToSend, SegmentationClient
    from tests.photos import astronaut_jpeg

    async def main(target, streams):
        async with SegmentationClient(target) as client:
            await client.wait_until_serving()
            async def one(n):
                await asyncio.sleep(0.05 * n)  # calls arrive over time, as in production
                async def frames():
                    yield FrameToSend(0, astronaut_jpeg())
                return [r.status async for r in client.stream(frames(), stream_id=f"call-{n}")]
            results = await asyncio.gather(*(one(n) for n in range(streams)))
            print(sum(len(r) for r in results))

    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
    """
)


async def test_new_streams_spread_over_three_replicas_behind_one_name(dns_port: int) -> None:
    port = free_port()
    configs = [
        loopback_config(address=f"{address}:{port}", models=("selfie-general",))
        for address in REPLICAS
    ]
    async with (
        running_server(configs[0]) as first,
        running_server(configs[1]) as second,
        running_server(configs[2]) as third,
    ):
        replicas = (first, second, third)
        target = f"dns://127.0.0.1:{dns_port}/{NAME.rstrip('.')}:{port}"
        # The resolver that reads a DNS server from the target is c-ares: a fresh process
        # so that the setting takes effect.
        result = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-c", CLIENT, target, "12"],
            env={**os.environ, "GRPC_DNS_RESOLVER": "ares"},
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "12"
        served = [
            replica.metrics.frames.labels("selfie-general", "ok", "")._value.get()
            for replica in replicas
        ]
    print(f"\nstreams per replica: {served}")
    assert sum(served) == 12
    assert all(count >= 2 for count in served), f"streams did not spread: {served}"


async def test_a_replica_dropping_frames_refuses_new_streams_and_its_neighbour_takes_them() -> None:
    # The busy replica runs one frame at a time, and two cameras at 100 FPS send it more than
    # that: it drops frames for them, all the time. Its neighbour has room.
    busy_config = loopback_config(
        models=("selfie-general",), max_frames_in_flight=1, max_batches_in_flight=1
    )
    async with (
        running_server(busy_config) as busy,
        running_server(loopback_config(models=("selfie-general",))) as roomy,
    ):
        stop = asyncio.Event()
        jpeg = video_frame_jpeg(640, 480)

        async def camera(fps: float) -> AsyncIterator[FrameToSend]:
            frame_id = 0
            while not stop.is_set():
                yield FrameToSend(frame_id, jpeg)
                frame_id += 1
                await asyncio.sleep(1 / fps)

        answers: dict[str, list[int]] = {}

        async def call(client: SegmentationClient, name: str, fps: float) -> None:
            statuses = answers[name] = []
            async for response in client.stream(camera(fps), stream_id=name):
                statuses.append(response.status)

        async with SegmentationClient(busy.target) as direct:
            load = [asyncio.create_task(call(direct, f"load-{n}", 100)) for n in range(2)]
            try:
                loop = asyncio.get_running_loop()
                started = loop.time()
                while busy.headroom.load.full_because is None:
                    assert loop.time() - started < 30, "the busy replica never measured full"
                    await asyncio.sleep(0.1)
                full_because = busy.headroom.load.full_because
                target = f"ipv4:{busy.target},{roomy.target}"
                async with SegmentationClient(target) as client:
                    await client.wait_until_serving()
                    await asyncio.sleep(0.5)  # both connected: round_robin picks each in turn
                    new = []
                    for n in range(4):
                        new.append(asyncio.create_task(call(client, f"new-{n}", 5)))
                        await asyncio.sleep(0.2)
                    while not all(1 in answers[f"new-{n}"] for n in range(4)):  # OK
                        assert loop.time() - started < 60, "the new calls were not answered"
                        await asyncio.sleep(0.1)
                    placed = [roomy.streams.get(f"new-{n}") is not None for n in range(4)]
                    stop.set()
                    await asyncio.gather(*new)
            finally:
                stop.set()
                await asyncio.gather(*load, return_exceptions=True)
        refused = busy.metrics.streams_refused.labels("measured_load")._value.get()
        utilisation = (busy.headroom.utilisation, roomy.headroom.utilisation)
    print(
        f"\nthe busy replica measured itself full: {full_because}; it refused {refused:.0f} "
        f"new streams, all 4 went to its neighbour; utilisation {utilisation}"
    )
    assert refused >= 1
    assert placed == [True] * 4


async def test_unary_calls_cost_the_caller_no_task_of_the_library() -> None:
    """Unary callers may segment every frame with `segment()`: the channel's renewal watches
    streams only, so a unary call adds no task beside the caller's own."""
    async with running_server(loopback_config(models=("selfie-general",))) as service:
        client = SegmentationClient(service.target)
        async with client:
            await client.wait_until_serving()
            before, frame = asyncio.all_tasks(), video_frame_jpeg(320, 240)
            calls = [asyncio.create_task(client.segment(frame)) for _ in range(8)]
            await asyncio.sleep(0)  # every call is on its way
            during = asyncio.all_tasks() - before - set(calls)
            answers = await asyncio.gather(*calls)
            after = asyncio.all_tasks() - before
    assert all(answer.mask.data for answer in answers)
    library = [task for task in during | after if "segmentation_client" in _source_of(task)]
    assert not library, library


def _source_of(task: asyncio.Task) -> str:
    """The file of the coroutine a task runs ("" for a task that runs none of Python's)."""
    code = getattr(task.get_coro(), "cr_code", None)
    return code.co_filename if code is not None else ""
