"""Every Prometheus metric of the service, in one place.

Names follow Prometheus conventions: prefix `segmentation_`, base units (seconds, bytes),
`_total` on counters. Each service instance has its own registry, so that several servers in
one process (tests) do not share series.

Per-stream series (`stream` label) are not kept in the registry: a collector reads them off the
open streams at scrape time, so a stream's series vanish with it, and at most
`max_stream_series` streams are reported (the oldest ones, so that series stay stable).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

# 1 ms to 1 s: a 30 FPS call has a 33 ms frame budget, and seconds mean something is wrong.
LATENCY_BUCKETS_S = (
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04,
    0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0,
)  # fmt: skip
BATCH_SIZE_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
FILL_RATIO_BUCKETS = (0.25, 0.5, 0.625, 0.75, 0.875, 1.0)
STAGES = ("admission_wait", "decode", "batch_wait", "inference", "encode")
STREAM_LATENCY_QUANTILES = (0.5, 0.95, 0.99)


@dataclass(frozen=True)
class StreamReport:
    """What the metrics show of one open stream, read at scrape time."""

    stream_id: str
    model: str
    frames_per_second: float
    latency_quantiles_s: dict[float, float]  # empty until an OK frame was answered


class _StreamCollector(Collector):
    def __init__(self, reports: Callable[[], Iterable[StreamReport]], max_series: int) -> None:
        self._reports = reports
        self._max_series = max_series

    def collect(self) -> Iterator[Metric]:
        fps = GaugeMetricFamily(
            "segmentation_stream_frames_per_second",
            "Masks answered OK per second by one open stream, over the last seconds",
            labels=["stream", "model"],
        )
        latency = GaugeMetricFamily(
            "segmentation_stream_latency_seconds",
            "Server latency quantiles of one open stream's OK frames, over the last seconds",
            labels=["stream", "model", "quantile"],
        )
        unreported = GaugeMetricFamily(
            "segmentation_streams_unreported",
            "Open streams left without per-stream series by the series cap",
        )
        reports = list(self._reports())
        for report in reports[: self._max_series]:
            fps.add_metric([report.stream_id, report.model], report.frames_per_second)
            for quantile, seconds in report.latency_quantiles_s.items():
                latency.add_metric([report.stream_id, report.model, str(quantile)], seconds)
        unreported.add_metric([], max(0, len(reports) - self._max_series))
        yield from (fps, latency, unreported)


class BatchLoad(Protocol):
    """What a model's batch runner shows of its load."""

    @property
    def frames_waiting(self) -> int: ...

    @property
    def batches_in_flight(self) -> int: ...


class ModelMetrics:
    """One model's series, bound once: looking a labelled child up costs more than updating
    it, and every frame updates about ten of them."""

    def __init__(self, metrics: ServiceMetrics, model: str) -> None:
        self._frames = metrics.frames
        self.model = model
        self._frames_by_outcome = {
            (outcome, ""): metrics.frames.labels(model, outcome, "")
            for outcome in ("ok", "dropped")
        }
        self.received_bytes = metrics.received_bytes.labels(model)
        self.sent_bytes = metrics.sent_bytes.labels(model)
        self.stage_duration = {
            stage: metrics.stage_duration.labels(model, stage) for stage in STAGES
        }
        self.frame_latency = metrics.frame_latency.labels(model)
        self.batch_size = metrics.batch_size.labels(model)
        self.batch_fill = metrics.batch_fill.labels(model)
        self.active_streams = metrics.active_streams.labels(model)

    def observe_batch(self, size: int, engine_batch_size: int) -> None:
        self.batch_size.observe(size)
        self.batch_fill.observe(size / engine_batch_size)

    def observe_received(self, jpeg_bytes: int) -> None:
        """A frame's JPEG came in (counted as it is read, whatever its answer)."""
        self.received_bytes.inc(jpeg_bytes)

    def observe_frame(
        self,
        outcome: str,
        reason: str = "",
        stage_seconds: dict[str, float] | None = None,
        total_s: float | None = None,
        sent_bytes: int = 0,
    ) -> None:
        key = (outcome, reason)
        counter = self._frames_by_outcome.get(key)
        if counter is None:  # error reasons are a small fixed set: bound each on first use
            counter = self._frames_by_outcome[key] = self._frames.labels(self.model, *key)
        counter.inc()
        if sent_bytes:
            self.sent_bytes.inc(sent_bytes)
        if stage_seconds:
            for stage, seconds in stage_seconds.items():
                self.stage_duration[stage].observe(seconds)
        if total_s is not None:
            self.frame_latency.observe(total_s)


