"""The conformance suite's fixtures: the shared server, and where the frames are written."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from loadtest.local_server import ServerProcess
from tests.integration.conformance.scenarios import SHARED_FLAGS
from tests.replicas import start_replicas


@pytest.fixture(scope="module")
def shared_server() -> Iterator[ServerProcess]:
    (server,) = start_replicas([SHARED_FLAGS])
    yield server
    server.stop(signal.SIGTERM, timeout_s=15)


@pytest.fixture(scope="module")
def frames_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("frames")
