"""Shared fixtures: a real server on loopback and the model files it serves."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from models.fetch import ensure_model_files
from models.registry import MODELS
from segmentation_client import SegmentationClient
from service.app import RunningService, running_server
from service.config import ServiceConfig


def loopback_config(**overrides: object) -> ServiceConfig:
    """The default config on a free loopback port, metrics off, with the TFLite engine unless
    the test asks for another. No SEGMENTATION_* variable of the shell reaches it."""
    return ServiceConfig(
        **{"address": "127.0.0.1:0", "metrics_port": -1, "engine": "tflite", **overrides}
    )


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


# For tests whose subject does not depend on the engine (protocol, input handling, what is
# done to a mask after the model): they run against the shared TFLite server only.
ENGINE_INDEPENDENT = pytest.mark.parametrize("server", ["tflite"], indirect=True)


@pytest.fixture
async def client(server: RunningService) -> AsyncIterator[SegmentationClient]:
    async with SegmentationClient(server.target) as segmentation_client:
        yield segmentation_client
