"""The search for the most calls that hold the objective: one loop for every caller, which
measures a count, judges it by the objective and hands the verdict to its strategy; where it
looks next is the strategy's alone. `StepUp` tries counts in turn until one fails (the load
tool's capacity search, `make bench`); `Bisection` halves the range between a count that holds
and one that fails (the GPU benchmark, whose range is wide and whose time is bounded)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from loadtest.objective import Objective, StepFigures

Figures = TypeVar("Figures", bound=StepFigures)


@dataclass(frozen=True)
class Trial(Generic[Figures]):
    calls: int
    figures: Figures
    passed: bool
    why: str  # "holds", or the first bound the step broke


@dataclass
class Outcome(Generic[Figures]):
    held: int  # the most calls that held (the strategy's lower bound when none was tried)
    failed: int | None  # the fewest that failed (its upper bound), None when none did
    trials: list[Trial[Figures]] = field(default_factory=list)


class Strategy(Protocol):
    def bounds(self) -> tuple[int, int | None]:
        """The count assumed to hold (0 for none) and the one assumed to fail (None)."""
        ...

    def next_calls(self, held: int, failed: int | None) -> int | None:
        """The count to try next, given the bracket so far; None ends the search."""
        ...


class StepUp:
    """The counts in turn, until one fails or none is left: the answer is the last that held."""

    def __init__(self, counts: Iterable[int]) -> None:
        self._counts = iter(counts)

    def bounds(self) -> tuple[int, int | None]:
        return 0, None

    def next_calls(self, held: int, failed: int | None) -> int | None:
        return None if failed is not None else next(self._counts, None)


def bisection_tolerance(high: int) -> int:
    """How close a bisection below `high` gets: 5% of `high`, and at least one call."""
    return max(1, round(high * 0.05))


class Bisection:
    """Halves the range between `low` (assumed to hold; 0 for none) and `high` (assumed to
    fail) until it is within `bisection_tolerance(high)`, or until `more_time()` says no.
    `guess`, tried first, is where the objective usually breaks, so that a bisection cut short
    still brackets the answer closely."""

    def __init__(
        self,
        low: int,
        high: int,
        more_time: Callable[[], bool] = lambda: True,
        guess: int | None = None,
    ) -> None:
        self._low, self._high = low, high
        self._more_time = more_time
        self._guess = guess
        self.tolerance = bisection_tolerance(high)

    def bounds(self) -> tuple[int, int | None]:
        return self._low, self._high

    def next_calls(self, held: int, failed: int | None) -> int | None:
        assert failed is not None, "a bisection starts from a count that fails"
        guess, self._guess = self._guess, None
        if guess is not None and self._more_time():
            return guess
        if failed - held <= self.tolerance or not self._more_time():
            return None
        return (held + failed) // 2


async def search(
    measure: Callable[[int], Awaitable[Figures]],
    objective: Objective,
    strategy: Strategy,
    on_trial: Callable[[Trial[Figures]], None] | None = None,
) -> Outcome[Figures]:
    """Measures the counts `strategy` picks, each judged by `objective`, until it stops."""
    held, failed = strategy.bounds()
    outcome: Outcome[Figures] = Outcome(held, failed)
    while (calls := strategy.next_calls(outcome.held, outcome.failed)) is not None:
        figures = await measure(calls)
        passed, why = objective.verdict(figures)
        outcome.trials.append(Trial(calls, figures, passed, why))
        if on_trial:
            on_trial(outcome.trials[-1])
        if passed:
            outcome.held = calls
        else:
            outcome.failed = calls
    return outcome


def search_blocking(
    measure: Callable[[int], Figures],
    objective: Objective,
    strategy: Strategy,
    on_trial: Callable[[Trial[Figures]], None] | None = None,
) -> Outcome[Figures]:
    """`search` where each measurement blocks (its load runs in processes of their own)."""

    async def measured(calls: int) -> Figures:
        return measure(calls)

    return asyncio.run(search(measured, objective, strategy, on_trial))
