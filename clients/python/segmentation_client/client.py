"""An asyncio client: one call per image, or one stream per video."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterable
from types import TracebackType

import grpc
import numpy as np

from segmentation.v1 import segmentation_pb2 as pb
from segmentation.v1 import segmentation_pb2_grpc as pb_grpc
from segmentation_client.channels import Channels
from segmentation_client.resumable import ResumableStream
from segmentation_client.retry import RetryPolicy, should_retry, should_retry_or_silence
from segmentation_client.values import FrameToSend, SegmentationError, StreamStats

__all__ = [
    "DEFAULT_TARGET",
    "FrameToSend",
    "RetryPolicy",
    "SegmentationClient",
    "SegmentationError",
    "StreamStats",
    "mask_to_array",
]

DEFAULT_TARGET = "localhost:50051"
# Pings on idle connections so that dead peers are found; the server accepts pings every 10 s
# or more (its --min-client-ping-interval-s), so 20 s keeps well clear of its limit.
KEEPALIVE_TIME_S = 20
KEEPALIVE_TIMEOUT_S = 10
# The channel re-resolves its name when a connection closes, as a server's maximum connection
# age makes each one do now and then: that is how a long-lived channel reaches replicas that
# joined. gRPC waits 30 s between two resolutions by default; 1 s lets a refused stream find a
# new replica soon, and re-resolutions only follow connection events, so DNS sees few.
DNS_MIN_TIME_BETWEEN_RESOLUTIONS_MS = 1000
SERVICE = "segmentation.v1.SegmentationService"
HEALTH_CHECK = "/grpc.health.v1.Health/Check"
HEALTH_SERVING = b"\x08\x01"  # HealthCheckResponse(status=SERVING), serialized
# The one-shot calls retry UNAVAILABLE (a draining or lost replica) through gRPC's own retry
# policy: each attempt is balanced anew, so it lands on another replica behind a dns:/// name.
UNARY_RETRY_SERVICE_CONFIG = {
    "methodConfig": [
        {
            "name": [
                {"service": SERVICE, "method": "Segment"},
                {"service": SERVICE, "method": "ListModels"},
            ],
            "retryPolicy": {
                "maxAttempts": 4,
                "initialBackoff": "0.05s",
                "maxBackoff": "1s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }
    ]
}


def mask_to_array(mask: pb.Mask) -> np.ndarray:
    """A mask as uint8 (height, width), 255 = person, whatever its encoding. PNG and JPEG masks
    need Pillow (`pip install segmentation-client[images]`); raw ones need nothing more."""
    if mask.encoding in (pb.MASK_ENCODING_PNG, pb.MASK_ENCODING_JPEG):
        try:
            from PIL import Image
        except ImportError:
            raise ImportError(
                "decoding PNG or JPEG masks needs Pillow: pip install segmentation-client[images]"
            ) from None
        return np.asarray(Image.open(io.BytesIO(mask.data)).convert("L"))
    return np.frombuffer(mask.data, np.uint8).reshape(mask.height, mask.width)


class SegmentationClient:
    """Use as `async with SegmentationClient("host:50051") as client:`."""

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        tls: bool = False,
        root_certificates: bytes | None = None,
        client_certificate: bytes | None = None,
        client_key: bytes | None = None,
        token: str | None = None,
        load_balancing: str = "round_robin",
        max_message_bytes: int = 64 << 20,
        retry_policy: RetryPolicy | None = None,
    ) -> None:
        """Connects to `target`. TLS is on when `tls` or any certificate is given.

        `root_certificates`: PEM CA of the server (the system's CAs when None);
        `client_certificate` and `client_key`: PEM, for servers that require mutual TLS;
        `token`: sent as `authorization: Bearer <token>` on every call.
        `load_balancing`: with a target that resolves to several replicas (the headless
        Service's `dns:///segmentation.<namespace>.svc:50051`), "round_robin" spreads new
        streams over all of them; "pick_first" sends everything to one.
        `retry_policy`: how `stream()` reconnects when its replica drains or dies.
        """
        self.target = target
        self.retry_policy = retry_policy or RetryPolicy()
        # Failover of all this client's streams so far: reconnects and frames dropped locally.
        self.stream_stats = StreamStats()
        options = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.keepalive_time_ms", KEEPALIVE_TIME_S * 1000),
            ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_S * 1000),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.lb_policy_name", load_balancing),
            ("grpc.dns_min_time_between_resolutions_ms", DNS_MIN_TIME_BETWEEN_RESOLUTIONS_MS),
            ("grpc.enable_retries", 1),
            ("grpc.service_config", json.dumps(UNARY_RETRY_SERVICE_CONFIG)),
        ]
        if tls or root_certificates or client_certificate:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=root_certificates,
                private_key=client_key,
                certificate_chain=client_certificate,
            )
            self._channels = Channels(
                lambda: grpc.aio.secure_channel(target, credentials, options=options)
            )
        else:
            self._channels = Channels(lambda: grpc.aio.insecure_channel(target, options=options))
        self._metadata = (("authorization", f"Bearer {token}"),) if token else None

    @property
    def _stub(self) -> pb_grpc.SegmentationServiceStub:
        return self._channels.stub  # the current channel's: for raw calls in the tests

    @property
    def channel_renewals(self) -> int:
        """How often new calls refused by every known replica made this client open a new
        channel (to see replicas that joined)."""
        return self._channels.renewals

    async def __aenter__(self) -> SegmentationClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Closes every channel, ending the calls still open on them."""
        await self._channels.close()

    async def wait_until_ready(self, timeout_s: float = 30.0) -> None:
        """Waits until the channel is connected (the server is up)."""
        await asyncio.wait_for(self._channels.current.channel_ready(), timeout_s)

    async def wait_until_serving(self, timeout_s: float = 60.0) -> None:
        """Waits until the server's health check says SERVING (its models are warm)."""
        # The health service's two messages, spelled on the wire, so that the client needs no
        # grpcio-health-checking: an empty HealthCheckRequest, and status = SERVING (1).
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            check = self._channels.current.unary_unary(HEALTH_CHECK)
            try:
                if await self._channels.answer(check(b"", timeout=1.0)) == HEALTH_SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass  # not listening yet
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"{self.target} was not SERVING within {timeout_s} s")
            await asyncio.sleep(0.1)

    async def list_models(self) -> list[pb.ModelInfo]:
        try:
            response = await self._channels.answer(
                self._channels.stub.ListModels(pb.ListModelsRequest(), metadata=self._metadata)
            )
        except grpc.aio.AioRpcError as error:
            raise SegmentationError(error.code(), error.details() or "") from None
        return list(response.models)

    async def segment(
        self,
        jpeg: bytes,
        *,
        model: str = "",
        mask_width: int = 0,
        mask_height: int = 0,
        mask_encoding: int = pb.MASK_ENCODING_PNG,
        timeout_s: float | None = 30.0,
    ) -> pb.SegmentResponse:
        """Segments one image. The mask is the image's own size unless a size is given."""
        request = pb.SegmentRequest(
            model=model,
            jpeg=jpeg,
            mask_width=mask_width,
            mask_height=mask_height,
            mask_encoding=mask_encoding,
        )
        try:
            return await self._channels.answer(
                self._channels.stub.Segment(request, timeout=timeout_s, metadata=self._metadata)
            )
        except grpc.aio.AioRpcError as error:
            raise SegmentationError(error.code(), error.details() or "") from None

    def stream(
        self,
        frames: AsyncIterable[FrameToSend],
        *,
        stream_id: str = "",
        model: str = "",
        mask_width: int = 0,
        mask_height: int = 0,
        mask_encoding: int = pb.MASK_ENCODING_RAW_U8,
        temporal_smoothing: float = 0.0,
        edge_aware_upscale: bool = False,
        composite: pb.Composite | None = None,
        reopen_after_silence: bool = False,
    ) -> ResumableStream:
        """Sends `frames` as one video stream; iterate the result for one response per frame,
        in order (`async for response in client.stream(frames):`).

        `composite`: answers carry the composited frame (`response.composited`) instead of a
        mask; `temporal_smoothing` and `edge_aware_upscale` as in StreamConfig.

        Responses with status DROPPED or ERROR are yielded like OK ones. When the replica drains
        or dies, the stream reopens on another one (or the same, once back) with the same config
        and id; frames lost meanwhile are answered DROPPED with `error_reason` "reconnecting"
        (see `ResumableStream`; its `stats` and this client's `stream_stats` count them). A
        refused stream, or one no replica answered for `retry_policy.give_up_after_s`, raises
        SegmentationError. `reopen_after_silence`: a stream the server ended for silence
        (DEADLINE_EXCEEDED: the caller sent nothing for its idle timeout) reopens when the next
        frame comes, instead of raising. Leaving the loop early cancels the stream.
        """
        config = pb.StreamConfig(
            stream_id=stream_id,
            model=model,
            mask_width=mask_width,
            mask_height=mask_height,
            mask_encoding=mask_encoding,
            temporal_smoothing=temporal_smoothing,
            edge_aware_upscale=edge_aware_upscale,
            composite=composite,
        )
        return ResumableStream(
            lambda: self._channels.track(
                self._channels.stub.StreamSegment(metadata=self._metadata)
            ),
            config,
            frames,
            self.retry_policy,
            totals=self.stream_stats,
            should_reopen=should_retry_or_silence if reopen_after_silence else should_retry,
        )
