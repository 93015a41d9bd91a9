"""Scale-out behind one DNS name, as an autoscaler does it: two replicas are full (their own
max_streams) and a third joins; its address is listed only once it is SERVING, as a headless
Service lists a ready pod. The client's channel learns of it when a connection reaches the
servers' maximum age (the GOAWAY makes it re-resolve), or, sooner or with no age at all, when
the client library, its new calls refused by every replica it knows, opens a new channel; the
calls refused meanwhile are placed on it. No call fails, and no open stream breaks or moves."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import time

from loadtest.local_server import free_port
from segmentation_client.channels import RENEW_AFTER_REFUSED_S
from service.app import RunningService, running_server
from tests.helpers import loopback_config
from tests.replica_dns import REPLICAS, ReplicasResolver, dns_server, dns_target

# The calls run in their own process (the resolver that reads a DNS server from the target is
# c-ares, which a fresh process takes from GRPC_DNS_RESOLVER). It opens the calls that fill
# the first two replicas, says "full", waits for a line (the third replica is listed), opens
# the new calls GAP_S apart, says "placed" once each has an answer, waits for a line (the test
# has looked where they are), then ends every call and prints what each saw.
CLIENT = textwrap.dedent(
    """
    import asyncio, json, sys, time
    from segmentation_client import FrameToSend, SegmentationClient
    from tests.photos import video_frame_jpeg

    async def main(target, full_calls, new_calls, gap_s):
        jpeg = video_frame_jpeg(160, 120)
        stop = asyncio.Event()
        first_ok, streams = {}, {}
        async with SegmentationClient(target) as client:
            await client.wait_until_serving()

            async def call(name):
                async def camera():
                    frame_id = 0
                    while not stop.is_set():  # 10 FPS until the test is done
                        yield FrameToSend(frame_id, jpeg)
                        frame_id += 1
                        await asyncio.sleep(0.1)

                stream = streams[name] = client.stream(camera(), stream_id=name)
                opened, ok, error = time.time(), 0, None
                try:
                    async for response in stream:
                        if response.status == 1:
                            ok += 1
                            first_ok.setdefault(name, time.time())
                except Exception as e:
                    error = repr(e)
                return {"name": name, "opened": opened, "first_ok": first_ok.get(name),
                        "ok": ok, "reconnects": stream.stats.reconnects, "error": error}

            async def until_answered(names):
                while not all(name in first_ok for name in names):
                    await asyncio.sleep(0.05)

            full = [f"call-{n}" for n in range(full_calls)]
            tasks = [asyncio.create_task(call(name)) for name in full]
            await asyncio.wait_for(until_answered(full), 60)
            reconnects_when_full = {name: streams[name].stats.reconnects for name in full}
            print("full", flush=True)
            await asyncio.to_thread(sys.stdin.readline)
            new = [f"call-{n}" for n in range(full_calls, full_calls + new_calls)]
            for name in new:
                tasks.append(asyncio.create_task(call(name)))
                await asyncio.sleep(gap_s)
            await asyncio.wait_for(until_answered(new), 60)
            print("placed", flush=True)
            await asyncio.to_thread(sys.stdin.readline)
            stop.set()
            results = await asyncio.gather(*tasks)
            renewals = client.channel_renewals
            await asyncio.sleep(0.2)  # the renewed channel closes after its last call ended
            channels_open = len(client._channels._live)
        print(json.dumps({"calls": results, "reconnects_when_full": reconnects_when_full,
                          "renewals": renewals, "channels_open": channels_open}))

    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])))
    """
)
MAX_STREAMS = 3
MAX_CONNECTION_AGE_S = 3.0  # the default is minutes: a test waits seconds
GAP_S = 3.0  # between the new calls, as in the issue that found the bug


def where(replicas: dict[str, RunningService], name: str) -> str:
    return next((address for address, r in replicas.items() if r.streams.get(name)), "nowhere")


async def read_line(client: subprocess.Popen) -> str:
    line = await asyncio.to_thread(client.stdout.readline)  # type: ignore[union-attr]
    assert line, f"the client ended early: {client.stderr.read()}"  # type: ignore[union-attr]
    return line.strip()


async def test_new_calls_reach_a_replica_that_joins_while_the_others_are_full() -> None:
    took_calls_after_s, _ = await scale_out(MAX_CONNECTION_AGE_S)
    # Within the connection age (+10% jitter), a resolution and a few refused attempts.
    assert took_calls_after_s < MAX_CONNECTION_AGE_S * 1.1 + 5


async def test_with_no_connection_age_the_client_renews_its_channel_to_find_the_joining_one() -> (
    None
):
    # 0: the servers never close a connection, so only the client's new channel can see it.
    took_calls_after_s, waits_s = await scale_out(0)
    # A run of refusals, a new channel's resolution and handshakes, a few refused attempts
    # (2-5 s measured); without the renewal a new call is refused until it gives up (15 s).
    # The bounds leave room for a loaded CI machine.
    assert took_calls_after_s < RENEW_AFTER_REFUSED_S + 6
    assert max(waits_s) < RENEW_AFTER_REFUSED_S + 8, waits_s  # each new call, from its opening


async def scale_out(max_connection_age_s: float) -> tuple[float, list[float]]:
    """Fills two replicas, lists a third once SERVING, opens new calls; checks that they all
    reach the third, that none fails and that no open stream moves. Returns the seconds until
    the joining replica took a call, from when it was listed, and each new call's wait from its
    opening to its first answer."""
    port = free_port()
    first, second, joining = REPLICAS
    resolver = ReplicasResolver([first, second])
    config = {
        "models": ("selfie-general",),
        "max_streams": MAX_STREAMS,
        "max_connection_age_s": max_connection_age_s,
        "decode_workers": 1,
    }
    full_calls, new_calls = 2 * MAX_STREAMS, 3
    with dns_server(resolver) as dns_port:
        async with (
            running_server(loopback_config(address=f"{first}:{port}", **config)) as a,
            running_server(loopback_config(address=f"{second}:{port}", **config)) as b,
        ):
            replicas = {first: a, second: b}
            client = await asyncio.to_thread(
                subprocess.Popen,
                [sys.executable, "-c", CLIENT, dns_target(dns_port, port),
                 str(full_calls), str(new_calls), str(GAP_S)],
                env={**os.environ, "GRPC_DNS_RESOLVER": "ares"},
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )  # fmt: skip
            try:
                assert await read_line(client) == "full"
                assert len(a.streams) == len(b.streams) == MAX_STREAMS
                async with running_server(
                    loopback_config(address=f"{joining}:{port}", **config)
                ) as c:
                    replicas[joining] = c
                    resolver.addresses.append(joining)  # listed once SERVING
                    joined_at = time.time()
                    client.stdin.write("joined\n")  # type: ignore[union-attr]
                    client.stdin.flush()  # type: ignore[union-attr]
                    assert await read_line(client) == "placed"
                    placed = {f"call-{n}": where(replicas, f"call-{n}")
                              for n in range(full_calls + new_calls)}  # fmt: skip
                    refused = {
                        address: {
                            limit: r.metrics.streams_refused.labels(limit)._value.get()
                            for limit in ("max_streams", "measured_load")
                        }
                        for address, r in replicas.items()
                    }
                    client.stdin.write("done\n")  # type: ignore[union-attr]
                    client.stdin.flush()  # type: ignore[union-attr]
                    out, err = await asyncio.to_thread(client.communicate, timeout=60)
            finally:
                if client.poll() is None:
                    client.kill()
                    client.communicate()
    assert client.returncode == 0, err
    report = json.loads(out.splitlines()[-1])
    calls = {call["name"]: call for call in report["calls"]}
    new = [f"call-{n}" for n in range(full_calls, full_calls + new_calls)]
    age = f"{max_connection_age_s:g} s" if max_connection_age_s else "none"
    print(f"\nthe third replica was listed at +0.0 s; max connection age {age}")
    for name in new:
        call = calls[name]
        print(
            f"{name}: opened at +{call['opened'] - joined_at:.1f} s, refused "
            f"{call['reconnects']} times, first answer at +{call['first_ok'] - joined_at:.1f} s "
            f"on {placed[name]}"
        )
    print(
        f"refusals by replica: {refused}; DNS lookups {resolver.queries}; "
        f"client channel renewals {report['renewals']}"
    )
    took_calls_after_s = min(calls[name]["first_ok"] for name in new) - joined_at
    print(f"seconds until the joining replica took calls: {took_calls_after_s:.1f}")
    assert all(call["error"] is None for call in calls.values()), calls
    assert [placed[name] for name in new] == [joining] * new_calls
    for n in range(full_calls):  # no open stream broke or moved
        name = f"call-{n}"
        assert calls[name]["reconnects"] == report["reconnects_when_full"][name]
        assert placed[name] in (first, second)
    assert report["channels_open"] == 1, report  # a renewed channel closed once its calls ended
    return took_calls_after_s, [calls[name]["first_ok"] - calls[name]["opened"] for name in new]
