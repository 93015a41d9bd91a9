"""The drivers of the adapters over the Python library, each through its own entry point: the
GStreamer element in a pipeline (loadtest.gst_process runs it in a process of its own), and the
WebRTC gateway's track session fed camera frames (gateway_driver.py, a process of its own too:
aiortc's native libraries must not share a process with the server's). Each takes a scenario's
spec and reports, in `frames_out`, every frame that left the adapter ([index, segmented]), its
`error`, its `reconnects`, and whether it reported a give-up (`gave_up`)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from loadtest.gst_process import ROOT, run_pipeline
from tests.integration.conformance.scenarios import Driver, command_driver
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


GATEWAY_DRIVER = command_driver(
    (sys.executable, "-m", "tests.integration.conformance.gateway_driver"), ROOT
)
