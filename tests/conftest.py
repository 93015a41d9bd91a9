"""Shared fixtures: a real server on loopback and the model files it serves."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from dnslib.server import DNSServer

from loadtest.local_server import free_port
from models.fetch import ensure_model_files
from models.registry import MODELS
from segmentation_client import SegmentationClient
from service.app import RunningService, running_server
from tests.helpers import loopback_config
from tests.prometheus import running_prometheus
from tests.replica_dns import ReplicasResolver


@pytest.fixture(scope="session")
def model_paths() -> dict[str, Path]:
    config = loopback_config()
    return ensure_model_files(MODELS.values(), Path(config.model_dir), fetch=config.fetch_models)


@pytest.fixture(scope="session", params=["tflite", "tensorflow"])
async def server(request: pytest.FixtureRequest) -> AsyncIterator[RunningService]:
    """A server with the default settings on each engine, shared by the tests that need no
    special settings: they run once against each engine."""
    async with running_server(loopback_config(engine=request.param)) as service:
        yield service


@pytest.fixture
async def client(server: RunningService) -> AsyncIterator[SegmentationClient]:
    async with SegmentationClient(server.target) as segmentation_client:
        yield segmentation_client


@pytest.fixture
def dns_port() -> Iterator[int]:
    port = free_port()
    server = DNSServer(ReplicasResolver(), port=port, address="127.0.0.1")
    thread = threading.Thread(target=server.server.serve_forever, daemon=True)
    thread.start()
    yield port
    server.server.shutdown()


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real Prometheus: its URL, and its config file, for the test's scrape targets."""
    with running_prometheus(tmp_path) as started:
        yield started