class ServiceMetrics:
    def __init__(self, max_stream_series: int = 100) -> None:
        self.registry = CollectorRegistry()
        self._models: dict[str, ModelMetrics] = {}
        self.max_stream_series = max_stream_series
        self._http_server: WSGIServer | None = None
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        labels = ["model"]
        self.frames = Counter(
            "segmentation_frames",
            "Frames answered, by outcome (ok, dropped, error) and error reason",
            ["model", "outcome", "reason"],
            registry=self.registry,
        )
        self.received_bytes = Counter(
            "segmentation_received_bytes",
            "JPEG bytes of the frames received",
            labels,
            registry=self.registry,
        )
        self.sent_bytes = Counter(
            "segmentation_sent_bytes",
            "Bytes of masks and composited frames sent",
            labels,
            registry=self.registry,
        )
        self.stage_duration = Histogram(
            "segmentation_stage_duration_seconds",
            "Time of OK frames in each stage: admission_wait (behind the stream's frames in "
            "flight and the frame budget), decode, batch_wait, inference "
            "(of the whole batch), encode",
            ["model", "stage"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.frame_latency = Histogram(
            "segmentation_frame_latency_seconds",
            "End-to-end server time of an OK frame, from its arrival to its answer",
            labels,
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "segmentation_batch_size",
            "Frames in each batch run by the engine",
            labels,
            buckets=BATCH_SIZE_BUCKETS,
            registry=self.registry,
        )
        self.batch_fill = Histogram(
            "segmentation_batch_fill_ratio",
            "Frames in a batch over the batch size the engine ran (padding wastes the rest)",
            labels,
            buckets=FILL_RATIO_BUCKETS,
            registry=self.registry,
        )
        self.active_streams = Gauge(
            "segmentation_active_streams",
            "Open StreamSegment calls",
            labels,
            registry=self.registry,
        )
        self.frames_waiting = Gauge(
            "segmentation_frames_waiting",
            "Decoded frames waiting in the batcher for a batch",
            labels,
            registry=self.registry,
        )
        self.batches_in_flight = Gauge(
            "segmentation_batches_in_flight",
            "Batches handed to the engine and not yet done",
            labels,
            registry=self.registry,
        )
        self.streams_refused = Counter(
            "segmentation_streams_refused",
            "New streams refused, by the limit that refused them: max_streams, measured_load "
            "(engine at capacity or frames dropped), engine_failing, draining",
            ["limit"],
            registry=self.registry,
        )
        self.capacity_utilisation = Gauge(
            "segmentation_capacity_utilisation_ratio",
            "How much of its capacity the replica uses, 0..1: the most used of open streams over "
            "max_streams and engine occupancy, 1 while it measures itself full",
            registry=self.registry,
        )
        self.model_info = Info(
            "segmentation_model",
            "A loaded model, its engine and device",
            ["model"],
            registry=self.registry,
        )

    def for_model(self, model: str) -> ModelMetrics:
        """The model's series, bound once."""
        bound = self._models.get(model)
        if bound is None:
            bound = self._models[model] = ModelMetrics(self, model)
        return bound

    def add_model(
        self,
        model: str,
        engine: str,
        device: str,
        load: BatchLoad,
    ) -> None:
        """Reports a loaded model; its queue gauges read `load` when scraped."""
        self.model_info.labels(model).info({"engine": engine, "device": device})
        self.frames_waiting.labels(model).set_function(lambda: load.frames_waiting)
        self.batches_in_flight.labels(model).set_function(lambda: load.batches_in_flight)
        self.active_streams.labels(model).set(0)
        for outcome in ("ok", "dropped"):
            self.frames.labels(model, outcome, "")  # present at 0 so rates start at once

    def report_streams(self, reports: Callable[[], Iterable[StreamReport]]) -> None:
        self.registry.register(_StreamCollector(reports, self.max_stream_series))

    def serve(self, port: int) -> int:
        """Serves /metrics on all interfaces in a background thread; returns the port."""
        self._http_server, _thread = start_http_server(port, registry=self.registry)
        return self._http_server.server_port

    def close(self) -> None:
        if self._http_server is not None:
            self._http_server.shutdown()
            self._http_server.server_close()
            self._http_server = None
