"""Open-loop load: N streams at F frames per second each, on a fixed schedule.

Every frame leaves at its scheduled time whether or not earlier frames were answered, and its
latency is measured from that scheduled time, so a slow server cannot slow the load down and
hide its own slowness (no coordinated omission). Streams start staggered over the ramp-up.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from segmentation.v1 import segmentation_pb2 as pb
from segmentation_client import FrameToSend, SegmentationClient, SegmentationError
from segmentation_client.resumable import RECONNECTING


@dataclass
class FrameRecord:
    stream: int
    frame_id: int
    scheduled_at: float  # on the generator's monotonic clock
    sent_at: float = 0.0
    answered_at: float = 0.0  # 0: never answered
    # OK, DROPPED (by the server, or by the client while its stream reconnected), ERROR, or
    # LOST (the stream ended without an answer)
    status: str = ""
    dropped_locally: bool = False  # answered DROPPED "reconnecting" by the client
    batch_size: int = 0
    server_ms: float = 0.0

    @property
    def latency_s(self) -> float:
        return self.answered_at - self.scheduled_at


@dataclass
class RunResult:
    streams: int
    fps: float
    started_at: float
    measure_from: float  # after ramp-up and warm-up
    measure_until: float
    frames: list[FrameRecord] = field(default_factory=list)
    stream_errors: list[str] = field(default_factory=list)  # calls refused or broken
    reconnects: int = 0  # streams reopened by the client's failover (refused, drained, lost)
    refused_calls: int = 0  # calls no replica had room for until the client gave up: not carried


@dataclass(frozen=True)
class LoadShape:
    streams: int
    fps: float = 30.0
    duration_s: float = 10.0  # measured part
    ramp_up_s: float = 2.0  # streams start spread over this
    warm_up_s: float = 2.0  # after the ramp-up, left out of the figures


async def run_load(
    target: str,
    shape: LoadShape,
    sequences: list[list[bytes]],
    progress: Callable[[float], None] | None = None,
    **stream_options: object,
) -> RunResult:
    """Runs the load against `target` and returns every frame's record."""
    started = time.monotonic()
    measure_from = started + shape.ramp_up_s + shape.warm_up_s
    stop_at = measure_from + shape.duration_s
    result = RunResult(shape.streams, shape.fps, started, measure_from, stop_at)
    async with SegmentationClient(target) as client:
        await client.wait_until_serving()
        tasks = [
            asyncio.create_task(
                _one_stream(client, index, shape, sequences[index % len(sequences)],
                            started, stop_at, result, stream_options)
            )
            for index in range(shape.streams)
        ]  # fmt: skip
        ticker = asyncio.create_task(_tick(progress, started, stop_at)) if progress else None
        await asyncio.gather(*tasks)
        if ticker:
            ticker.cancel()
    return result


async def _tick(progress: Callable[[float], None], started: float, stop_at: float) -> None:
    while True:
        progress(min(1.0, (time.monotonic() - started) / (stop_at - started)))
        await asyncio.sleep(0.25)


async def _one_stream(
    client: SegmentationClient,
    index: int,
    shape: LoadShape,
    jpegs: list[bytes],
    started: float,
    stop_at: float,
    result: RunResult,
    stream_options: dict[str, object],
) -> None:
    first_at = started + shape.ramp_up_s * index / max(shape.streams, 1)
    interval = 1.0 / shape.fps
    count = max(0, int((stop_at - first_at) * shape.fps))
    records = [FrameRecord(index, n, first_at + n * interval) for n in range(count)]
    result.frames.extend(records)

    async def frames() -> AsyncIterator[FrameToSend]:
        for record in records:
            delay = record.scheduled_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            record.sent_at = time.monotonic()
            yield FrameToSend(record.frame_id, jpegs[record.frame_id % len(jpegs)])

    stream = client.stream(frames(), stream_id=f"load-{index}", **stream_options)
    try:
        async for response in stream:
            record = records[response.frame_id]
            record.answered_at = time.monotonic()
            record.status = pb.StreamSegmentResponse.Status.Name(response.status)
            record.dropped_locally = response.error_reason == RECONNECTING
            record.batch_size = response.batch_size
            record.server_ms = response.timings.total_ms
    except SegmentationError as error:
        result.stream_errors.append(f"stream {index}: {error}")
        # Refused (RESOURCE_EXHAUSTED) by every replica until the client gave up (UNAVAILABLE,
        # naming the last refusal): a call the replicas did not carry.
        if "RESOURCE_EXHAUSTED" in str(error):
            result.refused_calls += 1
    result.reconnects += stream.stats.reconnects
    for record in records:
        if not record.status:
            record.status = "LOST"


def terminal_progress(label: str) -> Callable[[float], None]:
    """A progress bar on the terminal, with the time left (nothing when stderr is not one)."""
    from tqdm import tqdm

    bar = tqdm(total=100, desc=label, unit="%", disable=None, bar_format=_BAR_FORMAT)

    def show(fraction: float) -> None:
        bar.update(round(fraction * 100) - bar.n)
        if fraction >= 1.0:
            bar.close()

    return show


_BAR_FORMAT = "{desc} {bar} {percentage:3.0f}% [{elapsed}<{remaining}]"
