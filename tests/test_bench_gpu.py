"""The GPU benchmark's own logic, without a GPU: the bisection of calls held, and how a load
run's figures decide it."""

from __future__ import annotations

from loadtest.gpu_load import LoadRun, calls_held, stream_shares


def _run(calls: int, p99_ms: float, drop_ratio: float = 0.0) -> LoadRun:
    return LoadRun(1, calls, "640x480", calls * 30.0, p99_ms, drop_ratio, 0.0, 1.0, 1.0, 4.0)


def test_bisection_finds_the_most_calls_that_hold_within_5_percent() -> None:
    tried = []

    def measure(calls: int) -> LoadRun:
        tried.append(calls)
        return _run(calls, p99_ms=40.0 if calls <= 137 else 250.0)

    held = calls_held(measure, 0, 400, report=lambda run: None)
    assert 137 - 20 <= held <= 137  # within 5% of the upper bound
    assert len(tried) <= 5 and all(calls > 0 for calls in tried)


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
