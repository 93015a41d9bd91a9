"""Every Prometheus metric of the service, in one place (names: segmentation_*, base units).

Each service instance has its own registry, so that several servers in one process (tests)
do not share counters.
"""

from __future__ import annotations

from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)

# Latency buckets from 1 ms to 1 s: a 30 FPS call has a 33 ms frame budget.
_LATENCY_BUCKETS_S = (
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05,
    0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0,
)  # fmt: skip
_BATCH_SIZE_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._http_server: WSGIServer | None = None
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.frames = Counter(
            "segmentation_frames",
            "Frames answered, by outcome (ok, dropped, error) and error reason",
            ["model", "outcome", "reason"],
            registry=self.registry,
        )
        self.frame_latency = Histogram(
            "segmentation_frame_latency_seconds",
            "Server time of an OK frame, from its arrival to its answer",
            ["model"],
            buckets=_LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "segmentation_batch_size",
            "Frames in each batch run by the engine",
            ["model"],
            buckets=_BATCH_SIZE_BUCKETS,
            registry=self.registry,
        )
        self.inference = Histogram(
            "segmentation_inference_seconds",
            "Engine time of one batch",
            ["model"],
            buckets=_LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.active_streams = Gauge(
            "segmentation_active_streams", "Open StreamSegment calls", registry=self.registry
        )

    def observe_batch(self, model: str, size: int, inference_s: float) -> None:
        self.batch_size.labels(model).observe(size)
        self.inference.labels(model).observe(inference_s)

    def observe_frame(self, model: str, outcome: str, reason: str, total_s: float | None) -> None:
        self.frames.labels(model, outcome, reason).inc()
        if total_s is not None:
            self.frame_latency.labels(model).observe(total_s)

    def serve(self, port: int) -> None:
        """Serves /metrics on all interfaces in a background thread."""
        self._http_server, _thread = start_http_server(port, registry=self.registry)

    def close(self) -> None:
        if self._http_server is not None:
            self._http_server.shutdown()
            self._http_server.server_close()
            self._http_server = None
