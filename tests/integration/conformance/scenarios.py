"""The conformance scenarios of docs/client-contract.md, each named once: the servers it runs, what
the client's driver is asked to send, the fault done meanwhile, and what the contract promises.

A client library's driver is any program that takes a spec (JSON, its one argument) and prints
what it saw (JSON): python_driver.py for the Python library, node_driver.js for the Node client.
The GStreamer element and the WebRTC gateway, adapters over the Python library, have drivers
of their own (adapter_drivers.py) that run the scenarios which apply to them, with checks of
what an adapter promises (`adapter_check`). The spec:
`target`, `jpegs` (files, sent in turn), `frames`, `fps`, and optionally `token`, `model`,
`stream_id`, `corrupt` (frame ids sent as bytes that are no JPEG), `pause_after_frame` and
`pause_s` (a silence), `reopen_after_silence`, `answer_timeout_s`, `give_up_after_s`, and the
PEM files `root_certificates`, `client_certificate` and `client_key` (TLS, mutual TLS). The
output: `answers` ([frame_id, status name, error_reason, error_code's name, has mask,
capture_timestamp_us] per answer, in the order received), `error` (null, or the code's name and
details the stream ended with), `reconnects` and `dropped_locally`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from loadtest.local_server import ServerProcess
from segmentation_client import RECONNECTING, FrameToSend, SegmentationClient
from tests.photos import video_frame_jpeg
from tests.replicas import REPLICA_FLAGS, serving_one, start_replicas, wait_for_streams

TOKEN = "conformance-token"
IDLE_TIMEOUT_S = 1.0
# One server for the scenarios that fault nothing but the stream: a token, and a short idle
# timeout for the silence scenarios.
SHARED_FLAGS = (
    *REPLICA_FLAGS,
    "--auth-token",
    TOKEN,
    "--stream-idle-timeout-s",
    str(IDLE_TIMEOUT_S),
)
FULL_FLAGS = (*REPLICA_FLAGS, "--max-streams", "1")
CORRUPT_FRAME = 5
DRIVER_TIMEOUT_S = 90


@dataclass(frozen=True)
class Scenario:
    """`replicas`: the flags of each server of its own; none: the shared server. `holder`: a
    stream holds the first replica's only slot before the driver starts. `fault`: the signal
    sent to the replica serving the driver's stream once it is open. `adapter_check`: what the
    element and the gateway promise here; None where the scenario is the library's alone."""

    spec: dict
    check: Callable[[dict], None]
    replicas: tuple[tuple[str, ...], ...] = ()
    holder: bool = False
    fault: signal.Signals | None = None
    adapter_check: Callable[[dict], None] | None = None


def check_answers(result: dict, frames: int) -> None:
    """What holds in every scenario: one answer per frame, in order, up to the end or the
    stream's error; timestamps echoed; a mask on OK answers only; the client's own drops
    DROPPED "reconnecting" and counted."""
    answers = result["answers"]
    ids = [a[0] for a in answers]
    assert ids == list(range(len(ids))), f"answers out of order or missing: {ids}"
    if result["error"] is None:
        assert len(ids) == frames, f"{len(ids)} answers to {frames} frames"
    assert all(a[5] == a[0] * 33_333 for a in answers), "capture timestamps not echoed"
    assert all(a[4] == (a[1] == "OK") for a in answers), "a mask without OK, or OK without one"
    local = [a for a in answers if a[2] == RECONNECTING]
    local_answer = ["DROPPED", RECONNECTING, "FRAME_ERROR_REASON_RECONNECTING"]
    assert all(a[1:4] == local_answer for a in local), local
    assert len(local) == result["dropped_locally"]


def _statuses(result: dict) -> list[str]:
    return [a[1] for a in result["answers"]]


def _moved(result: dict) -> None:
    check_answers(result, 150)
    assert result["error"] is None, result["error"]
    assert result["reconnects"] >= 1, "the stream never moved"
    assert _statuses(result)[-10:] == ["OK"] * 10, "the stream was not served after moving"


def _served_elsewhere(result: dict) -> None:
    check_answers(result, 60)
    assert result["error"] is None, result["error"]
    assert _statuses(result)[-10:] == ["OK"] * 10


