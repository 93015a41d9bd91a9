"""What the replica's gRPC health says: readiness, and liveness apart.

Readiness (the whole server, service "", and the segmentation service by name) is SERVING only
while the replica can serve a call: its models warm, not draining, and no engine failing every
batch (`batching.engine_health`). Liveness (service `liveness`) is SERVING while the process
answers at all: a busy replica, or one whose engine fails and may recover, is taken out of the
endpoints by readiness, not restarted; a process that cannot recover ends itself.
"""

from __future__ import annotations

import asyncio
import logging

from grpc_health.v1 import health, health_pb2

from segmentation.v1 import segmentation_pb2 as pb

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["SegmentationService"].full_name
LIVENESS = "liveness"  # the health service name that liveness probes ask for
# "" is the whole server, as Kubernetes' readiness probe asks by default.
READINESS_NAMES = ("", SERVICE_NAME)

_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class Readiness:
    """The one writer of the health servicer's statuses."""

    def __init__(self, servicer: health.aio.HealthServicer) -> None:
        self.servicer = servicer
        self.warm = False
        self.draining = False
        self.failing_models: set[str] = set()
        self._updates: set[asyncio.Task[None]] = set()

    @property
    def ready(self) -> bool:
        return self.warm and not self.draining and not self.failing_models

    async def publish(self) -> None:
        """Sets every status from the state now (liveness SERVING whatever the rest)."""
        readiness = _SERVING if self.ready else _NOT_SERVING
        for name in READINESS_NAMES:
            await self.servicer.set(name, readiness)
        await self.servicer.set(LIVENESS, _SERVING)

    async def set_warm(self) -> None:
        self.warm = True
        await self.publish()

    async def set_draining(self) -> None:
        self.draining = True
        await self.publish()

    def engine_changed(self, model: str, failing: bool) -> None:
        """An engine turned failing, or recovered (called from the batch runner, on the loop)."""
        if failing:
            self.failing_models.add(model)
        else:
            self.failing_models.discard(model)
        log.warning(
            "the engine of %s %s; readiness %s",
            model,
            "fails every batch" if failing else "recovered",
            "SERVING" if self.ready else "NOT_SERVING",
        )
        task = asyncio.get_running_loop().create_task(self.publish())
        self._updates.add(task)
        task.add_done_callback(self._updates.discard)
