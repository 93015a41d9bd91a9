"""Assembles the service from its config, and takes it down in the right order.

Start: the gRPC port opens first with health NOT_SERVING, so that orchestrators can probe it;
models load and warm up; only then health turns SERVING. Meanwhile, an engine that fails every
batch turns readiness NOT_SERVING and ends its streams (`api.readiness`), and one that cannot
recover sets `RunningService.failed`, for the process to end. Stop: health NOT_SERVING, no new
calls, open calls get `shutdown_grace_s` to finish, then the models stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from models.fetch import ensure_model_files
from models.registry import model_spec
from segmentation.v1 import segmentation_pb2_grpc as pb_grpc
from service.api.auth import BearerTokenInterceptor
from service.api.readiness import SERVICE_NAME, Readiness
from service.api.servicer import SegmentationServicer, ServicerSettings
from service.api.transport import add_port, local_target, server_options, start_health_server
from service.config import ServiceConfig
from service.engines.base import Engine
from service.engines.selection import (
    DeepLabSettings,
    EngineSettings,
    create_deeplab_engine,
    create_engine,
)
from service.frames.codec import JpegCodec
from service.frames.pipeline import ModelPipeline
from service.frames.selection import create_frame_path
from service.frames.workers import WorkerThreads
from service.metrics import STREAM_LATENCY_QUANTILES, ServiceMetrics
from service.streams.admission import AdmissionScheduler
from service.streams.headroom import FrameCounts, Headroom
from service.streams.registry import StreamRegistry
from service.streams.video_stream import VideoStream

log = logging.getLogger(__name__)
# After the last stream ended on shutdown: a few frame intervals at 30 FPS.
_STATUS_LINGER_S = 0.2


@dataclass
class RunningService:
    target: str  # where a client on this machine connects, HOST:PORT
    port: int
    metrics_port: int  # where /metrics is served; 0 when metrics are off
    config: ServiceConfig
    pipelines: dict[str, ModelPipeline]
    streams: StreamRegistry
    metrics: ServiceMetrics
    health: health.aio.HealthServicer
    admission: AdmissionScheduler[VideoStream]  # room for frames in flight, across all streams
    drain: Callable[[], None]  # what shutdown does first: refuse new calls, end open streams
    readiness: Readiness
    headroom: Headroom  # the measured load, and the utilisation gauge's value
    health_port: int  # the plaintext health-only port on 127.0.0.1; 0 when off
    failed: asyncio.Event  # set when an engine failed beyond recovery: the process should end


def _engine_settings(config: ServiceConfig) -> EngineSettings:
    return EngineSettings(
        engine=config.engine,
        threads=config.engine_threads,
        batches_at_once=config.max_batches_in_flight,
        engine_batch_sizes=config.engine_batch_sizes,
        mixed_precision=config.engine_mixed_precision,
        xla=config.engine_xla,
        torch_precision=config.engine_precision,
        model_dir=Path(config.model_dir),
    )


def _create_engines(config: ServiceConfig) -> list[Engine]:
    """Every model's engine: the selfie models the config names, and DeepLab if given."""
    specs = [model_spec(name) for name in config.models]
    paths = ensure_model_files(specs, Path(config.model_dir), config.fetch_models)
    settings = _engine_settings(config)
    engines = [create_engine(settings, spec, paths[spec.name]) for spec in specs]
    if config.deeplab_path:
        deeplab = DeepLabSettings(
            Path(config.deeplab_path),
            config.deeplab_batch_sizes,
            config.deeplab_input_tensor,
            config.deeplab_logits_tensor,
        )
        engines.append(create_deeplab_engine(settings, deeplab))
    return engines


async def _load_pipelines(
    config: ServiceConfig,
    codec: JpegCodec,
    codec_workers: WorkerThreads,
    metrics: ServiceMetrics,
    pipelines: dict[str, ModelPipeline],
) -> None:
    """Loads and warms up every model into `pipelines` (filled as they come, for stopping)."""
    for engine in await asyncio.to_thread(_create_engines, config):
        name = engine.spec.name
        # Trying nvJPEG on a GPU host takes a moment: not on the event loop.
        path = await asyncio.to_thread(create_frame_path, engine, codec, codec_workers)
        pipeline = ModelPipeline(
            engine,
            path,
            config.batch_policy,
            metrics.for_model(name),
            failing_after_s=config.engine_failing_after_s,
        )
        pipelines[name] = pipeline
        await pipeline.start()
        metrics.add_model(name, engine.name, engine.device, load=pipeline.batch_runner)
        log.info("model %s ready on %s (%s)", name, engine.name, engine.device)


def _servicer_settings(config: ServiceConfig) -> ServicerSettings:
    return ServicerSettings(
        config.default_model,
        config.max_frame_pixels,
        config.stream_idle_timeout_s,
        config.max_frames_in_flight_per_stream,
        config.max_unwritten_answers_per_stream,
    )


def _watch_engines(
    pipelines: dict[str, ModelPipeline],
    config: ServiceConfig,
    readiness: Readiness,
    servicer: SegmentationServicer,
    failed: asyncio.Event,
) -> None:
    """Each engine's health drives readiness and its streams; a fatal failure, the process."""

    def changed(model: str, failing: bool) -> None:
        readiness.engine_changed(model, failing)
        if failing:
            servicer.end_streams_of(model)

    def fatal(model: str, error: BaseException) -> None:
        log.critical(
            "the engine of %s failed beyond recovery (%s): the process ends, to be restarted",
            model,
            error,
        )
        failed.set()

    for name, pipeline in pipelines.items():
        engine_health = pipeline.batch_runner.engine_health
        engine_health.on_change(lambda failing, name=name: changed(name, failing))
        engine_health.on_fatal(lambda error, name=name: fatal(name, error))