def _gave_up(result: dict) -> None:
    check_answers(result, 150)
    assert result["error"] is not None and result["error"]["code"] == "UNAVAILABLE", result
    assert "no replica answered" in result["error"]["details"]
    assert result["answers"], "frames sent before giving up were not answered"
    assert set(_statuses(result)) == {"DROPPED"}


def _refused(code: str) -> Callable[[dict], None]:
    def check(result: dict) -> None:
        check_answers(result, 20)
        assert result["error"] is not None and result["error"]["code"] == code, result
        assert "OK" not in _statuses(result)
        # Not retried. One reopen may come first: grpcio reports a refusal that ended the call
        # while the client was writing as INTERNAL "Internal error from Core" (grpc 36066),
        # retried as the status it hides; the next attempt gets the refusal itself.
        assert result["reconnects"] <= 1, "a caller's mistake was retried"

    return check


def _ended_for_silence(result: dict) -> None:
    check_answers(result, 20)
    assert result["error"] is not None and result["error"]["code"] == "DEADLINE_EXCEEDED", result
    assert [a[0] for a in result["answers"]] == list(range(10)), "the frames before the silence"


def _reopened_after_silence(result: dict) -> None:
    check_answers(result, 20)
    assert result["error"] is None, result["error"]
    assert result["reconnects"] >= 1
    assert _statuses(result)[-1] == "OK", "frames after the silence were not segmented"


def _corrupt_answered(result: dict) -> None:
    check_answers(result, 15)
    assert result["error"] is None, result["error"]
    corrupt = result["answers"][CORRUPT_FRAME]
    assert corrupt[1:4] == ["ERROR", "corrupt_jpeg", "FRAME_ERROR_REASON_CORRUPT_JPEG"], corrupt
    others = [a for a in result["answers"] if a[0] != CORRUPT_FRAME]
    assert all(a[1] != "ERROR" for a in others) and others[-1][1] == "OK"


def check_frames_out(result: dict, frames: int) -> None:
    """An adapter's promise in every scenario: each frame leaves once, in order, until the end
    (or the adapter's error)."""
    indices = [index for index, _ in result["frames_out"]]
    assert indices == list(range(len(indices))), f"frames out of order or missing: {indices}"
    if result["error"] is None:
        assert len(indices) == frames, f"{len(indices)} frames out of {frames}"


def _segmented(result: dict) -> list[bool]:
    return [segmented for _, segmented in result["frames_out"]]


def _adapter_moved(result: dict) -> None:
    check_frames_out(result, 150)
    assert result["error"] is None, result["error"]
    assert result["reconnects"] >= 1, "the stream never moved"
    assert all(_segmented(result)[-10:]), "frames were not segmented after the move"


def _adapter_gave_up(result: dict) -> None:
    check_frames_out(result, 150)
    assert result["gave_up"], result
    assert not any(_segmented(result)), "a frame segmented with no replica to do it"


def _adapter_reopened_after_silence(result: dict) -> None:
    check_frames_out(result, 20)
    assert result["error"] is None, result["error"]
    assert result["reconnects"] >= 1
    assert _segmented(result)[-1], "frames after the silence were not segmented"


_STREAMING = {"frames": 150, "fps": 30}
_SILENCE = {
    "frames": 20, "fps": 10, "token": TOKEN, "pause_after_frame": 9,
    "pause_s": IDLE_TIMEOUT_S * 2.5,
}  # fmt: skip


def _moved_after(fault: signal.Signals) -> Scenario:
    """A stream on one of two replicas, moved to the other when `fault` reaches its own."""
    return Scenario(
        _STREAMING,
        _moved,
        replicas=(REPLICA_FLAGS, REPLICA_FLAGS),
        fault=fault,
        adapter_check=_adapter_moved,
    )


