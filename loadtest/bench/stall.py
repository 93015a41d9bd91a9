"""A caller that stops reading, beside callers that read: the server's memory and their latency.

One stalled stream (640x480 frames at 30 FPS, RAW masks, reads no answer) from its own process,
and 2 normal streams at 30 FPS from `segmentation-loadtest run` in another, against a
`segmentation-server` process whose RSS is sampled every second. `main()` runs the server with
its default bound of unwritten answers per stream, and again with a bound so large that it
behaves like the server before the bound, and prints both side by side.

    python -m loadtest.bench.stall [--seconds 30] [--server-flags "..."] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from loadtest.bench.process_memory import rss_mb
from loadtest.local_server import ServerProcess

FPS = 30.0
WIDTH, HEIGHT = 640, 480
NORMAL_STREAMS = 2
# The server's bound as it was before it had one: nothing a 30 s stall reaches.
UNBOUNDED_FLAGS = ["--max-unwritten-answers-per-stream", "1000000"]
# The server cuts off a caller that reads nothing for this long (its default).
STREAM_IDLE_TIMEOUT_S = 60.0


async def _stalled_stream(target: str, seconds: float) -> dict[str, int]:
    """Sends frames at 30 FPS for `seconds` and reads nothing; the counts of frames its camera
    made and frames the call took (flow control holds the rest back)."""
    import grpc

    from loadtest.frames import video_sequence
    from segmentation.v1 import segmentation_pb2 as pb
    from segmentation.v1 import segmentation_pb2_grpc as pb_grpc

    jpegs = video_sequence(WIDTH, HEIGHT, frames=60)
    loop = asyncio.get_running_loop()
    started = loop.time()
    sent = 0

    async def requests() -> AsyncIterator[pb.StreamSegmentRequest]:
        nonlocal sent
        yield pb.StreamSegmentRequest(
            config=pb.StreamConfig(stream_id="stalled", mask_encoding=pb.MASK_ENCODING_RAW_U8)
        )
        next_at = loop.time()
        while True:
            frame = pb.Frame(
                frame_id=sent,
                capture_timestamp_us=int((loop.time() - started) * 1e6),
                jpeg=jpegs[sent % len(jpegs)],
            )
            yield pb.StreamSegmentRequest(frame=frame)
            sent += 1
            # A frame the call could not take yet is late: a camera does not catch up.
            next_at = max(next_at + 1 / FPS, loop.time())
            await asyncio.sleep(next_at - loop.time())

    async with grpc.aio.insecure_channel(target) as channel:
        call = pb_grpc.SegmentationServiceStub(channel).StreamSegment(requests())
        await asyncio.sleep(seconds)  # reading nothing all along
        call.cancel()
    return {"frames_made": round(seconds * FPS), "frames_sent": sent}


def bench_stall(seconds: float = 30.0, server_flags: list[str] | None = None) -> dict:
    """One stall of `seconds` against a server started with `server_flags`: prints and returns
    the server's RSS (MB) and the normal streams' figures."""
    flags = list(server_flags or [])
    if seconds >= STREAM_IDLE_TIMEOUT_S and "--stream-idle-timeout-s" not in flags:
        raise ValueError(
            f"a stall of {seconds:g} s outlasts the server's idle timeout "
            f"({STREAM_IDLE_TIMEOUT_S:g} s): pass --stream-idle-timeout-s in the server flags"
        )
    bin_dir = Path(sys.executable).parent
    name = " ".join(flags) or "defaults"
    print(f"\nserver ({name}): stalled stream + {NORMAL_STREAMS} normal streams, {seconds:g} s")
    with (
        ServerProcess("--models", "selfie-general", "--log-level", "WARNING", *flags) as server,
        tempfile.TemporaryDirectory() as scratch,
    ):
        pid = server.process.pid
        load_json = Path(scratch) / "normal.json"
        rss = [rss_mb(pid)]
        stalled = subprocess.Popen(
            [sys.executable, "-m", "loadtest.bench.stall", "--stall-target", server.target,
             "--seconds", str(seconds)],
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        # The normal streams span the stall: they measure from 1 s in, for the stall's length.
        normal = subprocess.Popen(
            [str(bin_dir / "segmentation-loadtest"), "run", "--target", server.target,
             "--streams", str(NORMAL_STREAMS), "--fps", f"{FPS:g}", "--seconds", f"{seconds:g}",
             "--ramp-up-s", "0.5", "--warm-up-s", "0.5", "--mask-encoding", "raw",
             "--json", str(load_json)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        started = time.monotonic()
        while stalled.poll() is None:
            time.sleep(max(0.0, started + len(rss) - time.monotonic()))
            if stalled.poll() is None:  # the last sample is taken while it still stalls
                rss.append(rss_mb(pid))
        stalled_out, _ = stalled.communicate()
        normal_out, _ = normal.communicate()
        if stalled.returncode != 0 or normal.returncode != 0:
            raise RuntimeError(f"a load process failed:\n{stalled_out}\n{normal_out}")
        stalled_counts = json.loads(stalled_out.strip().splitlines()[-1])
        load = json.loads(load_json.read_text())
    overall = load["overall"]
    result = {
        "server_flags": flags,
        "seconds": seconds,
        "rss_mb": {
            "start": rss[0],
            "max": max(rss),
            "end": rss[-1],
            "growth": rss[-1] - rss[0],
            "peak_growth": max(rss) - rss[0],
            # Flat or climbing once the stall is under way (transport windows full)?
            "growth_second_half": rss[-1] - rss[len(rss) // 2],
            "samples": rss,
        },
        "stalled": stalled_counts,
        "normal": {
            "streams": NORMAL_STREAMS,
            "p50_ms": overall["latency_ms"]["p50"],
            "p99_ms": overall["latency_ms"]["p99"],
            "drop_ratio": overall["drop_ratio"],
            "error_ratio": overall["error_ratio"],
            "fps_per_stream": overall["fps_per_stream"],
            "reconnects": load["reconnects"],
            "stream_errors": load["stream_errors"],
        },
    }
    memory = result["rss_mb"]
    print(
        f"  server RSS: start {memory['start']:.0f} MB, max {memory['max']:.0f} MB, end "
        f"{memory['end']:.0f} MB; growth {memory['growth']:+.0f} MB over {len(rss) - 1} s "
        f"(peak {memory['peak_growth']:+.0f} MB, {memory['growth_second_half']:+.0f} MB in the "
        "second half)"
    )
    print(
        f"  stalled caller: {stalled_counts['frames_sent']} of "
        f"{stalled_counts['frames_made']} frames taken by its call"
    )
    print(
        f"  normal streams: p99 {overall['latency_ms']['p99']:.1f} ms, dropped "
        f"{overall['drop_ratio']:.1%}, errors {overall['error_ratio']:.1%}, "
        f"{overall['fps_per_stream']:.1f} FPS per stream, {load['reconnects']} reconnects"
    )
    return result


def _side_by_side(bounded: dict, unbounded: dict) -> str:
    columns = (bounded, unbounded)
    compared = "unbounded, as before"
    if unbounded["server_flags"] != UNBOUNDED_FLAGS:
        compared = shlex.join(unbounded["server_flags"])
    rows = [
        ("RSS at start, MB", lambda r: f"{r['rss_mb']['start']:.0f}"),
        ("RSS max, MB", lambda r: f"{r['rss_mb']['max']:.0f}"),
        ("RSS at end, MB", lambda r: f"{r['rss_mb']['end']:.0f}"),
        ("RSS growth (end - start), MB", lambda r: f"{r['rss_mb']['growth']:+.0f}"),
        ("RSS peak growth (max - start), MB", lambda r: f"{r['rss_mb']['peak_growth']:+.0f}"),
        (
            "RSS growth in the second half, MB",
            lambda r: f"{r['rss_mb']['growth_second_half']:+.0f}",
        ),
        (
            "stalled caller: frames taken / made",
            lambda r: f"{r['stalled']['frames_sent']} / {r['stalled']['frames_made']}",
        ),
        ("normal streams: p99, ms", lambda r: f"{r['normal']['p99_ms']:.1f}"),
        ("normal streams: dropped", lambda r: f"{r['normal']['drop_ratio']:.1%}"),
        ("normal streams: errors", lambda r: f"{r['normal']['error_ratio']:.1%}"),
    ]
    lines = [f"{'':<38}{'bounded (default)':>20}{compared:>24}"]
    lines += [f"{label:<38}{cell(columns[0]):>20}{cell(columns[1]):>24}" for label, cell in rows]
    # Peaks, not ends: a flat server can end below its start (the allocator gives pages back).
    growth_bounded = max(bounded["rss_mb"]["peak_growth"], 1.0)
    ratio = unbounded["rss_mb"]["peak_growth"] / growth_bounded
    lines.append(
        f"RSS peak growth, {compared} / bounded: {ratio:.0f}x"
        + (" (bounded growth under 1 MB, counted as 1 MB)" if growth_bounded == 1.0 else "")
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench.stall", description=__doc__)
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the stall")
    parser.add_argument(
        "--server-flags",
        default=shlex.join(UNBOUNDED_FLAGS),
        help="flags of the server compared with the default one (default: %(default)s)",
    )
    parser.add_argument("--json", type=Path, help="write both results here")
    # The stalled caller's own process (started by bench_stall).
    parser.add_argument("--stall-target", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.stall_target:
        print(json.dumps(asyncio.run(_stalled_stream(args.stall_target, args.seconds))))
        return
    bounded = bench_stall(args.seconds)
    unbounded = bench_stall(args.seconds, shlex.split(args.server_flags))
    print(f"\nstall of {args.seconds:g} s, server flags compared: {args.server_flags}")
    print(_side_by_side(bounded, unbounded))
    if args.json:
        args.json.write_text(json.dumps({"bounded": bounded, "unbounded": unbounded}, indent=2))
        print(f"results: {args.json}")


if __name__ == "__main__":
    main()
