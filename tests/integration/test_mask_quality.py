"""Mask quality: temporal smoothing, edge-aware upscaling and composited frames, on real
photos through the real server."""

from __future__ import annotations

import asyncio
import io
import itertools
from collections.abc import AsyncIterator

import grpc
import numpy as np
import pytest
from PIL import Image

from segmentation.v1 import segmentation_pb2 as pb
from segmentation_client import SegmentationClient, mask_to_array
from service.app import RunningService
from service.frames.refine import (
    Background,
    TemporalSmoother,
    box_mean,
    composite,
    guided_upscale,
    uncertainty,
)
from tests.helpers import ENGINE_INDEPENDENT
from tests.photos import astronaut_rgb, encode_jpeg, grace_hopper_rgb
from tests.reference import iou

OK = pb.StreamSegmentResponse.OK


def noisy_still_sequence(rgb: np.ndarray, frames: int, sigma: float, seed: int = 0) -> list[bytes]:
    """A still camera on a real photo: the same scene with fresh sensor noise in every frame."""
    rng = np.random.default_rng(seed)
    noisy = []
    for _ in range(frames):
        noise = rng.normal(0.0, sigma, rgb.shape)
        noisy.append(encode_jpeg(np.clip(rgb + noise, 0, 255).astype(np.uint8), quality=85))
    return noisy


async def stream_config(
    client: SegmentationClient, jpegs: list[bytes], config: pb.StreamConfig
) -> list[pb.StreamSegmentResponse]:
    """One stream with a full StreamConfig, each frame sent after the previous answer."""
    answered: asyncio.Queue[None] = asyncio.Queue()

    async def requests() -> AsyncIterator[pb.StreamSegmentRequest]:
        yield pb.StreamSegmentRequest(config=config)
        for frame_id, jpeg in enumerate(jpegs):
            yield pb.StreamSegmentRequest(frame=pb.Frame(frame_id=frame_id, jpeg=jpeg))
            await answered.get()

    responses = []
    async for response in client._stub.StreamSegment(requests()):
        responses.append(response)
        answered.put_nowait(None)
    assert [r.frame_id for r in responses] == list(range(len(jpegs)))
    assert all(r.status == OK for r in responses), [r.error_message for r in responses]
    return responses


def flicker(masks: list[np.ndarray]) -> float:
    """Mean absolute change of the mask from one frame to the next, in [0, 1]."""
    changes = [np.abs(b.astype(np.float32) - a).mean() for a, b in itertools.pairwise(masks)]
    return float(np.mean(changes)) / 255


@ENGINE_INDEPENDENT
async def test_temporal_smoothing_lowers_flicker_on_a_noisy_still_scene(
    server: RunningService, client: SegmentationClient
) -> None:
    jpegs = noisy_still_sequence(grace_hopper_rgb(), frames=24, sigma=6.0)
    figures = {}
    for strength in (0.0, 0.8):
        config = pb.StreamConfig(temporal_smoothing=strength)
        responses = await stream_config(client, jpegs, config)
        figures[strength] = flicker([mask_to_array(r.mask) for r in responses])
    print(f"\nflicker without smoothing {figures[0.0]:.5f}, with 0.8 {figures[0.8]:.5f}")
    assert figures[0.8] < figures[0.0] * 0.8


@ENGINE_INDEPENDENT
async def test_edge_aware_upscaling_keeps_the_mask_and_follows_the_image_edges(
    server: RunningService, client: SegmentationClient
) -> None:
    rgb = astronaut_rgb()
    jpeg = encode_jpeg(rgb)
    plain, guided = [
        mask_to_array((await stream_config(client, [jpeg], pb.StreamConfig(**options)))[0].mask)
        for options in ({}, {"edge_aware_upscale": True})
    ]
    assert iou(guided >= 128, plain >= 128) >= 0.98
    gray = np.asarray(Image.fromarray(rgb).convert("L"), np.float32)
    image_edges = np.hypot(*np.gradient(gray))

    def edge_strength_under(mask: np.ndarray) -> float:
        mask_edges = np.hypot(*np.gradient(mask.astype(np.float32)))
        return float((image_edges * mask_edges).sum() / mask_edges.sum())

    print(
        f"\nimage gradient under the mask's edges: bilinear {edge_strength_under(plain):.1f}, "
        f"guided {edge_strength_under(guided):.1f}"
    )
    assert edge_strength_under(guided) > edge_strength_under(plain) * 1.1


@ENGINE_INDEPENDENT
@pytest.mark.parametrize("background", ["color", "blur", "image"])
async def test_composited_frames_keep_the_person_and_change_the_background(
    server: RunningService, client: SegmentationClient, background: str
) -> None:
    rgb = grace_hopper_rgb()
    jpeg = encode_jpeg(rgb, quality=95)
    replacement = np.zeros_like(rgb)
    replacement[..., 1] = 255  # green
    options = {
        "color": pb.Composite(color_rgb=0x00FF00),
        "blur": pb.Composite(blur_radius=25),
        "image": pb.Composite(image_jpeg=encode_jpeg(replacement, quality=95)),
    }[background]
    plain, composited = [
        await stream_config(client, [jpeg], config)
        for config in (pb.StreamConfig(), pb.StreamConfig(composite=options))
    ]
    alpha = mask_to_array(plain[0].mask).astype(np.float32) / 255
    image = composited[0].composited
    assert not composited[0].HasField("mask")
    assert (image.width, image.height) == (rgb.shape[1], rgb.shape[0])
    result = np.asarray(Image.open(io.BytesIO(image.jpeg)).convert("RGB"), np.float32)
    person, behind = alpha > 0.98, alpha < 0.02
    assert person.mean() > 0.1 and behind.mean() > 0.1
    change = np.abs(result - rgb.astype(np.float32)).mean(axis=-1)
    assert change[person].mean() < 6, "the person's pixels are kept"
    if background == "blur":
        assert change[behind].mean() > 8, "the background is blurred"
    else:
        green = np.abs(result - np.array([0, 255, 0], np.float32)).mean(axis=-1)
        assert green[behind].mean() < 12, "the background is replaced"


