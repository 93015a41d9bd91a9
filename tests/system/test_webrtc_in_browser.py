"""The whole product in a browser: headless Chromium's fake camera (a video made of a real
photo) goes over WebRTC to the gateway, the gateway asks the real service, and the video that
comes back has the person kept and the background replaced.

The gateway runs as its own process, as `make demo` starts it: aiortc's bundled libsrtp and
TensorFlow (which other tests load into this process) crash when loaded into one process."""

from __future__ import annotations

import asyncio
import base64
import io
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from loadtest.local_server import free_port, wait_for_http
from segmentation.v1 import segmentation_pb2 as pb
from segmentation_client import SegmentationClient, mask_to_array
from service.app import running_server
from tests.helpers import loopback_config
from tests.photos import encode_jpeg, grace_hopper_rgb

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
GREEN = np.array([0, 177, 64], np.float32)
WIDTH, HEIGHT = 640, 480
ARTIFACTS = Path(__file__).parents[2] / "test-artifacts"  # kept after the run, not committed


def camera_frame() -> np.ndarray:
    return np.asarray(Image.fromarray(grace_hopper_rgb()).resize((WIDTH, HEIGHT)))


def write_y4m(path: Path, rgb: np.ndarray, frames: int = 30) -> None:
    """A still camera in Chromium's fake-capture format (YUV 4:2:0)."""
    y, cb, cr = Image.fromarray(rgb).convert("YCbCr").split()
    half = (WIDTH // 2, HEIGHT // 2)
    planes = y.tobytes() + cb.resize(half).tobytes() + cr.resize(half).tobytes()
    with path.open("wb") as file:
        file.write(f"YUV4MPEG2 W{WIDTH} H{HEIGHT} F15:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(frames):
            file.write(b"FRAME\n" + planes)


GRAB_FRAME = """() => {
  const video = document.getElementById('processed');
  const canvas = document.createElement('canvas');
  canvas.width = video.videoWidth; canvas.height = video.videoHeight;
  canvas.getContext('2d').drawImage(video, 0, 0);
  return canvas.toDataURL('image/png');
}"""


async def test_a_browser_call_comes_back_with_the_background_replaced(tmp_path: Path) -> None:
    from playwright.async_api import async_playwright

    assert Path(CHROMIUM).exists(), "Debian's chromium is missing: run `make test`"
    source = camera_frame()
    camera = tmp_path / "camera.y4m"
    write_y4m(camera, source)
    config = loopback_config(models=("selfie-general",))
    async with running_server(config) as service:
        async with SegmentationClient(service.target) as client:
            mask = mask_to_array(
                (
                    await client.segment(encode_jpeg(source), mask_encoding=pb.MASK_ENCODING_RAW_U8)
                ).mask
            )
        port = free_port()
        gateway = await asyncio.create_subprocess_exec(
            Path(sys.executable).parent / "segmentation-webrtc-gateway", "--listen",
            f"127.0.0.1:{port}", "--target", service.target, "--loopback-only",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        try:
            await asyncio.to_thread(wait_for_http, f"http://127.0.0.1:{port}/")
            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(
                    executable_path=CHROMIUM,
                    headless=True,
                    args=[
                        "--use-fake-ui-for-media-stream",
                        "--use-fake-device-for-media-stream",
                        f"--use-file-for-fake-video-capture={camera}",
                        "--allow-loopback-in-peer-connection",
                        "--disable-features=WebRtcHideLocalIpsWithMdns",
                        "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update",
                        "--disable-sync",
                    ],
                )  # fmt: skip
                page = await browser.new_page(viewport={"width": 1100, "height": 560})
                await page.goto(f"http://127.0.0.1:{port}/")
                await page.select_option("#effect", "green")
                await page.click("#start")
                await page.wait_for_function(
                    "window.lastFigures && window.lastFigures.frame >= 30 && "
                    "document.getElementById('processed').videoWidth > 0",
                    timeout=60_000,
                )
                await page.wait_for_timeout(500)  # a few more frames on screen
                frame_png = await page.evaluate(GRAB_FRAME)
                round_trip_ms = await page.evaluate("window.meanRoundTripMs")
                server_ms = await page.evaluate("window.lastFigures.server_ms")
                ARTIFACTS.mkdir(exist_ok=True)
                screenshot = ARTIFACTS / "webrtc-demo.png"
                await page.screenshot(path=str(screenshot))
                await browser.close()
        finally:
            gateway.terminate()
            gateway_output = (await gateway.communicate())[0].decode()
    assert "Traceback" not in gateway_output, gateway_output

    received = np.asarray(
        Image.open(io.BytesIO(base64.b64decode(frame_png.split(",")[1]))).convert("RGB"),
        np.float32,
    )
    print(
        f"\nround trip browser frame -> service -> browser: {round_trip_ms:.1f} ms mean "
        f"(service {server_ms:.1f} ms); screenshot {screenshot}"
    )
    assert received.shape == (HEIGHT, WIDTH, 3)
    person, background = mask > 250, mask < 5
    assert person.mean() > 0.1 and background.mean() > 0.1
    kept = np.abs(received - source.astype(np.float32)).mean(axis=-1)[person].mean()
    replaced = np.abs(received - GREEN).mean(axis=-1)[background].mean()
    assert kept < 25, f"the person changed: mean difference {kept:.1f}"
    assert replaced < 30, f"the background is not the green screen: difference {replaced:.1f}"
    assert screenshot.stat().st_size > 10_000
