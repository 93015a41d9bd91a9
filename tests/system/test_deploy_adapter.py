"""The prometheus-adapter rules under deploy/ answer from a real Prometheus.

promtool cannot check an adapter's configuration, so each rule's `seriesQuery` and its
`metricsQuery` (with the template filled in as the adapter fills it for the HPA: the series,
the namespace and pods, grouped by pod) run against a real Prometheus scraping two real
servers, labelled as the ServiceMonitor labels pods. Every metric the HPA scales on has a rule.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import yaml

from segmentation_client import FrameToSend, SegmentationClient
from service.app import RunningService, running_server
from tests.helpers import loopback_config
from tests.photos import video_frame_jpeg
from tests.prometheus import query

ROOT = Path(__file__).parents[2]
RULES = ROOT / "deploy" / "kubernetes" / "prometheus-adapter-rules.yaml"
AUTOSCALER = ROOT / "deploy" / "kubernetes" / "base" / "horizontalpodautoscaler.yaml"
NAMESPACE = "calls"
PODS = ("segmentation-a", "segmentation-b")
MAX_STREAMS = 4


def scrape_pods(prometheus_url: str, config: Path, servers: dict[str, RunningService]) -> None:
    """Scrapes each server with the labels the ServiceMonitor gives a pod's series."""
    targets = "".join(
        f"      - targets: ['127.0.0.1:{server.metrics_port}']\n"
        f"        labels: {{namespace: {NAMESPACE}, pod: {pod}}}\n"
        for pod, server in servers.items()
    )
    config.write_text(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n"
        f"  - job_name: segmentation\n    static_configs:\n{targets}"
    )
    request = urllib.request.Request(f"{prometheus_url}/-/reload", method="POST")
    urllib.request.urlopen(request, timeout=10).close()


def metrics_query(rule: dict) -> str:
    """The rule's metricsQuery as the adapter sends it for the HPA's pods."""
    series = rule["seriesQuery"].split("{")[0]
    matchers = f'namespace="{NAMESPACE}",pod=~"{"|".join(PODS)}"'
    return (
        rule["metricsQuery"]
        .replace("<<.Series>>", series)
        .replace("<<.LabelMatchers>>", matchers)
        .replace("<<.GroupBy>>", "pod")
    )


def by_pod(result: list[dict]) -> dict[str, float]:
    return {series["metric"]["pod"]: float(series["value"][1]) for series in result}


def test_every_metric_the_autoscaler_scales_on_has_a_rule() -> None:
    rules = yaml.safe_load(RULES.read_text())["rules"]
    served = {rule["name"]["as"] for rule in rules}
    autoscaler = yaml.safe_load(AUTOSCALER.read_text())
    scaled_on = {metric["pods"]["metric"]["name"] for metric in autoscaler["spec"]["metrics"]}
    assert (
        scaled_on
        == served
        == {
            "segmentation_active_streams",
            "segmentation_capacity_utilisation_ratio",
        }
    )


async def test_the_adapter_rules_answer_per_pod_from_a_real_prometheus(prometheus) -> None:
    prometheus_url, prometheus_config = prometheus
    rules = yaml.safe_load(RULES.read_text())["rules"]
    config = loopback_config(models=("selfie-general",), metrics_port=0, max_streams=MAX_STREAMS)
    stop = asyncio.Event()

    async def camera() -> AsyncIterator[FrameToSend]:
        frame_id = 0
        while not stop.is_set():
            yield FrameToSend(frame_id, video_frame_jpeg(320, 240))
            frame_id += 1
            await asyncio.sleep(0.1)

    async with running_server(config) as busy, running_server(config) as idle:
        scrape_pods(prometheus_url, prometheus_config, {PODS[0]: busy, PODS[1]: idle})
        async with SegmentationClient(busy.target) as client:

            async def call(n: int) -> None:
                async for _ in client.stream(camera(), stream_id=f"call-{n}"):
                    pass

            calls = [asyncio.create_task(call(n)) for n in range(2)]
            answers: dict[str, dict[str, float]] = {}
            series: dict[str, set[str]] = {}  # the pods each seriesQuery finds
            started = time.monotonic()
            try:
                while time.monotonic() - started < 30:
                    await asyncio.sleep(1.0)
                    for rule in rules:
                        found = await asyncio.to_thread(query, prometheus_url, rule["seriesQuery"])
                        series[rule["name"]["as"]] = {s["metric"]["pod"] for s in found}
                        result = await asyncio.to_thread(query, prometheus_url, metrics_query(rule))
                        answers[rule["name"]["as"]] = by_pod(result)
                    # Both pods scraped (their series found) and the streams open on the first.
                    scraped = all(pods == set(PODS) for pods in series.values())
                    if scraped and answers["segmentation_active_streams"].get(PODS[0]) == 2:
                        break
            finally:
                stop.set()
                await asyncio.gather(*calls)
    print(f"\nthe adapter's queries answered, per pod: {answers}")
    assert series == {rule["name"]["as"]: set(PODS) for rule in rules}
    assert answers["segmentation_active_streams"] == {PODS[0]: 2.0, PODS[1]: 0.0}
    utilisation = answers["segmentation_capacity_utilisation_ratio"]
    assert set(utilisation) == set(PODS)
    assert 2 / MAX_STREAMS <= utilisation[PODS[0]] <= 1.0  # two of its four streams, at least
    assert 0.0 <= utilisation[PODS[1]] < 2 / MAX_STREAMS
