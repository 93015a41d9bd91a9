"""The WebRTC gateway's driver of the conformance scenarios: its track session
(`SegmentationSession.process`, what each browser frame goes through) fed camera frames at the
spec's rate (JSON, argv[1]); prints what left it (JSON, as adapter_drivers.py describes)."""

from __future__ import annotations

import asyncio
import json
import sys
from fractions import Fraction

import av

from segmentation.v1 import segmentation_pb2 as pb
from segmentation_client import RetryPolicy, SegmentationClient
from segmentation_webrtc.tracks import SegmentationSession
from tests.integration.conformance.adapter_drivers import camera_frames


async def run(spec: dict) -> dict:
    policy = RetryPolicy(
        answer_timeout_s=spec.get("answer_timeout_s", 2.0),
        give_up_after_s=spec.get("give_up_after_s", 15.0),
    )
    frames = camera_frames(spec["frames"])
    pause_after, pause_s = spec.get("pause_after_frame", -1), spec.get("pause_s", 0.0)
    out = []
    async with SegmentationClient(
        spec["target"], token=spec.get("token") or None, retry_policy=policy
    ) as client:
        session = SegmentationSession(client, pb.Composite(color_rgb=0x00B140), "gateway-call")
        session.start()
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            for index, rgb in enumerate(frames):  # a camera: one frame per interval
                at = started + index / spec["fps"] + (pause_s if index > pause_after else 0)
                await asyncio.sleep(max(0.0, at - loop.time()))
                frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                frame.pts, frame.time_base = index, Fraction(1, spec["fps"])
                processed = await session.process(frame)
                out.append([index, processed is not frame])
        finally:
            await session.stop()
        reconnects = client.stream_stats.reconnects
    return {
        "frames_out": out,
        "error": None,  # the gateway never fails a track: it sends the camera's frames
        "reconnects": reconnects,
        "gave_up": session.streams_ended >= 1,
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(run(json.loads(sys.argv[1])))))
