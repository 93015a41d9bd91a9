"""Figures of a load run: latency percentiles from the scheduled send time, achieved FPS, drop
and error ratios, overall and per stream, over the measured window only."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from loadtest.generator import FrameRecord, RunResult

PERCENTILES = (50, 95, 99)


@dataclass(frozen=True)
class Figures:
    frames: int  # scheduled in the measured window
    ok: int
    dropped: int  # by the server, or by the client while its stream reconnected
    dropped_locally: int  # of those, by the client while its stream reconnected
    errors: int  # ERROR answers, and frames never answered (refused or broken streams)
    latency_ms: dict[str, float]  # p50, p95, p99, max of OK frames
    fps_per_stream: float  # OK masks per second per stream
    drop_ratio: float
    error_ratio: float
    send_lag_p99_ms: float  # how late frames left against their schedule (the generator's health)
    mean_batch_size: float

    def to_dict(self) -> dict:
        return asdict(self)


def _figures(records: list[FrameRecord], streams: int, seconds: float) -> Figures:
    ok = [r for r in records if r.status == "OK"]
    latencies = np.array([r.latency_s * 1e3 for r in ok]) if ok else np.array([np.nan])
    latency = {f"p{p}": float(np.percentile(latencies, p)) for p in PERCENTILES}
    latency["max"] = float(np.max(latencies))
    dropped = sum(r.status == "DROPPED" for r in records)
    errors = sum(r.status in ("ERROR", "LOST") for r in records)
    sent = [r.sent_at - r.scheduled_at for r in records if r.sent_at]
    total = max(len(records), 1)
    return Figures(
        frames=len(records),
        ok=len(ok),
        dropped=dropped,
        dropped_locally=sum(r.dropped_locally for r in records),
        errors=errors,
        latency_ms=latency,
        fps_per_stream=len(ok) / seconds / max(streams, 1),
        drop_ratio=dropped / total,
        error_ratio=errors / total,
        send_lag_p99_ms=float(np.percentile(sent, 99) * 1e3) if sent else 0.0,
        mean_batch_size=float(np.mean([r.batch_size for r in ok])) if ok else 0.0,
    )


def summarize(result: RunResult) -> dict:
    """Overall and per-stream figures of the measured window, as plain data (for JSON)."""
    window = [
        r for r in result.frames if result.measure_from <= r.scheduled_at < result.measure_until
    ]
    seconds = result.measure_until - result.measure_from
    per_stream = {
        stream: _figures([r for r in window if r.stream == stream], 1, seconds).to_dict()
        for stream in range(result.streams)
    }
    return {
        "streams": result.streams,
        "fps": result.fps,
        "measured_s": seconds,
        "overall": _figures(window, result.streams, seconds).to_dict(),
        "per_stream": per_stream,
        "stream_errors": result.stream_errors,
        "reconnects": result.reconnects,
        "refused_calls": result.refused_calls,
    }
