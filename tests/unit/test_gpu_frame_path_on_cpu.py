"""The GPU frame path's own logic on the CPU: its device calls go through `CpuFrameDevice`
(libjpeg-turbo, torch CPU tensors) instead of nvJPEG, everything else runs as on a GPU.
Batches of mixed sizes, a corrupt frame failing alone, answers in order, smoothing in stream
order, and masks and composites that agree with the CPU path's."""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models.registry import model_spec
from service.batching.batcher import BatchPolicy
from service.engines.base import DeviceEngine
from service.engines.model_free import ModelFreeEngine
from service.engines.torch_engine import TorchEngine
from service.errors import EngineFailure, FrameError, FrameErrorReason
from service.frames.codec import JpegCodec, MaskEncoding
from service.frames.cpu_path import CpuFramePath
from service.frames.gpu_device import CpuFrameDevice
from service.frames.gpu_ops import blended, blurred
from service.frames.gpu_path import GpuFramePath, GpuResult
from service.frames.path import FrameJob
from service.frames.pipeline import ModelPipeline
from service.frames.refine import Background, TemporalSmoother, composite
from service.frames.requests import CompositeRequest, OutputRequest
from service.frames.resize import resize
from service.frames.selection import create_frame_path
from service.frames.workers import WorkerThreads
from service.metrics import ServiceMetrics
from tests.photos import astronaut_jpeg, astronaut_rgb, grace_hopper_jpeg, video_frame_jpeg
from tests.reference import iou

SPEC = model_spec("selfie-general")
RAW = OutputRequest(0, 0, MaskEncoding.RAW_U8)


@pytest.fixture(scope="module")
def engine(model_paths: dict[str, Path]) -> TorchEngine:
    engine = TorchEngine(SPEC, model_paths[SPEC.name], "cpu", threads=1)
    engine.warm_up()
    return engine


@pytest.fixture(scope="module")
def workers() -> Iterator[WorkerThreads]:
    threads = WorkerThreads(1, "codec")
    yield threads
    threads.shutdown()


@pytest.fixture(scope="module")
def paths(engine: TorchEngine, workers: WorkerThreads) -> tuple[GpuFramePath, CpuFramePath]:
    codec = JpegCodec(max_frame_bytes=4 << 20, max_frame_pixels=4096 * 4096)
    return (
        GpuFramePath(engine, codec, workers, CpuFrameDevice()),
        CpuFramePath(engine, codec, workers),
    )


def _cut(jpeg: bytes, fraction: float) -> bytes:
    """Cut short, its end-of-image marker put back: past the cheap checks, into the decoder."""
    return jpeg[: int(len(jpeg) * fraction)] + b"\xff\xd9"


async def _through(path: object, jobs: list[FrameJob]) -> list[object]:
    """Each job through prepare, one batch, finish; a FrameError where a frame failed."""
    prepared = [await path.prepare(job) for job in jobs]
    batched = path.run_batch(prepared)
    assert len(batched) == len(jobs)
    return [
        result if isinstance(result, FrameError) else await path.finish(job, item, result)
        for job, item, result in zip(jobs, prepared, batched, strict=True)
    ]


def _mask(finished: object) -> np.ndarray:
    mask, _ = finished
    return np.frombuffer(mask.data, np.uint8).reshape(mask.height, mask.width) >= 128


async def test_a_corrupt_frame_fails_alone_in_a_batch_of_mixed_sizes(
    paths: tuple[GpuFramePath, CpuFramePath],
) -> None:
    gpu, cpu = paths
    good = [video_frame_jpeg(640, 480), astronaut_jpeg(), video_frame_jpeg(1280, 720)]
    corrupt = _cut(good[0], 0.5)  # the header still reads
    jobs = [FrameJob(jpeg, RAW) for jpeg in (good[0], corrupt, good[1], good[2])]

    answers = await _through(gpu, jobs)
    assert isinstance(answers[1], FrameError)
    assert answers[1].reason == FrameErrorReason.CORRUPT_JPEG
    expected = await _through(cpu, [jobs[0], jobs[2], jobs[3]])
    for answer, cpu_answer, size in zip(
        [answers[0], answers[2], answers[3]], expected, [(480, 640), (512, 512), (720, 1280)],
        strict=True,
    ):  # fmt: skip
        assert _mask(answer).shape == size
        assert iou(_mask(answer), _mask(cpu_answer)) >= 0.99


