"""`segmentation-client`: segment an image, or stream files as one video stream."""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from segmentation.v1 import segmentation_pb2 as pb
from segmentation_client.client import (
    DEFAULT_TARGET,
    FrameToSend,
    SegmentationClient,
    SegmentationError,
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="segmentation-client", description="Client of the segmentation service."
    )
    parser.add_argument("--target", default=DEFAULT_TARGET, help="server HOST:PORT")
    parser.add_argument("--model", default="", help="model name (default: the server's)")
    parser.add_argument("--tls", action="store_true", help="connect with TLS")
    parser.add_argument("--ca-cert", type=Path, help="PEM CA of the server (turns TLS on)")
    parser.add_argument("--client-cert", type=Path, help="PEM client certificate (mutual TLS)")
    parser.add_argument("--client-key", type=Path, help="PEM client key (mutual TLS)")
    parser.add_argument(
        "--token",
        default=os.environ.get("SEGMENTATION_TOKEN"),
        help="bearer token (default: $SEGMENTATION_TOKEN)",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    segment = commands.add_parser("segment", help="segment one JPEG image")
    segment.add_argument("image", type=Path)
    segment.add_argument("--out", type=Path, required=True, help="mask PNG to write")

    stream = commands.add_parser("stream", help="stream JPEG files as one video stream")
    stream.add_argument("files", type=Path, nargs="+")
    stream.add_argument("--fps", type=float, default=30.0, help="frames sent per second")
    stream.add_argument("--out", type=Path, required=True, help="folder for the mask PNGs")
    return parser


async def _segment(client: SegmentationClient, image: Path, out: Path, model: str) -> int:
    response = await client.segment(
        image.read_bytes(), model=model, mask_encoding=pb.MASK_ENCODING_PNG
    )
    out.write_bytes(response.mask.data)
    timings = response.timings
    print(
        f"{out}: {response.mask.width}x{response.mask.height} mask, "
        f"server {timings.total_ms:.1f} ms (decode {timings.decode_ms:.1f}, "
        f"inference {timings.inference_ms:.1f}, encode {timings.encode_ms:.1f})"
    )
    return 0


async def _stream(
    client: SegmentationClient, files: Sequence[Path], fps: float, out: Path, model: str
) -> int:
    out.mkdir(parents=True, exist_ok=True)
    jpegs = [path.read_bytes() for path in files]
    sent_at: dict[int, float] = {}
    interval_s = 1.0 / fps

    async def frames() -> AsyncIterator[FrameToSend]:
        started = time.monotonic()
        for frame_id, jpeg in enumerate(jpegs):
            # Open loop: each frame leaves on its own schedule, answered or not.
            await asyncio.sleep(max(0.0, started + frame_id * interval_s - time.monotonic()))
            sent_at[frame_id] = time.monotonic()
            yield FrameToSend(frame_id, jpeg, capture_timestamp_us=time.time_ns() // 1000)

    latencies_ms: list[float] = []
    counts = {"OK": 0, "DROPPED": 0, "ERROR": 0}
    first_answer = last_answer = 0.0
    stream = client.stream(frames(), model=model, mask_encoding=pb.MASK_ENCODING_PNG)
    async for response in stream:
        now = time.monotonic()
        first_answer = first_answer or now
        last_answer = now
        latency_ms = (now - sent_at[response.frame_id]) * 1e3
        status = pb.StreamSegmentResponse.Status.Name(response.status)
        counts[status] += 1
        name = files[response.frame_id].stem
        if response.status == pb.StreamSegmentResponse.OK:
            latencies_ms.append(latency_ms)
            (out / f"{name}.png").write_bytes(response.mask.data)
            print(
                f"frame {response.frame_id} {name}: {latency_ms:.1f} ms "
                f"(server {response.timings.total_ms:.1f} ms, batch {response.batch_size})"
            )
        else:
            print(f"frame {response.frame_id} {name}: {status} {response.error_message}")
    summary = ", ".join(f"{count} {status.lower()}" for status, count in counts.items())
    print(f"{len(files)} frames: {summary}")
    if stream.stats.reconnects:
        print(
            f"reconnected {stream.stats.reconnects} times; "
            f"{stream.stats.frames_dropped_locally} frames dropped while reconnecting"
        )
    if latencies_ms:
        span_s = last_answer - first_answer
        achieved = (len(latencies_ms) - 1) / span_s if span_s > 0 else float("nan")
        p95 = statistics.quantiles(latencies_ms, n=20)[-1] if len(latencies_ms) > 1 else None
        print(
            f"latency ms: p50 {statistics.median(latencies_ms):.1f}"
            + (f", p95 {p95:.1f}" if p95 is not None else "")
            + f", max {max(latencies_ms):.1f}; {achieved:.1f} masks/s"
        )
    return 0 if counts["ERROR"] == 0 else 1


def _read(path: Path | None) -> bytes | None:
    return path.read_bytes() if path else None


async def _run(args: argparse.Namespace) -> int:
    client = SegmentationClient(
        args.target,
        tls=args.tls,
        root_certificates=_read(args.ca_cert),
        client_certificate=_read(args.client_cert),
        client_key=_read(args.client_key),
        token=args.token,
    )
    async with client:
        if args.command == "segment":
            return await _segment(client, args.image, args.out, args.model)
        return await _stream(client, args.files, args.fps, args.out, args.model)


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        code = asyncio.run(_run(args))
    except SegmentationError as error:
        print(f"segmentation-client: {error}", file=sys.stderr)
        code = 2
    sys.exit(code)


if __name__ == "__main__":
    main()
