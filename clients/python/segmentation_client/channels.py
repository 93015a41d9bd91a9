"""The client's channel, renewed when every replica it knows refuses new calls: a new channel
resolves the target's name at once, so new calls reach a replica that joined since."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc

from segmentation.v1 import segmentation_pb2_grpc as pb_grpc

# A channel knows the replicas its last resolution listed: when every one of them refuses new
# calls (RESOURCE_EXHAUSTED) for this long, with no call accepted meanwhile, the client opens a
# new channel, which resolves the name at once and so sees a replica that joined since, long
# before the servers' connection age would make the old one re-resolve.
RENEW_AFTER_REFUSED_S = 1.5
# At most one renewal this often, so that a cluster that is really full is not flooded with DNS
# lookups and handshakes.
RENEW_AT_MOST_EVERY_S = 5.0
# A call whose headers came and which is still open this much later was accepted: a refusal
# comes with its headers (trailers only), this grace covers their completing apart.
ACCEPTED_AFTER_HEADERS_S = 0.1

Call = TypeVar("Call", bound=grpc.aio.Call)
Response = TypeVar("Response")


class Channels:
    """The client's channel, renewed when every replica it knows refuses new calls.

    Each call is counted on the channel it was made on: a channel that was renewed closes once
    its last call ended, since `Channel.close()` cancels the calls still on it; open streams
    stay where they are, new and reopened calls use the current channel. Only streams are
    admitted or refused (RESOURCE_EXHAUSTED names a full replica), so only streams are watched
    for it; a unary call is counted and nothing more, as it may be made for every frame.
    """

    def __init__(self, open_channel: Callable[[], grpc.aio.Channel]) -> None:
        self._open_channel = open_channel
        self.current = open_channel()
        self.stub = pb_grpc.SegmentationServiceStub(self.current)
        self.renewals = 0
        self._live: dict[grpc.aio.Channel, int] = {self.current: 0}  # calls not ended yet
        self._refused_since: float | None = None  # this run of refusals, none accepted
        self._refusals = 0
        self._renewed_at = -RENEW_AT_MOST_EVERY_S
        self._tasks: set[asyncio.Task[None]] = set()

    def track(self, call: Call) -> Call:
        """Counts the stream `call` on the current channel until it ends, and learns from how
        it ends whether the replicas this channel knows have room."""
        channel = self.current
        self._live[channel] += 1
        call.add_done_callback(lambda _: self._stream_ended(channel, call))
        self._spawn(self._watch_admission(channel, call))
        return call

    async def answer(self, call: Awaitable[Response]) -> Response:
        """Awaits the unary `call`, made on the current channel, counted there until it ends:
        no task and no callback of its own."""
        channel = self.current
        self._live[channel] += 1
        try:
            return await call
        finally:
            self._ended(channel)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        channels, self._live = list(self._live), {}
        await asyncio.gather(*(channel.close() for channel in channels))

    def _spawn(self, coroutine: object) -> None:
        task = asyncio.ensure_future(coroutine)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _ended(self, channel: grpc.aio.Channel) -> bool:
        """Uncounts a call; closes a renewed channel after its last. False once closed."""
        if channel not in self._live:
            return False  # the client is closed
        self._live[channel] -= 1
        if channel is not self.current and self._live[channel] == 0:
            del self._live[channel]
            self._spawn(channel.close())
        return True

    def _stream_ended(self, channel: grpc.aio.Channel, call: grpc.aio.Call) -> None:
        if self._ended(channel):
            self._spawn(self._learn_refusal(channel, call))

    async def _learn_refusal(self, channel: grpc.aio.Channel, call: grpc.aio.Call) -> None:
        if channel is not self.current or await call.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
            return  # a refusal by a replica an older channel knew says nothing of this one
        now = time.monotonic()
        if self._refused_since is None:
            self._refused_since, self._refusals = now, 0
        self._refusals += 1
        if (
            self._refusals >= 2
            and now - self._refused_since >= RENEW_AFTER_REFUSED_S
            and now - self._renewed_at >= RENEW_AT_MOST_EVERY_S
        ):
            self._renew(now)

    async def _watch_admission(self, channel: grpc.aio.Channel, call: grpc.aio.Call) -> None:
        try:
            await call.initial_metadata()
            await asyncio.sleep(ACCEPTED_AFTER_HEADERS_S)
        except (grpc.aio.AioRpcError, asyncio.CancelledError):
            return
        if channel is self.current and not call.done():
            self._refused_since = None  # a replica this channel knows had room

    def _renew(self, now: float) -> None:
        old = self.current
        self.current = self._open_channel()
        self.stub = pb_grpc.SegmentationServiceStub(self.current)
        self._live[self.current] = 0
        self._refused_since, self._renewed_at = None, now
        self.renewals += 1
        if self._live[old] == 0:
            del self._live[old]
            self._spawn(old.close())
