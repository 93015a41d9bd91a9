"""The server's own view of a load step: its Prometheus metrics scraped before and after."""

from __future__ import annotations

import math
import urllib.request
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(metrics_url: str) -> Samples:
    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def ok_frames(metrics_url: str) -> float:
    """The frames the server has answered OK since it started (its own counter)."""
    return sum(
        value
        for (name, labels), value in scrape(metrics_url).items()
        if name == "segmentation_frames_total" and ("outcome", "ok") in labels
    )


@dataclass(frozen=True)
class ServerView:
    frames_ok: float
    frames_dropped: float
    frames_error: float
    latency_ms: dict[str, float]  # p50/p95/p99 from the latency histogram's buckets
    batch_sizes: dict[str, float]  # batches per batch-size bucket ("le" bound -> count)
    mean_batch_size: float
    streams_refused: float = 0.0  # new streams the server refused, whatever the limit


def _delta(before: Samples, after: Samples, name: str, **labels: str) -> dict[tuple, float]:
    wanted = set(labels.items())
    return {
        key[1]: value - before.get(key, 0.0)
        for key, value in after.items()
        if key[0] == name and wanted <= set(key[1])
    }


def _histogram_quantile(quantile: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus's estimate: linear interpolation inside the bucket holding the quantile."""
    buckets = sorted(buckets)
    total = buckets[-1][1] if buckets else 0.0
    if total <= 0:
        return math.nan
    rank = quantile * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count
            )
        lower_bound, lower_count = bound, count
    return lower_bound


def server_view(before: Samples, after: Samples) -> ServerView:
    outcomes = {
        outcome: sum(_delta(before, after, "segmentation_frames_total", outcome=outcome).values())
        for outcome in ("ok", "dropped", "error")
    }
    latency_buckets: dict[float, float] = {}
    for labels, value in _delta(before, after, "segmentation_frame_latency_seconds_bucket").items():
        bound = float(dict(labels)["le"])
        latency_buckets[bound] = latency_buckets.get(bound, 0.0) + value
    latency = {
        f"p{round(q * 100)}": _histogram_quantile(q, list(latency_buckets.items())) * 1e3
        for q in (0.5, 0.95, 0.99)
    }
    cumulative: dict[float, float] = {}
    for labels, value in _delta(before, after, "segmentation_batch_size_bucket").items():
        bound = float(dict(labels)["le"])
        cumulative[bound] = cumulative.get(bound, 0.0) + value
    per_bucket, previous = {}, 0.0
    for bound in sorted(cumulative):
        per_bucket[f"{bound:g}"] = cumulative[bound] - previous
        previous = cumulative[bound]
    batches = sum(_delta(before, after, "segmentation_batch_size_count").values())
    frames = sum(_delta(before, after, "segmentation_batch_size_sum").values())
    return ServerView(
        frames_ok=outcomes["ok"],
        frames_dropped=outcomes["dropped"],
        frames_error=outcomes["error"],
        latency_ms=latency,
        batch_sizes=per_bucket,
        mean_batch_size=frames / batches if batches else 0.0,
        streams_refused=sum(_delta(before, after, "segmentation_streams_refused_total").values()),
    )
