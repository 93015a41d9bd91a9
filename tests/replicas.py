"""Replicas as server processes of their own, started side by side, and the streams each holds
(read from its /metrics): for the failover, engine-failure and conformance tests."""

from __future__ import annotations

import asyncio
import re
import signal
import urllib.request
from collections.abc import Sequence

from loadtest.local_server import ServerProcess

# One model on the TFLite engine, one thread each: several replicas share the test machine.
REPLICA_FLAGS = (
    "--models", "selfie-general", "--engine", "tflite", "--shutdown-grace-s", "5",
    "--engine-threads", "1", "--decode-workers", "1",
)  # fmt: skip


def start_replicas(flags: Sequence[tuple[str, ...]]) -> list[ServerProcess]:
    """One replica for each set of flags, each on a port of its own."""
    return start_replicas_at([(replica, {}) for replica in flags])


def start_replicas_at(replicas: Sequence[tuple[tuple[str, ...], dict]]) -> list[ServerProcess]:
    """Starts each (flags, where it listens) side by side, so that the model loads overlap,
    then waits for each; none is left running if one fails to start."""
    servers = [ServerProcess(*flags, **where) for flags, where in replicas]
    try:
        for server in servers:
            server.__enter__()
    except BaseException:
        for server in servers:
            server.stop(signal.SIGKILL)
        raise
    return servers


def active_streams(server: ServerProcess) -> int:
    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=2) as response:
        text = response.read().decode()
    return int(sum(float(v) for v in re.findall(r"^segmentation_active_streams\{.*\} (\S+)$",
                                                  text, re.M)))  # fmt: skip


async def wait_for_streams(servers: list[ServerProcess], total: int) -> None:
    """Until the live servers hold `total` streams between them."""
    for _ in range(600):
        if sum([await asyncio.to_thread(active_streams, s) for s in servers]) >= total:
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"the streams did not open: {[active_streams(s) for s in servers]}")


async def serving_one(servers: list[ServerProcess]) -> ServerProcess:
    """A live server that holds at least one stream."""
    for server in servers:
        if await asyncio.to_thread(active_streams, server):
            return server
    raise AssertionError("no live server holds a stream")
