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
from segmentation_client import FrameToSend, SegmentationClient

log = logging.getLogger(__name__)

ANSWER_TIMEOUT_S = 2.0  # past this a frame goes out unprocessed rather than freezing the video


def _to_jpeg(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


class SegmentationSession:
    """One video track's gRPC stream: frames in, composited frames out, matched by id."""

    def __init__(self, client: SegmentationClient, composite: pb.Composite, stream_id: str) -> None:
        self._client = client
        self._composite = composite
        self._stream_id = stream_id
        self._outgoing: asyncio.Queue[FrameToSend | None] = asyncio.Queue()
        self._pending: dict[int, asyncio.Future[pb.StreamSegmentResponse]] = {}
        self._next_id = 0
        self._task: asyncio.Task[None] | None = None
        self._ended = False  # the gRPC stream is gone: frames pass through unprocessed
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
        try:
            async for response in self._client.stream(
                self._frames(), stream_id=self._stream_id, composite=self._composite,
                temporal_smoothing=0.7,
            ):  # fmt: skip
                waiter = self._pending.pop(response.frame_id, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(response)
        except Exception:
            log.exception("the segmentation stream %s ended", self._stream_id)
        finally:
            self._ended = True
            for waiter in self._pending.values():
                if not waiter.done():
                    waiter.cancel()
            self._pending.clear()

    async def process(self, frame: av.VideoFrame) -> av.VideoFrame:
        if self._ended:
            return frame
        started = time.monotonic()
        rgb = frame.to_ndarray(format="rgb24")
        frame_id = self._next_id
        self._next_id += 1
        answer = asyncio.get_running_loop().create_future()
        self._pending[frame_id] = answer
        jpeg = await asyncio.to_thread(_to_jpeg, rgb)
        await self._outgoing.put(FrameToSend(frame_id, jpeg, time.time_ns() // 1000))
        try:
            response = await asyncio.wait_for(answer, ANSWER_TIMEOUT_S)
        except (TimeoutError, asyncio.CancelledError):
            if not answer.cancelled():
                self._pending.pop(frame_id, None)
            elif asyncio.current_task().cancelling():
                raise  # the track itself is being stopped
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
