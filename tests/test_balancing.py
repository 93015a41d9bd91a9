"""Client-side balancing: three servers on loopback behind one DNS name, and the client's
`dns:///` target spreads new streams over all three."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap

from loadtest.local_server import free_port
from service.app import running_server
from tests.helpers import loopback_config
from tests.replica_dns import NAME, REPLICAS

CLIENT = textwrap.dedent(
    """
    import asyncio, sys
    from segmentation_client import FrameToSend, SegmentationClient
    from tests.photos import astronaut_jpeg

    async def main(target, streams):
        async with SegmentationClient(target) as client:
            await client.wait_until_serving()
            async def one(n):
                await asyncio.sleep(0.05 * n)  # calls arrive over time, as in production
                async def frames():
                    yield FrameToSend(0, astronaut_jpeg())
                return [r.status async for r in client.stream(frames(), stream_id=f"call-{n}")]
            results = await asyncio.gather(*(one(n) for n in range(streams)))
            print(sum(len(r) for r in results))

    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
    """
)


async def test_new_streams_spread_over_three_replicas_behind_one_name(dns_port: int) -> None:
    port = free_port()
    configs = [
        loopback_config(address=f"{address}:{port}", models=("selfie-general",))
        for address in REPLICAS
    ]
    async with (
        running_server(configs[0]) as first,
        running_server(configs[1]) as second,
        running_server(configs[2]) as third,
    ):
        replicas = (first, second, third)
        target = f"dns://127.0.0.1:{dns_port}/{NAME.rstrip('.')}:{port}"
        # The resolver that reads a DNS server from the target is c-ares: a fresh process
        # so that the setting takes effect.
        result = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-c", CLIENT, target, "12"],
            env={**os.environ, "GRPC_DNS_RESOLVER": "ares"},
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "12"
        served = [
            replica.metrics.frames.labels("selfie-general", "ok", "")._value.get()
            for replica in replicas
        ]
    print(f"\nstreams per replica: {served}")
    assert sum(served) == 12
    assert all(count >= 2 for count in served), f"streams did not spread: {served}"