async def test_a_batch_of_only_corrupt_frames_answers_each(
    paths: tuple[GpuFramePath, CpuFramePath],
) -> None:
    gpu, _ = paths
    jpeg = grace_hopper_jpeg()
    cut = [_cut(jpeg, 1 / 3), _cut(jpeg, 1 / 2)]  # the headers read
    results = gpu.run_batch([await gpu.prepare(FrameJob(damaged, RAW)) for damaged in cut])
    assert [type(result) for result in results] == [FrameError, FrameError]


async def test_limits_are_checked_before_the_batch(
    engine: TorchEngine, workers: WorkerThreads
) -> None:
    small_limits = JpegCodec(max_frame_bytes=4 << 20, max_frame_pixels=100 * 100)
    strict = GpuFramePath(engine, small_limits, workers, CpuFrameDevice())
    with pytest.raises(FrameError) as raised:
        await strict.prepare(FrameJob(astronaut_jpeg(), RAW))
    assert raised.value.reason == FrameErrorReason.TOO_MANY_PIXELS


async def test_a_stream_is_smoothed_in_order_within_a_batch(
    paths: tuple[GpuFramePath, CpuFramePath],
) -> None:
    gpu, _ = paths
    smoother = TemporalSmoother(0.8)
    frames = [video_frame_jpeg(640, 480, shift) for shift in (0, 90)]
    request = OutputRequest(320, 240, MaskEncoding.PNG)
    jobs = [FrameJob(jpeg, request, smoother, sequence) for sequence, jpeg in enumerate(frames)]
    answers = await _through(gpu, jobs)
    assert [answer[0].encoding for answer in answers] == [MaskEncoding.PNG] * 2
    alone = TemporalSmoother(0.8)
    first = await _through(gpu, [FrameJob(frames[0], request, alone, 0)])
    assert first[0][0].data == answers[0][0].data  # the first frame had nothing before it
    second_unsmoothed = await _through(gpu, [FrameJob(frames[1], request)])
    assert second_unsmoothed[0][0].data != answers[1][0].data  # the second was blended
    assert smoother._previous_sequence == 1


async def test_a_composite_is_encoded_by_the_device_and_matches_the_cpu(
    paths: tuple[GpuFramePath, CpuFramePath],
) -> None:
    gpu, cpu = paths
    for background in (Background(color=(0, 255, 0)), Background(blur_radius=12.0)):
        request = OutputRequest(480, 360, MaskEncoding.RAW_U8, composite=CompositeRequest(
            background, 90))  # fmt: skip
        job = FrameJob(video_frame_jpeg(640, 480), request)
        (answer,), (expected,) = await _through(gpu, [job]), await _through(cpu, [job])
        assert answer[0] is None and (answer[1].width, answer[1].height) == (480, 360)
        got = np.asarray(Image.open(io.BytesIO(answer[1].jpeg)), np.float32)
        want = np.asarray(Image.open(io.BytesIO(expected[1].jpeg)), np.float32)
        assert got.shape == want.shape == (360, 480, 3)
        assert np.abs(got - want).mean() < 4.0


async def test_edge_aware_masks_are_finished_on_the_cpu(
    paths: tuple[GpuFramePath, CpuFramePath],
) -> None:
    gpu, cpu = paths
    job = FrameJob(video_frame_jpeg(640, 480), OutputRequest(0, 0, MaskEncoding.RAW_U8, True))
    prepared = await gpu.prepare(job)
    (result,) = gpu.run_batch([prepared])
    assert isinstance(result, GpuResult) and result.edge is not None
    (answer,), (expected,) = await _through(gpu, [job]), await _through(cpu, [job])
    assert iou(_mask(answer), _mask(expected)) >= 0.99


def test_the_blur_keeps_a_flat_image_flat() -> None:
    flat = torch.full((3, 40, 60), 100, dtype=torch.uint8)
    blur = Background(blur_radius=20.0)
    assert torch.allclose(blurred(flat, blur), torch.full((3, 40, 60), 100.0), atol=1e-3)


@pytest.mark.parametrize("size", [(640, 480), (1280, 720)])
def test_both_paths_blur_alike_within_a_level(size: tuple[int, int]) -> None:
    """OpenCV on the CPU, torch on the GPU, the parameters from Background on both."""
    frame = resize(astronaut_rgb(), *size)
    for radius in (1.0, 12.0, 30.0):
        background = Background(blur_radius=radius)
        cpu = background.render(frame).astype(np.float32)
        gpu = blurred(torch.from_numpy(frame).permute(2, 0, 1), background)
        difference = np.abs(cpu - gpu.permute(1, 2, 0).numpy().round())
        assert difference.mean() <= 0.5 and np.percentile(difference, 99) <= 1.0, radius


