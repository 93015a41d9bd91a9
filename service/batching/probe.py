"""The engine probe: while a model's engine is failing, it runs the smallest batch through it
now and then (`BatchWork.probe`), and the first that succeeds is the engine's recovery.

A failing engine gets no traffic (readiness is NOT_SERVING, its streams ended, new ones
refused), so no batch could ever tell that it works again: the probe does, alone on the engine
as the warm-up runs before the model serves; so the probe waits until no batch runs and, while
it waits and runs, `probing` tells the batch runner to start none. Once the
runner stops, no probe starts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from service.batching.engine_health import EngineHealth
from service.batching.occupancy import EngineOccupancy

log = logging.getLogger(__name__)

MIN_PROBE_INTERVAL_S = 0.2  # a probe holds the engine alone: not back to back


class EngineProbe:
    """Probes one engine while its `EngineHealth` says it is failing."""

    def __init__(
        self,
        name: str,
        health: EngineHealth,
        occupancy: EngineOccupancy,
        run_probe: Callable[[], Awaitable[None]],  # runs the probe batch on an engine thread
        probed: Callable[[], None],  # told after each probe: batches may start again
    ) -> None:
        self._name = name
        self._health = health
        self._occupancy = occupancy
        self._run_probe = run_probe
        self._probed = probed
        self.probing = False  # the probe has the engine, or waits for it: start no batch
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        health.on_change(self._health_changed)

    def _health_changed(self, failing: bool) -> None:
        running = self._task is not None and not self._task.done()
        if failing and not self._stopping and not running:
            self._task = asyncio.create_task(self._probe(), name=f"probe-{self._name}")

    async def stop(self) -> None:
        self._stopping = True  # a batch that fails from here on starts no probe
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _probe(self) -> None:
        interval_s = max(MIN_PROBE_INTERVAL_S, self._health.failing_after_s / 4)
        while self._health.failing:
            await asyncio.sleep(interval_s)
            self.probing = True
            try:
                await self._occupancy.idle.wait()
                await self._run_probe()
            except Exception as error:
                self._health.batch_failed(error)
            else:
                log.info("the engine of %s runs batches again", self._name)
                self._health.batch_succeeded()
            finally:
                self.probing = False
                self._probed()