async def sample_load(headroom: Headroom) -> None:
    """Samples the replica's load for ever. A sample that fails is logged and the next one is
    taken: a sampler that died would freeze the last load, and a full one would refuse every
    new stream from then on."""
    while True:
        try:
            headroom.sample()
        except Exception:
            log.exception("sampling the replica's load failed; the next sample is taken as usual")
        await asyncio.sleep(headroom.sample_interval_s)


async def _wait_for_streams_to_end(streams: StreamRegistry, grace_s: float) -> float:
    """Waits, within the grace, for drained streams to end, then lingers a moment so that
    their callers read the final status and stop sending: closing a connection that still has
    unread frames in it resets it, and the caller may lose the status to the reset. Returns
    the grace left."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace_s
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(grace_s):
            await streams.wait_until_empty()
    await asyncio.sleep(min(_STATUS_LINGER_S, max(0.0, deadline - loop.time())))
    return max(0.0, deadline - loop.time())


def _log_transport(config: ServiceConfig) -> None:
    if config.tls_client_ca_file:
        transport = "mutual TLS"
    elif config.tls:
        transport = "TLS"
    else:
        transport = "PLAINTEXT: for development or a trusted network only; see --tls-cert-file"
    token = "bearer token required" if config.auth_token else "no token required"
    log.info("listening on %s, %s, %s; loading %s", config.address, transport, token, config.models)


@asynccontextmanager
async def running_server(config: ServiceConfig) -> AsyncIterator[RunningService]:
    """Starts the whole service, ready and warm, and always takes it down again."""
    metrics = ServiceMetrics(config.max_stream_series)
    pipelines: dict[str, ModelPipeline] = {}
    headroom = Headroom(
        config.load_window_s,
        lambda: [pipeline.batch_runner for pipeline in pipelines.values()],
        lambda: FrameCounts(servicer.frames_answered, servicer.frames_dropped),
    )
    measured_full = (lambda: headroom.load.full_because) if config.measured_admission else None
    streams = StreamRegistry(config.max_streams, measured_full)
    streams.on_change = lambda count: headroom.streams_changed(count, config.max_streams)
    admission: AdmissionScheduler[VideoStream] = AdmissionScheduler(config.max_frames_in_flight)
    metrics.report_streams(lambda: streams.reports(STREAM_LATENCY_QUANTILES))
    metrics.capacity_utilisation.set_function(lambda: headroom.utilisation)
    codec = JpegCodec(config.max_frame_bytes, config.max_frame_pixels)
    codec_workers = WorkerThreads(config.decode_workers, "codec")
    readiness = Readiness(health.aio.HealthServicer())
    health_servicer = readiness.servicer
    failed = asyncio.Event()
    servicer = SegmentationServicer(_servicer_settings(config), streams, admission, metrics, codec)
    interceptors = [BearerTokenInterceptor(config.auth_token)] if config.auth_token else []
    server = grpc.aio.server(interceptors=interceptors, options=server_options(config))
    pb_grpc.add_SegmentationServiceServicer_to_server(servicer, server)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
         reflection.SERVICE_NAME),
        server,
    )  # fmt: skip
    await readiness.publish()
    port = add_port(server, config)
    started = False
    health_server: grpc.aio.Server | None = None
    health_port = 0
    sampler: asyncio.Task[None] | None = None
    try:
        await server.start()
        started = True
        _log_transport(config)
        if config.health_port >= 0:
            health_server, health_port = await start_health_server(
                health_servicer, config.health_port
            )
            log.info("gRPC health alone, plaintext, on 127.0.0.1:%d", health_port)
        metrics_port = metrics.serve(config.metrics_port) if config.metrics_port >= 0 else 0
        if metrics_port:
            log.info("metrics on :%d/metrics", metrics_port)
        await _load_pipelines(config, codec, codec_workers, metrics, pipelines)
        _watch_engines(pipelines, config, readiness, servicer, failed)
        servicer.serve_models(pipelines)
        sampler = asyncio.create_task(sample_load(headroom), name="load-sampler")
        await readiness.set_warm()
        log.info("serving %s; health SERVING", sorted(pipelines))
        yield RunningService(
            target=local_target(config.address, port),
            port=port,
            metrics_port=metrics_port,
            config=config,
            pipelines=pipelines,
            streams=streams,
            metrics=metrics,
            health=health_servicer,
            admission=admission,
            drain=servicer.drain,
            readiness=readiness,
            headroom=headroom,
            health_port=health_port,
            failed=failed,
        )
    finally:
        await readiness.set_draining()
        servicer.drain()
        if sampler is not None:
            sampler.cancel()
        if started:
            remaining_s = await _wait_for_streams_to_end(streams, config.shutdown_grace_s)
            await server.stop(remaining_s)
        if health_server is not None:
            await health_server.stop(0)
        log.info(
            "stopped: %d stream frames received, %d answered",
            servicer.frames_received,
            servicer.frames_answered,
        )
        for pipeline in pipelines.values():
            await pipeline.stop()
        codec_workers.shutdown()
        metrics.close()
