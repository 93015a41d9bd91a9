"""Assembles the service from its config, and takes it down in the right order."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc

from models.fetch import ensure_model_files
from models.registry import model_spec
from segmentation.v1 import segmentation_pb2_grpc as pb_grpc
from service.batcher import BatchPolicy
from service.codec import JpegCodec
from service.config import ServiceConfig
from service.engine import create_engine
from service.metrics import ServiceMetrics
from service.pipeline import ModelPipeline
from service.server import SegmentationServicer
from service.streams import StreamRegistry

log = logging.getLogger(__name__)

# Room for the protobuf framing around the largest frame, so that a frame just over
# max_frame_bytes gets its own specific ERROR instead of a transport error.
_MESSAGE_OVERHEAD_BYTES = 64 << 10


@dataclass
class RunningService:
    target: str  # where a client on this machine connects, HOST:PORT
    port: int
    config: ServiceConfig
    pipelines: dict[str, ModelPipeline]
    streams: StreamRegistry
    metrics: ServiceMetrics


def _local_target(address: str, port: int) -> str:
    host = address.rsplit(":", 1)[0]
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host in ("[::]", "::"):
        host = "[::1]"
    return f"{host}:{port}"


async def _load_pipelines(
    config: ServiceConfig,
    codec: JpegCodec,
    codec_executor: ThreadPoolExecutor,
    metrics: ServiceMetrics,
) -> dict[str, ModelPipeline]:
    specs = [model_spec(name) for name in config.models]
    paths = await asyncio.to_thread(
        ensure_model_files, specs, Path(config.model_dir), config.fetch_models
    )
    policy = BatchPolicy(config.max_batch_size, config.max_queue_delay_s)
    pipelines: dict[str, ModelPipeline] = {}
    for spec in specs:
        engine = create_engine(config.engine, spec, paths[spec.name], config.engine_threads)
        pipeline = ModelPipeline(
            engine, codec, codec_executor, policy, config.max_batches_in_flight, metrics
        )
        await pipeline.start()
        pipelines[spec.name] = pipeline
        log.info("model %s ready on %s (%s)", spec.name, engine.name, engine.device)
    return pipelines


@asynccontextmanager
async def running_server(config: ServiceConfig) -> AsyncIterator[RunningService]:
    """Starts the whole service and always takes it down again."""
    metrics = ServiceMetrics()
    codec = JpegCodec(config.max_frame_bytes, config.max_frame_pixels)
    codec_executor = ThreadPoolExecutor(config.decode_workers, thread_name_prefix="codec")
    pipelines: dict[str, ModelPipeline] = {}
    server: grpc.aio.Server | None = None
    try:
        pipelines = await _load_pipelines(config, codec, codec_executor, metrics)
        streams = StreamRegistry()
        max_message_bytes = config.max_frame_bytes + _MESSAGE_OVERHEAD_BYTES
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", -1),
            ]
        )
        pb_grpc.add_SegmentationServiceServicer_to_server(
            SegmentationServicer(config, pipelines, streams, metrics), server
        )
        port = server.add_insecure_port(config.address)
        await server.start()
        log.info("serving %s on %s (plaintext)", sorted(pipelines), config.address)
        if config.metrics_port:
            metrics.serve(config.metrics_port)
            log.info("metrics on :%d/metrics", config.metrics_port)
        yield RunningService(
            target=_local_target(config.address, port),
            port=port,
            config=config,
            pipelines=pipelines,
            streams=streams,
            metrics=metrics,
        )
    finally:
        if server is not None:
            await server.stop(config.shutdown_grace_s)
        for pipeline in pipelines.values():
            await pipeline.stop()
        codec_executor.shutdown(wait=True)
        metrics.close()
