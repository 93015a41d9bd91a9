"""The capacity objective and the search every load search runs (the load tool's, `make
bench`'s, the GPU benchmark's): a step fails on each bound and on a refused call or a
reconnect, a step-up search ends at the first count that fails, and a bisection tries its guess
first and stops when its time is up. The measurements are plain figures: the policy alone."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest

from loadtest.objective import BENCHMARK_OBJECTIVE, Objective
from loadtest.search import Bisection, StepUp, Trial, search, search_blocking


@dataclass(frozen=True)
class Step:
    p99_ms: float = 40.0
    drop_ratio: float = 0.0
    error_ratio: float = 0.0
    refused_calls: float = 0
    reconnects: int = 0


@pytest.mark.parametrize(
    ("step", "why"),
    [
        (Step(), "holds"),
        (Step(p99_ms=101.0), "p99 101 ms > 100 ms"),
        (Step(p99_ms=math.nan), "p99 nan ms > 100 ms"),  # nothing answered
        (Step(drop_ratio=0.02), "dropped 2.0% > 1%"),
        (Step(error_ratio=0.001), "errors 0.1%"),
        (Step(refused_calls=1), "refused 1 calls"),
        (Step(reconnects=2), "reconnects 2"),
        # The first bound broken is the one named.
        (Step(p99_ms=500.0, error_ratio=0.5, reconnects=1), "errors 50.0%"),
    ],
)
def test_each_bound_of_the_objective_fails_a_step_and_is_named(step: Step, why: str) -> None:
    assert BENCHMARK_OBJECTIVE.verdict(step) == (why == "holds", why)
    assert BENCHMARK_OBJECTIVE.mark(step) == ("holds" if why == "holds" else f"FAILS ({why})")


def test_the_objective_bounds_are_its_own() -> None:
    loose = Objective(p99_ms=200.0, max_drop_ratio=0.05, max_error_ratio=0.01)
    assert loose.holds(Step(p99_ms=150.0, drop_ratio=0.04, error_ratio=0.01))
    assert not loose.holds(Step(p99_ms=150.0, refused_calls=1))
    assert loose.terms().startswith("p99 <= 200 ms, <= 5% dropped, <= 1% errors")


def _knee(at: int):
    """A replica whose p99 breaks the objective above `at` calls; the counts tried, in order."""
    tried: list[int] = []

    def measure(calls: int) -> Step:
        tried.append(calls)
        return Step(p99_ms=40.0 if calls <= at else 250.0)

    return measure, tried


def test_a_step_up_search_ends_at_the_first_count_that_fails() -> None:
    measure, tried = _knee(6)
    seen: list[Trial[Step]] = []
    outcome = search_blocking(measure, BENCHMARK_OBJECTIVE, StepUp(range(2, 20, 2)), seen.append)
    assert (outcome.held, outcome.failed) == (6, 8) and tried == [2, 4, 6, 8]
    assert [(t.calls, t.passed) for t in seen] == [(2, True), (4, True), (6, True), (8, False)]
    assert seen[-1].why == "p99 250 ms > 100 ms" and outcome.trials == seen


def test_a_step_up_search_that_never_fails_answers_its_last_count() -> None:
    measure, tried = _knee(100)
    outcome = search_blocking(measure, BENCHMARK_OBJECTIVE, StepUp([1, 2, 3]))
    assert (outcome.held, outcome.failed) == (3, None) and tried == [1, 2, 3]


def test_a_first_step_that_fails_answers_none() -> None:
    measure, _ = _knee(0)
    outcome = search_blocking(measure, BENCHMARK_OBJECTIVE, StepUp([2, 3]))
    assert (outcome.held, outcome.failed) == (0, 2)


def test_a_bisection_tries_its_guess_first_then_halves_to_its_tolerance() -> None:
    measure, tried = _knee(137)
    bisection = Bisection(0, 400, guess=320)
    outcome = search_blocking(measure, BENCHMARK_OBJECTIVE, bisection)
    assert tried[0] == 320 and bisection.tolerance == 20
    assert outcome.held <= 137 < outcome.failed and outcome.failed - outcome.held <= 20


def test_a_bisection_with_no_time_measures_nothing() -> None:
    measure, tried = _knee(137)
    outcome = search_blocking(
        measure, BENCHMARK_OBJECTIVE, Bisection(0, 400, lambda: False, guess=320)
    )
    assert tried == [] and (outcome.held, outcome.failed) == (0, 400)


async def test_the_search_awaits_a_measurement_on_the_running_loop() -> None:
    tried: list[int] = []

    async def measure(calls: int) -> Step:
        tried.append(calls)
        return Step(reconnects=int(calls > 3))

    outcome = await search(measure, BENCHMARK_OBJECTIVE, StepUp(range(1, 10)))
    assert (outcome.held, outcome.failed) == (3, 4) and tried == [1, 2, 3, 4]
    assert outcome.trials[-1].why == "reconnects 1"
