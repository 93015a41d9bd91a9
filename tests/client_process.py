"""Streams run from a client process of its own against replicas behind one name, and the checks
of what they saw: for the failover and engine-failure tests."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

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
