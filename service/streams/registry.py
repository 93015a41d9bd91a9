"""The open streams of this replica: at most `max_streams`, one per stream id."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

from service.errors import StreamReplacedError, TooManyStreamsError
from service.metrics import StreamReport
from service.streams.video_stream import VideoStream


class StreamRegistry:
    """The open streams of this replica, by id, at most `max_streams` of them, and none while
    `measured_full()` says why the replica has no room (see `headroom`)."""

    def __init__(
        self, max_streams: int = 1 << 30, measured_full: Callable[[], str | None] | None = None
    ) -> None:
        self.max_streams = max_streams
        self._measured_full = measured_full
        self.on_change: Callable[[int], None] | None = None  # told the count of open streams
        self._streams: dict[str, VideoStream] = {}
        self._empty = asyncio.Event()
        self._empty.set()

    def __len__(self) -> int:
        return len(self._streams)

    def get(self, stream_id: str) -> VideoStream | None:
        return self._streams.get(stream_id)

    def claim_id(self, stream_id: str) -> str:
        """The id a new stream takes (an empty one gets a fresh id); refuses a new stream over
        `max_streams`. `add()` the stream next, before anything else runs."""
        stream_id = stream_id or uuid.uuid4().hex
        if stream_id in self._streams:
            return stream_id  # a caller reopening its own stream takes no more room
        if len(self._streams) >= self.max_streams:
            raise TooManyStreamsError(
                f"refused by max_streams: this replica holds {len(self._streams)} streams, its "
                "limit; retry on another replica or later"
            )
        full_because = self._measured_full() if self._measured_full else None
        if full_because:
            raise TooManyStreamsError(
                f"refused by measured load: {full_because}; retry on another replica or later",
                limit="measured_load",
            )
        return stream_id

    def streams_of(self, model: str) -> list[VideoStream]:
        return [stream for stream in self._streams.values() if stream.model == model]

    def add(self, stream: VideoStream) -> None:
        """Registers a stream under its claimed id.

        A stream that reopens with the id of one still open here takes the id over, and the old
        one ends (StreamReplacedError): a caller only reopens a stream it has lost, so the old
        one is a half-open leftover, and it must not lock the caller out until it times out.
        """
        replaced = self._streams.get(stream.stream_id)
        if replaced is not None:
            replaced.fail(
                StreamReplacedError(
                    f"stream {stream.stream_id!r} was replaced by a newer stream with the same id"
                )
            )
        self._streams[stream.stream_id] = stream
        self._empty.clear()
        if self.on_change:
            self.on_change(len(self._streams))

    def reports(self, quantiles: tuple[float, ...]) -> list[StreamReport]:
        """Per-stream figures of the open streams, oldest first (read by the metrics thread)."""
        return [
            StreamReport(
                stream.stream_id,
                stream.model,
                stream.stats.frames_per_second(),
                stream.stats.latency_quantiles(quantiles),
            )
            for stream in list(self._streams.values())
        ]

    async def close(self, stream: VideoStream) -> None:
        if self._streams.get(stream.stream_id) is stream:
            del self._streams[stream.stream_id]
            if not self._streams:
                self._empty.set()
            if self.on_change:
                self.on_change(len(self._streams))
        await stream.close()

    async def wait_until_empty(self) -> None:
        await self._empty.wait()