@ENGINE_INDEPENDENT
@pytest.mark.parametrize(
    ("config", "message"),
    [
        (pb.StreamConfig(temporal_smoothing=1.5), "temporal_smoothing must be in [0, 1]"),
        (pb.StreamConfig(composite=pb.Composite(blur_radius=-1)), "blur_radius"),
        (pb.StreamConfig(composite=pb.Composite(image_jpeg=b"nope")), "background image"),
        (pb.StreamConfig(composite=pb.Composite(jpeg_quality=101)), "jpeg_quality"),
    ],
)
async def test_bad_quality_options_are_invalid_argument(
    client: SegmentationClient, config: pb.StreamConfig, message: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stream_config(client, [encode_jpeg(astronaut_rgb())], config)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in caught.value.details()


def test_smoothing_blends_uncertain_pixels_and_lets_sure_ones_follow() -> None:
    assert uncertainty(np.array([0.5], np.float32))[0] == pytest.approx(1.0)
    assert uncertainty(np.array([0.0, 1.0], np.float32)).max() < 1e-3
    smoother = TemporalSmoother(0.8)
    first = np.array([0.9, 0.5, 0.0], np.float32)
    assert np.array_equal(smoother(first, sequence=1), first)  # nothing to blend with yet
    second = smoother(np.array([0.1, 0.55, 1.0], np.float32), sequence=2)
    assert second[2] == pytest.approx(1.0, abs=1e-3)  # sure: follows the new mask
    assert second[1] == pytest.approx(0.55 + (0.5 - 0.55) * 0.8 * uncertainty(np.array([0.55]))[0])
    assert 0.1 < second[0] < 0.9  # unsure-ish: between old and new
    with pytest.raises(ValueError, match="strength"):
        TemporalSmoother(0.0)


def test_box_mean_matches_a_direct_window_mean() -> None:
    image = np.random.default_rng(3).random((9, 11)).astype(np.float32)
    fast = box_mean(image, 2)
    for y, x in [(2, 2), (4, 5), (6, 8), (3, 7)]:
        window = image[y - 2 : y + 3, x - 2 : x + 3]
        assert fast[y, x] == pytest.approx(window.mean(), rel=1e-5)
    reflected = np.pad(image, 2, mode="symmetric")  # at the borders the image is mirrored
    assert fast[0, 0] == pytest.approx(reflected[0:5, 0:5].mean(), rel=1e-5)


def test_guided_upscaling_puts_a_blurry_edge_where_the_image_has_it() -> None:
    full = np.zeros((64, 64, 3), np.uint8)
    full[:, 37:] = 255  # the image's edge at column 37
    small = np.asarray(Image.fromarray(full).resize((16, 16), Image.BILINEAR))
    alpha = np.zeros((16, 16), np.float32)
    alpha[:, 9:] = 1.0
    blurry = np.asarray(Image.fromarray(alpha, "F").resize((64, 64), Image.BILINEAR))
    guided = guided_upscale(alpha, small, full, radius=2, subsample=1)
    # The guided mask steps where the image does; the bilinear one ramps across it.
    assert guided[:, 30:36].max() < 0.25 and guided[:, 38:44].min() > 0.75
    assert blurry[:, 33:36].max() > 0.25 or blurry[:, 37:40].min() < 0.75


def test_a_frame_finishing_out_of_order_does_not_become_the_previous_mask() -> None:
    smoother = TemporalSmoother(1.0)
    smoother(np.full(4, 0.5, np.float32), sequence=1)
    newest = smoother(np.full(4, 0.7, np.float32), sequence=3)  # frame 3 finished first
    late = smoother(np.full(4, 0.3, np.float32), sequence=2)
    assert newest[0] > late[0] > 0.3  # the late frame is smoothed against the newest
    following = np.full(4, 0.55, np.float32)
    expected = following + (newest - following) * uncertainty(following)
    assert np.allclose(smoother(following, sequence=4), expected)  # frame 3 stayed the previous


def test_composite_is_the_alpha_weighted_sum_of_frame_and_background() -> None:
    frame = grace_hopper_rgb()
    height, width = frame.shape[:2]
    alpha = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :].repeat(height, axis=0)
    green = Background(color=(0, 255, 0))
    expected = frame * alpha[..., None] + np.array([0, 255, 0]) * (1 - alpha[..., None])
    assert np.abs(composite(frame, alpha, green).astype(np.float32) - expected).max() <= 1.0
    # A colour is rendered once for frames of one size, and again for another size only.
    behind = green.render(frame)
    assert green.render(frame) is behind and not behind.flags.writeable
    smaller = frame[: height // 2, : width // 2]
    assert green.render(smaller).shape == smaller.shape and green.render(frame) is not behind
    # An image of the frame's own size is used as it is, and stays the caller's to change.
    image = frame[::-1].copy()
    assert np.array_equal(Background(image=image).render(frame), image)
    image[0, 0] = 0