def test_both_paths_smooth_and_composite_alike_within_a_level() -> None:
    rng = np.random.default_rng(3)
    previous, alpha = (rng.random((256, 256), dtype=np.float32) for _ in range(2))
    smoother = TemporalSmoother(0.7)
    on_cpu = smoother.blend(previous, alpha)
    on_gpu = smoother.blend(torch.from_numpy(previous), torch.from_numpy(alpha), torch.log2)
    assert np.abs(on_cpu - on_gpu.numpy()).max() * 255 <= 1.0
    frame = resize(astronaut_rgb(), 320, 240)
    full_alpha = resize(alpha, 320, 240)
    background = Background(color=(0, 255, 0))
    cpu = composite(frame, full_alpha, background).astype(np.float32)
    behind = torch.tensor(background.color, dtype=torch.float32)[:, None, None].expand(3, 240, 320)
    gpu = blended(torch.from_numpy(frame).permute(2, 0, 1), behind, torch.from_numpy(full_alpha))
    assert np.abs(cpu - gpu.permute(1, 2, 0).numpy()).max() <= 1.0


async def test_the_cheap_checks_answer_damaged_frames_as_the_cpu_path(
    paths: tuple[GpuFramePath, CpuFramePath],
) -> None:
    """What nvJPEG may decode as a partial image is answered corrupt_jpeg before the batch,
    as libjpeg-turbo answers it; what libjpeg-turbo decodes passes."""
    gpu, cpu = paths
    jpeg = video_frame_jpeg(640, 480)
    damaged = {
        "truncated": jpeg[: len(jpeg) * 3 // 5],
        "end-of-image cut": jpeg[:-2],
        "zeros after 40%": jpeg[: len(jpeg) * 2 // 5] + bytes(len(jpeg) * 3 // 5),
        "header only": jpeg[: jpeg.index(b"\xff\xda")],
    }
    for what, data in damaged.items():
        for path in (gpu, cpu):
            with pytest.raises(FrameError) as raised:
                await path.prepare(FrameJob(data, RAW))
            assert raised.value.reason == FrameErrorReason.CORRUPT_JPEG, what
    for fine in (jpeg + bytes(100), jpeg + b"trailing bytes"):
        await gpu.prepare(FrameJob(fine, RAW))
        await cpu.prepare(FrameJob(fine, RAW))


async def test_damage_inside_the_image_data_passes_the_cheap_checks_the_cpu_path_refuses(
    paths: tuple[GpuFramePath, CpuFramePath],
) -> None:
    """A zeroed stretch amid the scan, the end intact: no check of the structure sees it, so on
    a GPU host nvJPEG decodes it (into a damaged picture) where libjpeg-turbo says corrupt_jpeg.
    docs/api.md's table says so; a cheaper check that finds it makes this test fail."""
    gpu, cpu = paths
    jpeg = video_frame_jpeg(640, 480)
    scan = jpeg.index(b"\xff\xda")
    third = (len(jpeg) - scan) // 3
    damaged = jpeg[: scan + third] + bytes(third) + jpeg[scan + 2 * third :]
    await gpu.prepare(FrameJob(damaged, RAW))
    with pytest.raises(FrameError) as raised:
        await cpu.prepare(FrameJob(damaged, RAW))
    assert raised.value.reason == FrameErrorReason.CORRUPT_JPEG


class _BrokenDevice(CpuFrameDevice):
    """What a CUDA device does after it failed, which cannot happen on the CPU: each decode
    raises, and so does the device's synchronise when `sticky`."""

    def __init__(self, error: str, sticky: bool) -> None:
        super().__init__()
        self._error, self._sticky = error, sticky

    def decode(self, jpegs: list[bytes]) -> list[torch.Tensor]:
        raise RuntimeError(self._error)

    def check(self) -> None:
        if self._sticky:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")


@pytest.mark.parametrize(
    ("error", "sticky", "recoverable"),
    [
        ("CUDA error: an illegal memory access was encountered", True, False),
        # torchvision 0.26's texts (its image.so): nvJPEG's allocator failure is status 5,
        # wrapped with the C++ backtrace on decode; torch's own allocation failure.
        (
            "Error while decoding JPEG images: Failed to decode batch: 5\nException raised from "
            "decode_images at decode_jpegs_cuda.cpp:494 (most recent call first):",
            False,
            True,
        ),
        ("Failed to create pinned buffer: 5", False, True),
        (
            "Error while decoding JPEG images: CUDA out of memory. Tried to allocate 20.00 MiB",
            False,
            True,
        ),
        ("Error while decoding JPEG images: Failed to synchronize CUDA stream: 2", False, True),
    ],
)
async def test_a_failed_device_fails_the_batch_as_an_engine_failure(
    engine: TorchEngine, workers: WorkerThreads, error: str, sticky: bool, recoverable: bool
) -> None:
    codec = JpegCodec(max_frame_bytes=4 << 20, max_frame_pixels=4096 * 4096)
    gpu = GpuFramePath(engine, codec, workers, _BrokenDevice(error, sticky))
    prepared = [await gpu.prepare(FrameJob(video_frame_jpeg(640, 480), RAW)) for _ in range(2)]
    with pytest.raises(EngineFailure) as raised:
        gpu.run_batch(prepared)
    assert raised.value.recoverable is recoverable


@pytest.mark.parametrize(
    "error",
    [
        "Error while decoding JPEG images: Failed to get image info: 3",  # NVJPEG_STATUS_BAD_JPEG
        "Error while decoding JPEG images: Failed to parse jpeg stream: 4",  # not supported
        "Error while decoding JPEG images: Failed to decode batch: 50",
    ],
)
async def test_a_decode_error_of_the_frames_themselves_fails_each_frame_as_corrupt(
    engine: TorchEngine, workers: WorkerThreads, error: str
) -> None:
    codec = JpegCodec(max_frame_bytes=4 << 20, max_frame_pixels=4096 * 4096)
    gpu = GpuFramePath(engine, codec, workers, _BrokenDevice(error, sticky=False))
    prepared = [await gpu.prepare(FrameJob(video_frame_jpeg(640, 480), RAW)) for _ in range(2)]
    results = gpu.run_batch(prepared)
    assert [result.reason for result in results] == [FrameErrorReason.CORRUPT_JPEG] * 2


def _pipeline(gpu: GpuFramePath, max_queue_delay_ms: float) -> ModelPipeline:
    """The GPU path as the server runs it, behind its own batch runner."""
    policy, metrics = BatchPolicy(max_queue_delay_ms=max_queue_delay_ms), ServiceMetrics()
    return ModelPipeline(gpu.engine, gpu, policy, metrics.for_model("m"), failing_after_s=3.0)


async def test_the_gpu_path_bills_its_decode_and_encode_to_their_stages(
    paths: tuple[GpuFramePath, CpuFramePath],
) -> None:
    gpu, _ = paths
    pipeline = _pipeline(gpu, max_queue_delay_ms=1.0)
    request = OutputRequest(0, 0, MaskEncoding.RAW_U8, composite=CompositeRequest(
        Background(blur_radius=12.0), 90))  # fmt: skip
    job = FrameJob(video_frame_jpeg(1280, 720), request)
    await pipeline.start()
    try:
        started = time.perf_counter()
        await gpu.prepare(job)
        header_s = time.perf_counter() - started
        answer = await pipeline.segment(job.jpeg, request)
    finally:
        await pipeline.stop()
    timings = answer.timings
    # The decode happens in the batch, yet is billed as decode, not as inference.
    assert timings.decode_s > 2 * header_s and timings.encode_s > 0.0
    assert timings.decode_s + timings.inference_s + timings.encode_s <= timings.total_s


def test_a_cpu_engine_gets_the_cpu_path(engine: TorchEngine, workers: WorkerThreads) -> None:
    codec = JpegCodec(max_frame_bytes=1 << 20, max_frame_pixels=1 << 22)
    assert isinstance(create_frame_path(engine, codec, workers), CpuFramePath)


async def test_through_the_batch_runner_every_frame_gets_its_own_answer(
    paths: tuple[GpuFramePath, CpuFramePath],
) -> None:
    """The path as the server drives it: frames from several callers batched together, one
    corrupt, each answered on its own, in the order each caller sent them."""
    gpu, _ = paths
    pipeline = _pipeline(gpu, max_queue_delay_ms=50.0)
    await pipeline.start()
    try:
        good = video_frame_jpeg(640, 480)
        frames = [good, _cut(good, 0.5), astronaut_jpeg(), video_frame_jpeg(1280, 720)]
        answers = await asyncio.gather(
            *(pipeline.segment(jpeg, RAW) for jpeg in frames), return_exceptions=True
        )
    finally:
        await pipeline.stop()
    assert isinstance(answers[1], FrameError)
    assert answers[1].reason == FrameErrorReason.CORRUPT_JPEG
    sizes = [(a.mask.width, a.mask.height) for n, a in enumerate(answers) if n != 1]
    assert sizes == [(640, 480), (512, 512), (1280, 720)]
    assert max(a.batch_size for n, a in enumerate(answers) if n != 1) > 1  # batched together


async def test_masks_and_composites_mixed_in_a_batch_each_get_their_own(
    paths: tuple[GpuFramePath, CpuFramePath],
) -> None:
    gpu, _ = paths
    frame = video_frame_jpeg(640, 480)
    green = CompositeRequest(Background(color=(0, 255, 0)), 90)
    blur = CompositeRequest(Background(blur_radius=8.0), 60)
    jobs = [
        FrameJob(frame, OutputRequest(0, 0, MaskEncoding.RAW_U8, composite=green)),
        FrameJob(frame, RAW),
        FrameJob(frame, OutputRequest(320, 240, MaskEncoding.RAW_U8, composite=blur)),
        FrameJob(frame, OutputRequest(0, 0, MaskEncoding.RAW_U8, composite=green)),
    ]
    answers = await _through(gpu, jobs)
    kinds = [(mask is None, image is None) for mask, image in answers]
    assert kinds == [(True, False), (False, True), (True, False), (True, False)]
    sizes = [Image.open(io.BytesIO(image.jpeg)).size for _, image in answers if image]
    assert sizes == [(640, 480), (320, 240), (640, 480)]
    assert answers[0][1].jpeg == answers[3][1].jpeg  # the same frame and background


def test_the_gpu_path_needs_a_declared_device_engine(engine: TorchEngine) -> None:
    assert isinstance(engine, DeviceEngine)
    assert not isinstance(ModelFreeEngine(SPEC), DeviceEngine)


def test_a_cuda_engine_without_cuda_jpeg_keeps_the_cpu_path_and_says_why(
    workers: WorkerThreads, caplog: pytest.LogCaptureFixture
) -> None:
    """Where torchvision or its CUDA JPEG is missing (CI has no torchvision, no CUDA), frames
    stay on the CPU path even for an engine on CUDA, and the log says why."""

    class OnCuda:
        name, spec, device, batch_sizes, max_batch_size, batches_at_once = (
            "torch", SPEC, "cuda:0", (1,), None, 1)  # fmt: skip

        def infer(self, frames: np.ndarray) -> np.ndarray:
            raise AssertionError("not called")

        infer_on_device = warm_up = padded_size = infer

    codec = JpegCodec(max_frame_bytes=1 << 20, max_frame_pixels=1 << 22)
    with caplog.at_level(logging.INFO):
        path = create_frame_path(OnCuda(), codec, workers)
    if not isinstance(path, CpuFramePath):
        pytest.skip("torchvision's CUDA JPEG works on this host")
    why = [r.getMessage() for r in caplog.records if "CUDA JPEG does not work" in r.getMessage()]
    assert why and "cuda:0: " in why[0] and "Error" in why[0]  # the exception, by its type
    assert any("frames on the CPU" in record.getMessage() for record in caplog.records)


async def test_the_probe_runs_the_model_again_where_the_warm_up_would_not(
    paths: tuple[GpuFramePath, CpuFramePath], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure confined to the model's kernels (the device's codec still works): the engine's
    warm-up has run once and is skipped, so only the probe can tell the engine is not mended."""
    for path in paths:
        path.warm_up()
        monkeypatch.setattr(path.engine, "infer", _failing_infer)
        path.warm_up()  # the torch engine's warm-up runs once: it cannot tell
        with pytest.raises(RuntimeError, match="CUBLAS_STATUS_EXECUTION_FAILED"):
            path.probe()
        monkeypatch.undo()
        path.probe()  # mended: the probe passes


def _failing_infer(frames: np.ndarray) -> np.ndarray:
    raise RuntimeError("CUDA error: CUBLAS_STATUS_EXECUTION_FAILED when calling cublasSgemm")
