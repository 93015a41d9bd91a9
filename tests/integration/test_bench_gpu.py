"""The GPU benchmark without a GPU: its CPU dry run end to end (the script that travels to the
GPU host has run in CI), a failing section that loses no other section's figures, the loud
failures (CUDA missing, a server that does not start), and the bisection of calls held."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from loadtest.bench.gpu import main as bench_gpu
from loadtest.bench.gpu.load import LoadRun, calls_held, stream_shares
from loadtest.bench.gpu.run import Section
from loadtest.local_server import ServerProcess

NEED_CUDA = {"graphs", "memory"}


def test_the_cpu_dry_run_runs_every_section_and_exits_0(
    tmp_path: Path, model_paths: dict[str, Path]
) -> None:
    out = tmp_path / "bench"
    done = subprocess.run(
        [sys.executable, "-m", "loadtest.bench.gpu", "--device", "cpu", "--quick",
         "--out", str(out), "--model-dir", str(next(iter(model_paths.values())).parent)],
        capture_output=True, text=True, timeout=360,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    summary = (out / "summary.txt").read_text()
    for name in bench_gpu.NAMES:
        line = next(line for line in summary.splitlines() if line.startswith(f"section {name}:"))
        if name in NEED_CUDA:
            assert line.startswith(f"section {name}: skipped (no CUDA)")
        elif name.startswith("load-"):  # they adapt to the time left on a busy machine
            assert ": ok" in line or ": skipped (no time" in line, line
        else:
            assert line.startswith(f"section {name}: ok"), line
    assert "the GPU path answers as the CPU path on 13 of 13" in summary
    assert "0 of 12 composites do not decode or do not match" in summary
    # The sections come in the order the issue of a run on the device needs.
    order = [summary.index(f"section {name}:") for name in bench_gpu.NAMES]
    assert order == sorted(order)


def test_a_failing_section_keeps_the_others_figures(
    tmp_path: Path, model_paths: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(bench: object) -> None:
        raise RuntimeError("the decoder is broken")

    sections = [
        Section(s.name, broken, s.cuda_s, s.cpu_s) if s.name == "decode-accuracy" else s
        for s in bench_gpu.SECTIONS
    ]
    monkeypatch.setattr(bench_gpu, "SECTIONS", sections)
    out = tmp_path / "bench"
    model_dir = next(iter(model_paths.values())).parent
    status = bench_gpu.main([
        "--device", "cpu", "--quick", "--out", str(out), "--model-dir", str(model_dir),
        "--sections", "environment,decode-accuracy,damaged-frames",
    ])  # fmt: skip
    assert status == 1
    summary = (out / "summary.txt").read_text()
    assert "section decode-accuracy: FAILED (RuntimeError: the decoder is broken)" in summary
    assert "Traceback (most recent call last)" in summary and "in broken" in summary
    assert "section environment: ok" in summary and f"torch {torch.__version__}" in summary
    assert "section damaged-frames: ok" in summary
    assert "the GPU path answers as the CPU path on 13 of 13" in summary  # after the failure
    assert "rerun the failed ones with --sections decode-accuracy" in summary
    assert "section model:" not in summary  # only the sections asked for ran


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is here")
def test_asking_for_cuda_without_it_fails_at_once(tmp_path: Path) -> None:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "loadtest.bench.gpu", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2 and "sees no CUDA device" in done.stderr
    assert not (tmp_path / "summary.txt").exists()
    assert time.monotonic() - started < 60  # it did not go on to run anything


def test_a_server_that_does_not_start_prints_its_log(capsys: pytest.CaptureFixture) -> None:
    server = ServerProcess("--models", "no-such-model", ready_timeout_s=60)
    with pytest.raises(RuntimeError, match="exited before it reported SERVING"):
        server.wait_until_serving()
    printed = capsys.readouterr().err
    assert "the log of the server" in printed and "no-such-model" in printed


def test_an_unknown_section_is_refused() -> None:
    with pytest.raises(SystemExit):
        bench_gpu.parse_args(["--sections", "environment,nonsense"])


def _run(calls: int, p99_ms: float, drop_ratio: float = 0.0) -> LoadRun:
    return LoadRun(1, calls, "640x480", calls * 30.0, p99_ms, drop_ratio, 0.0, 1.0, 1.0, 4.0)


def test_bisection_finds_the_most_calls_that_hold_within_5_percent() -> None:
    tried = []

    def measure(calls: int) -> LoadRun:
        tried.append(calls)
        return _run(calls, p99_ms=40.0 if calls <= 137 else 250.0)

    held, fails = calls_held(measure, 0, 400, report=lambda run: None)
    assert 137 - 20 <= held <= 137 < fails <= held + 20  # within 5% of the upper bound
    assert len(tried) <= 5 and all(calls > 0 for calls in tried)


def test_bisection_stops_when_the_time_is_up() -> None:
    tried = []

    def measure(calls: int) -> LoadRun:
        tried.append(calls)
        return _run(calls, p99_ms=40.0 if calls <= 137 else 250.0)

    held, fails = calls_held(measure, 0, 400, lambda run: None, lambda: len(tried) < 2)
    assert tried == [200, 100] and (held, fails) == (100, 200)


def test_the_objective_is_p99_drops_and_no_errors() -> None:
    assert _run(10, p99_ms=99.0).holds()
    assert not _run(10, p99_ms=101.0).holds()
    assert not _run(10, p99_ms=50.0, drop_ratio=0.02).holds()
    assert "10 calls 640x480" in _run(10, 50.0).line()


def test_calls_spread_evenly_over_servers_then_generators() -> None:
    assert stream_shares(10, 1, 3) == [(0, 4), (0, 3), (0, 3)]
    shares = stream_shares(101, 4, 6)  # 2 generators per server
    per_server = [sum(s for server, s in shares if server == n) for n in range(4)]
    assert per_server == [26, 25, 25, 25] and len(shares) == 8
    assert stream_shares(1, 2, 2) == [(0, 1)]  # no generator with nothing to send
