"""The GStreamer element and the WebRTC gateway, adapters over the Python library, run the
conformance scenarios that apply to them (a drain, a kill, a stream ended for silence, a
give-up) through their own entry points."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtest.local_server import ServerProcess
from tests.integration.conformance.adapter_drivers import GATEWAY_DRIVER, element_driver
from tests.integration.conformance.scenarios import SCENARIOS, run_scenario

ADAPTER_SCENARIOS = [name for name, scenario in SCENARIOS.items() if scenario.adapter_check]


@pytest.mark.parametrize("name", ADAPTER_SCENARIOS)
async def test_element(
    name: str, shared_server: ServerProcess, frames_folder: Path, tmp_path: Path
) -> None:
    scenario = SCENARIOS[name]
    await run_scenario(
        scenario, element_driver(tmp_path), frames_folder, shared_server, scenario.adapter_check
    )


@pytest.mark.parametrize("name", ADAPTER_SCENARIOS)
async def test_gateway(name: str, shared_server: ServerProcess, frames_folder: Path) -> None:
    scenario = SCENARIOS[name]
    await run_scenario(
        scenario, GATEWAY_DRIVER, frames_folder, shared_server, scenario.adapter_check
    )
