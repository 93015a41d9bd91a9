"""The Node client (clients/node) runs every conformance scenario (docs/client-contract.md)
through tests/conformance/node_driver.js."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtest.local_server import ServerProcess
from tests.conformance.node_package import built_node_client
from tests.conformance.scenarios import SCENARIOS, command_driver, run_scenario

ROOT = Path(__file__).parents[2]
DRIVER = ("node", str(ROOT / "tests" / "conformance" / "node_driver.js"))


@pytest.fixture(scope="module", autouse=True)
def node_client() -> Path:
    return built_node_client()


@pytest.mark.parametrize("name", SCENARIOS)
async def test_scenario(name: str, shared_server: ServerProcess, frames_folder: Path) -> None:
    await run_scenario(SCENARIOS[name], command_driver(DRIVER, ROOT), frames_folder, shared_server)
