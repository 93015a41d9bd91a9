"""The Python library runs every conformance scenario (docs/client-contract.md)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from loadtest.local_server import ServerProcess
from tests.integration.conformance.scenarios import SCENARIOS, command_driver, run_scenario

ROOT = Path(__file__).parents[3]
DRIVER = (sys.executable, "-m", "tests.integration.conformance.python_driver")


@pytest.mark.parametrize("name", SCENARIOS)
async def test_scenario(name: str, shared_server: ServerProcess, frames_folder: Path) -> None:
    await run_scenario(SCENARIOS[name], command_driver(DRIVER, ROOT), frames_folder, shared_server)