SCENARIOS: dict[str, Scenario] = {
    "drain": _moved_after(signal.SIGTERM),
    "kill": _moved_after(signal.SIGKILL),
    "refusal_elsewhere_room": Scenario(
        {"frames": 60, "fps": 30},
        _served_elsewhere,
        replicas=(FULL_FLAGS, FULL_FLAGS),
        holder=True,
    ),
    "full_cluster_gives_up": Scenario(
        {**_STREAMING, "give_up_after_s": 1.5},
        _gave_up,
        replicas=(FULL_FLAGS,),
        holder=True,
        adapter_check=_adapter_gave_up,
    ),
    "bad_token": Scenario(
        {"frames": 20, "fps": 30, "token": "not-the-token"},
        _refused("UNAUTHENTICATED"),
    ),
    "unknown_model": Scenario(
        {"frames": 20, "fps": 30, "token": TOKEN, "model": "no-such-model"},
        _refused("NOT_FOUND"),
    ),
    "silence_ends_stream": Scenario(_SILENCE, _ended_for_silence),
    "silence_reopens": Scenario(
        {**_SILENCE, "reopen_after_silence": True},
        _reopened_after_silence,
        adapter_check=_adapter_reopened_after_silence,
    ),
    "corrupt_frame": Scenario(
        {"frames": 15, "fps": 10, "token": TOKEN, "corrupt": [CORRUPT_FRAME]},
        _corrupt_answered,
    ),
}


def frame_files(folder: Path) -> list[str]:
    """The frames every driver sends: 320x240 frames of a person, panned."""
    paths = []
    for n in range(8):
        path = folder / f"frame-{n}.jpg"
        if not path.exists():
            path.write_bytes(video_frame_jpeg(320, 240, shift=4 * n))
        paths.append(str(path))
    return paths


@contextlib.asynccontextmanager
async def holding_stream(target: str) -> AsyncIterator[None]:
    """A stream that takes a replica's only slot (a frame a second keeps it open)."""
    jpeg = video_frame_jpeg(160, 120)

    async def frames() -> AsyncIterator[FrameToSend]:
        for frame_id in range(10_000):
            yield FrameToSend(frame_id, jpeg)
            await asyncio.sleep(1.0)

    async with SegmentationClient(target) as client:
        answered = asyncio.Event()

        async def hold() -> None:
            async for _ in client.stream(frames(), stream_id="holder"):
                answered.set()

        task = asyncio.create_task(hold())
        try:
            await asyncio.wait_for(answered.wait(), 30)
            yield
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


Driver = Callable[[dict], Awaitable[dict]]  # a spec in, what the client saw out


def start_driver(
    argv: Sequence[str], spec: dict, cwd: Path | None, env: dict[str, str] | None = None
) -> subprocess.Popen:
    return subprocess.Popen(
        [*argv, json.dumps(spec)], cwd=cwd, text=True, env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


def command_driver(
    argv: Sequence[str], cwd: Path | None = None, env: dict[str, str] | None = None
) -> Driver:
    """A driver that is a program: the spec its last argument, its output JSON on stdout;
    `env`: variables it gets besides this process's."""

    async def drive(spec: dict) -> dict:
        process = start_driver(argv, spec, cwd, env)
        try:
            out, err = await asyncio.to_thread(process.communicate, timeout=DRIVER_TIMEOUT_S)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
        assert process.returncode == 0, err
        return json.loads(out)

    return drive


async def run_scenario(
    scenario: Scenario,
    driver: Driver,
    frames_folder: Path,
    shared: ServerProcess | None = None,
    check: Callable[[dict], None] | None = None,
) -> dict:
    """Runs `driver` through the scenario against real servers; returns its output, checked
    by `check` (the scenario's own check of a client library by default)."""
    servers = start_replicas(scenario.replicas) if scenario.replicas else []
    try:
        targets = [s.target for s in servers] if servers else [shared.target]
        spec = {
            **scenario.spec,
            "target": targets[0] if len(targets) == 1 else "ipv4:" + ",".join(targets),
            "jpegs": frame_files(frames_folder),
        }
        async with contextlib.AsyncExitStack() as stack:
            if scenario.holder:
                await stack.enter_async_context(holding_stream(targets[0]))
            driving = asyncio.create_task(driver(spec))
            try:
                if scenario.fault is not None:
                    await wait_for_streams(servers, 1)
                    await asyncio.sleep(0.5)
                    (await serving_one(servers)).process.send_signal(scenario.fault)
                result = await asyncio.wait_for(driving, DRIVER_TIMEOUT_S + 30)
            finally:
                driving.cancel()
                await asyncio.gather(driving, return_exceptions=True)
    finally:
        for server in servers:
            server.stop(timeout_s=15)
    (check or scenario.check)(result)
    return result
