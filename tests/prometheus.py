"""A real Prometheus for the tests of metrics and of the autoscaler's rules: started on a free
port with an empty config, given scrape targets by a reload, and queried over its HTTP API."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from loadtest.local_server import free_port, wait_for_http


@contextlib.contextmanager
def running_prometheus(folder: Path) -> Iterator[tuple[str, Path]]:
    """A real Prometheus, its URL and its config file: the test writes its scrape targets into
    the config and reloads it."""
    binary = shutil.which("prometheus")
    assert binary, "Debian's prometheus package is missing: run `make setup`"
    port = free_port()
    config = folder / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 1s\nscrape_configs: []\n")
    process = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={folder / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--web.enable-lifecycle",
         "--log.level=warn"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/-/ready")
        yield url, config
    finally:
        process.terminate()
        process.wait(timeout=30)


def scrape_target(prometheus_url: str, config: Path, metrics_port: int) -> None:
    config.write_text(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n"
        "  - job_name: segmentation\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{metrics_port}']\n"
    )
    request = urllib.request.Request(f"{prometheus_url}/-/reload", method="POST")
    urllib.request.urlopen(request, timeout=10).close()


def query(prometheus_url: str, expression: str) -> list[dict]:
    url = f"{prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
    with urllib.request.urlopen(url, timeout=10) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    return body["data"]["result"]


def scalar(prometheus_url: str, expression: str) -> float:
    result = query(prometheus_url, expression)
    assert len(result) == 1, f"{expression} gave {result}"
    return float(result[0]["value"][1])
