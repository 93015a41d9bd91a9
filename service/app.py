"""Assembles the service from its config, and takes it down in the right order.

Start: the gRPC port opens first with health NOT_SERVING, so that orchestrators can probe it;
models load and warm up; only then health turns SERVING. Stop: health NOT_SERVING, no new
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
from segmentation.v1 import segmentation_pb2 as pb
from segmentation.v1 import segmentation_pb2_grpc as pb_grpc
from service.api.auth import BearerTokenInterceptor
from service.api.servicer import SegmentationServicer, ServicerSettings
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
from service.streams.registry import StreamRegistry
from service.streams.video_stream import VideoStream

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["SegmentationService"].full_name

# Room for the protobuf framing around the largest frame, so that a frame just over
# max_frame_bytes gets its own specific ERROR instead of a transport error.
_MESSAGE_OVERHEAD_BYTES = 64 << 10
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


def _local_target(address: str, port: int) -> str:
    host = address.rsplit(":", 1)[0]
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host in ("[::]", "::"):
        host = "[::1]"
    return f"{host}:{port}"


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
        pipeline = ModelPipeline(engine, path, config.batch_policy, metrics.for_model(name))
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


async def _set_health(health_servicer: health.aio.HealthServicer, serving: bool) -> None:
    status = (
        health_pb2.HealthCheckResponse.SERVING
        if serving
        else health_pb2.HealthCheckResponse.NOT_SERVING
    )
    for name in ("", SERVICE_NAME):  # "" is the whole server, as Kubernetes probes ask
        await health_servicer.set(name, status)


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


def _server_options(config: ServiceConfig) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", config.max_frame_bytes + _MESSAGE_OVERHEAD_BYTES),
        ("grpc.max_send_message_length", -1),
        # Find dead peers of long-lived streams, and let clients ping as the client library does.
        ("grpc.keepalive_time_ms", int(config.keepalive_time_s * 1000)),
        ("grpc.keepalive_timeout_ms", int(config.keepalive_timeout_s * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        (
            "grpc.http2.min_ping_interval_without_data_ms",
            int(config.min_client_ping_interval_s * 1000),
        ),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.http2.max_ping_strikes", 2),
    ]


def _add_port(server: grpc.aio.Server, config: ServiceConfig) -> int:
    if not config.tls:
        return server.add_insecure_port(config.address)
    client_ca = Path(config.tls_client_ca_file).read_bytes() if config.tls_client_ca_file else None
    credentials = grpc.ssl_server_credentials(
        [(Path(config.tls_key_file).read_bytes(), Path(config.tls_cert_file).read_bytes())],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )
    return server.add_secure_port(config.address, credentials)


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
    streams = StreamRegistry(config.max_streams)
    admission: AdmissionScheduler[VideoStream] = AdmissionScheduler(config.max_frames_in_flight)
    metrics.report_streams(lambda: streams.reports(STREAM_LATENCY_QUANTILES))
    codec = JpegCodec(config.max_frame_bytes, config.max_frame_pixels)
    codec_workers = WorkerThreads(config.decode_workers, "codec")
    pipelines: dict[str, ModelPipeline] = {}
    health_servicer = health.aio.HealthServicer()
    servicer = SegmentationServicer(_servicer_settings(config), streams, admission, metrics, codec)
    interceptors = [BearerTokenInterceptor(config.auth_token)] if config.auth_token else []
    server = grpc.aio.server(interceptors=interceptors, options=_server_options(config))
    pb_grpc.add_SegmentationServiceServicer_to_server(servicer, server)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
         reflection.SERVICE_NAME),
        server,
    )  # fmt: skip
    await _set_health(health_servicer, serving=False)
    port = _add_port(server, config)
    started = False
    try:
        await server.start()
        started = True
        _log_transport(config)
        metrics_port = metrics.serve(config.metrics_port) if config.metrics_port >= 0 else 0
        if metrics_port:
            log.info("metrics on :%d/metrics", metrics_port)
        await _load_pipelines(config, codec, codec_workers, metrics, pipelines)
        servicer.serve_models(pipelines)
        await _set_health(health_servicer, serving=True)
        log.info("serving %s; health SERVING", sorted(pipelines))
        yield RunningService(
            target=_local_target(config.address, port),
            port=port,
            metrics_port=metrics_port,
            config=config,
            pipelines=pipelines,
            streams=streams,
            metrics=metrics,
            health=health_servicer,
            admission=admission,
            drain=servicer.drain,
        )
    finally:
        await _set_health(health_servicer, serving=False)
        servicer.drain()
        if started:
            remaining_s = await _wait_for_streams_to_end(streams, config.shutdown_grace_s)
            await server.stop(remaining_s)
        log.info(
            "stopped: %d stream frames received, %d answered",
            servicer.frames_received,
            servicer.frames_answered,
        )
        for pipeline in pipelines.values():
            await pipeline.stop()
        codec_workers.shutdown()
        metrics.close()
