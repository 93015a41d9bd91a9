"""The load generator keeps its schedule whatever the server does, and a small capacity search
with its report runs end to end against the real server."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from loadtest.capacity import Objective, capacity_search, step_table
from loadtest.frames import video_sequence
from loadtest.generator import FrameRecord, LoadShape, RunResult, run_load
from loadtest.report import write_report
from loadtest.stats import summarize
from service.app import running_server
from tests.helpers import loopback_config

SEQUENCES = [
    video_sequence(320, 240, frames=8, photo=0),
    video_sequence(320, 240, frames=8, photo=1),
]


def test_sequences_move_so_every_frame_differs() -> None:
    frames = video_sequence(640, 480, frames=12)
    assert len(set(frames)) == 12
    assert all(frame[:2] == b"\xff\xd8" for frame in frames)


async def test_late_answers_do_not_slow_the_sending() -> None:
    # A server that holds frames up to 400 ms in its batcher: answers come back late. Each
    # stream may have many frames in flight, so that its next frame is always on its way and
    # the batcher keeps waiting for it; frames join a batch over its 400 ms, so they wait
    # about 200 ms on average.
    config = loopback_config(
        models=("selfie-general",),
        max_queue_delay_ms=400.0,
        max_batches_in_flight=1,  # no idle engine thread to spread the frames over
        max_batch_size=64,
        max_frames_in_flight_per_stream=16,
        max_unwritten_answers_per_stream=32,
    )
    shape = LoadShape(streams=2, fps=20, duration_s=2.0, ramp_up_s=0.2, warm_up_s=0.3)
    async with running_server(config) as service:
        result = await run_load(service.target, shape, SEQUENCES)
    figures = summarize(result)["overall"]
    sent = [r for r in result.frames if r.sent_at]
    assert len(sent) == len(result.frames), "every scheduled frame was sent"
    assert figures["send_lag_p99_ms"] < 100, "frames left on their schedule, not on answers"
    # About 200 ms; well above what the server spends on a frame it does not hold (~20 ms).
    assert figures["latency_ms"]["p50"] >= 100, "latency counts from the scheduled send"
    assert figures["ok"] > 0 and figures["errors"] == 0


def test_figures_come_from_the_measured_window_only() -> None:
    result = RunResult(streams=1, fps=10, started_at=0.0, measure_from=1.0, measure_until=2.0)
    for n in range(20):  # 2 s of frames; the first second is warm-up
        record = FrameRecord(0, n, scheduled_at=n / 10, sent_at=n / 10)
        record.status = "OK" if n % 5 else "DROPPED"
        record.answered_at = record.scheduled_at + (0.5 if n < 10 else 0.010 * (n - 9))
        record.batch_size = 2
        result.frames.append(record)
    overall = summarize(result)["overall"]
    assert overall["frames"] == 10 and overall["ok"] == 8 and overall["dropped"] == 2
    assert overall["drop_ratio"] == pytest.approx(0.2)
    assert overall["latency_ms"]["max"] == pytest.approx(100.0)  # warm-up's 500 ms left out
    assert overall["fps_per_stream"] == pytest.approx(8.0)


async def test_a_small_capacity_search_and_its_report(tmp_path: Path) -> None:
    # The server refuses a third stream, so the search must stop at 2 whatever the machine.
    config = loopback_config(models=("selfie-general",), max_streams=2, metrics_port=0)
    objective = Objective(p99_ms=2000.0, max_drop_ratio=0.5)
    async with running_server(config) as service:
        steps, answer = await capacity_search(
            service.target, SEQUENCES, fps=10, objective=objective, streams_to_try=[1, 2, 3],
            hold_s=1.0, warm_up_s=0.3,
            metrics_url=f"http://127.0.0.1:{service.metrics_port}/metrics",
        )  # fmt: skip
    print("\n" + step_table(steps))
    assert answer == 2
    assert [(s.streams, s.passed) for s in steps] == [(1, True), (2, True), (3, False)]
    # The client retries the refused stream (another replica could take it): the step fails
    # on the call the server refused, a call not carried.
    assert steps[2].why.startswith("refused") and steps[2].server["streams_refused"] >= 1
    assert steps[1].server["frames_ok"] >= steps[1].client["ok"] > 0
    assert steps[1].server["mean_batch_size"] >= 1

    results = {
        "fps": 10, "resolution": "320x240", "objective": asdict(objective), "hold_s": 1.0,
        "warm_up_s": 0.3, "machine": "test",
        "configurations": [{"name": "test", "server_flags": ["--max-streams", "2"],
                            "capacity": answer, "steps": [asdict(s) for s in steps]}],
    }  # fmt: skip
    json.dumps(results)  # the report's input is plain JSON
    paths = write_report(results, tmp_path)
    assert sorted(p.name for p in paths) == [
        "batch_sizes.png", "latency_vs_streams.png", "summary.md", "throughput_vs_streams.png",
    ]  # fmt: skip
    for png in paths[:3]:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    summary = (tmp_path / "summary.md").read_text()
    assert "| test | `--max-streams 2` | 2 |" in summary
    assert "FAIL: refused" in summary
