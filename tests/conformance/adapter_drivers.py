"""The drivers of the adapters over the Python library, each through its own entry point: the
GStreamer element in a pipeline (loadtest.gst_process runs it in a process of its own), and the
WebRTC gateway's track session fed camera frames. Each takes a scenario's spec and reports, in
`frames_out`, every frame that left the adapter ([index, segmented]), its `error`, its
`reconnects`, and whether it reported a give-up (`gave_up`)."""

from __future__ import annotations

import asyncio
from fractions import Fraction
from pathlib import Path

import numpy as np

from loadtest.gst_process import run_pipeline
from segmentation.v1 import segmentation_pb2 as pb
from segmentation_client import RetryPolicy, SegmentationClient
from tests.conformance.scenarios import Driver
from tests.photos import astronaut_rgb

WIDTH, HEIGHT = 320, 240


def camera_frames(count: int) -> np.ndarray:
    """The astronaut photo at 320x240, panned a little each frame (RGB, N x H x W x 3)."""
    from PIL import Image

    photo = np.asarray(Image.fromarray(astronaut_rgb()).resize((WIDTH, HEIGHT)))
    return np.stack([np.roll(photo, 2 * n, axis=1) for n in range(count)])


def element_driver(folder: Path) -> Driver:
    async def drive(spec: dict) -> dict:
        properties = {
            "target": spec["target"], "mode": "mask", "unmasked-when-dropped": "true",
            "answer-timeout": spec.get("answer_timeout_s", 2.0),
            "give-up-after": spec.get("give_up_after_s", 15.0),
        }  # fmt: skip
        if spec.get("token"):
            properties["token"] = spec["token"]
        pause = {"after": spec.get("pause_after_frame", spec["frames"]) + 1,
                 "seconds": spec.get("pause_s", 0.0)}  # fmt: skip
        result = await run_pipeline(
            folder, camera_frames(spec["frames"]), input_format="RGB", live=True,
            fps=spec["fps"], pause=pause, properties=properties,
        )  # fmt: skip
        masks = np.load(folder / "out.npy") if (folder / "out.npy").exists() else []
        # A frame not segmented goes out unmasked (unmasked-when-dropped): all 255.
        segmented = [bool((mask != 255).any()) for mask in masks]
        error = result["error"]["message"] if result["error"] else None
        return {
            "frames_out": [[index, s] for index, s in enumerate(segmented)],
            "error": error,
            "reconnects": result.get("reconnects", 0),
            "gave_up": error is not None and "no replica answered" in error,
        }

    return drive


async def gateway_driver(spec: dict) -> dict:
    import av

    from segmentation_webrtc.tracks import SegmentationSession

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
