"""The processed video track: each camera frame goes to the service, the composited frame comes
back, over one gRPC stream per track."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from collections.abc import AsyncIterator, Callable

import av
import numpy as np
from aiortc import MediaStreamTrack
from PIL import Image

from segmentation.v1 import segmentation_pb2 as pb
from segmentation_client import FrameToSend, SegmentationClient, SegmentationError

log = logging.getLogger(__name__)

ANSWER_TIMEOUT_S = 2.0  # past this a frame goes out unprocessed rather than freezing the video
RESTART_AFTER_S = 1.0  # after a stream ended for good, the track goes out unprocessed this long


def _to_jpeg(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


class SegmentationSession:
    """One video track's gRPC stream: frames in, composited frames out.

    A thin adapter over the client library's stream, which keeps the client contract
    (docs/client-contract.md): each frame is sent with the future its answer fills (its
    context), so no map of pending frames is kept here; the stream moves across replicas and
    reopens after a silence (a paused or muted track) by itself. Only when the library gives up
    (no replica for `give_up_after_s`) or is refused does the track go out unprocessed, and a
    new stream opens after `RESTART_AFTER_S`."""

    def __init__(self, client: SegmentationClient, composite: pb.Composite, stream_id: str) -> None:
        self._client = client
        self._composite = composite
        self._stream_id = stream_id
        self._outgoing: asyncio.Queue[FrameToSend | None] = asyncio.Queue()
        self._next_id = 0
        self._task: asyncio.Task[None] | None = None
        self._down = False  # no stream now: frames pass through unprocessed
        self.streams_ended = 0  # streams the library gave up on, or that were refused
        self.on_latency: Callable[[dict], None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        await self._outgoing.put(None)
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _frames(self) -> AsyncIterator[FrameToSend]:
        while (frame := await self._outgoing.get()) is not None:
            yield frame

    async def _run(self) -> None:
        while True:
            stream = self._client.stream(
                self._frames(), stream_id=self._stream_id, composite=self._composite,
                temporal_smoothing=0.7, reopen_after_silence=True,
            )  # fmt: skip
            try:
                async for answer in stream.answers():
                    waiter = answer.frame.context if answer.frame is not None else None
                    if isinstance(waiter, asyncio.Future) and not waiter.done():
                        waiter.set_result(answer.response)
                return  # the track ended
            except SegmentationError as error:
                log.warning("the segmentation stream %s ended: %s", self._stream_id, error)
            self.streams_ended += 1
            self._down = True
            await asyncio.sleep(RESTART_AFTER_S)
            self._down = False

    async def process(self, frame: av.VideoFrame) -> av.VideoFrame:
        if self._down:
            return frame
        started = time.monotonic()
        rgb = frame.to_ndarray(format="rgb24")
        frame_id = self._next_id
        self._next_id += 1
        answer: asyncio.Future[pb.StreamSegmentResponse] = asyncio.Future()
        jpeg = await asyncio.to_thread(_to_jpeg, rgb)
        await self._outgoing.put(FrameToSend(frame_id, jpeg, time.time_ns() // 1000, answer))
        try:
            # A stream that gives up leaves its last frames unanswered: they go out unprocessed.
            response = await asyncio.wait_for(answer, ANSWER_TIMEOUT_S)
        except TimeoutError:
            return frame
        if response.status != pb.StreamSegmentResponse.OK:
            return frame  # dropped or refused: the camera frame, rather than a gap
        composited = await asyncio.to_thread(
            lambda: np.asarray(Image.open(io.BytesIO(response.composited.jpeg)).convert("RGB"))
        )
        out = av.VideoFrame.from_ndarray(composited, format="rgb24")
        out.pts, out.time_base = frame.pts, frame.time_base
        if self.on_latency:
            self.on_latency(
                {
                    "frame": frame_id,
                    "round_trip_ms": (time.monotonic() - started) * 1e3,
                    "server_ms": response.timings.total_ms,
                    "batch_size": response.batch_size,
                }
            )
        return out


class SegmentedTrack(MediaStreamTrack):
    """The browser's camera track, each frame replaced by the service's composite."""

    kind = "video"

    def __init__(self, source: MediaStreamTrack, session: SegmentationSession) -> None:
        super().__init__()
        self._source = source
        self._session = session

    async def recv(self) -> av.VideoFrame:
        return await self._session.process(await self._source.recv())


def latency_sender(channel_holder: dict) -> Callable[[dict], None]:
    """Sends per-frame figures to the page over its data channel, once the page opened it."""

    def send(figures: dict) -> None:
        channel = channel_holder.get("channel")
        if channel is not None and channel.readyState == "open":
            channel.send(json.dumps(figures))

    return send
