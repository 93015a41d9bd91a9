"""The capacity objective, one for every search (the load tool's, `make bench`'s and the GPU
benchmark's): a step of load holds when its p99 latency is within the bound, at most
`max_drop_ratio` of its frames were dropped, none failed, and no call was refused and no
stream reconnected, since a replica that refused or lost calls does not carry that load,
whatever the figures of the frames that got through."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class StepFigures(Protocol):
    """What the objective reads of one step of load."""

    @property
    def p99_ms(self) -> float: ...  # NaN when nothing was answered

    @property
    def drop_ratio(self) -> float: ...

    @property
    def error_ratio(self) -> float: ...

    @property
    def refused_calls(self) -> float: ...  # calls not carried

    @property
    def reconnects(self) -> int: ...


@dataclass(frozen=True)
class Objective:
    p99_ms: float = 100.0
    max_drop_ratio: float = 0.01
    max_error_ratio: float = 0.0

    def verdict(self, step: StepFigures) -> tuple[bool, str]:
        """Whether the step holds, and why not: the first bound it breaks."""
        if step.error_ratio > self.max_error_ratio:
            return False, f"errors {step.error_ratio:.1%}"
        if step.drop_ratio > self.max_drop_ratio:
            return False, f"dropped {step.drop_ratio:.1%} > {self.max_drop_ratio:.0%}"
        if not step.p99_ms <= self.p99_ms:  # NaN (nothing answered) fails too
            return False, f"p99 {step.p99_ms:.0f} ms > {self.p99_ms:.0f} ms"
        if step.refused_calls:
            return False, f"refused {step.refused_calls:.0f} calls"
        if step.reconnects:
            return False, f"reconnects {step.reconnects}"
        return True, "holds"

    def holds(self, step: StepFigures) -> bool:
        return self.verdict(step)[0]

    def terms(self) -> str:
        """The objective in a few words, for the benchmarks' headings."""
        errors = f"<= {self.max_error_ratio:.0%} errors" if self.max_error_ratio else "no errors"
        return (
            f"p99 <= {self.p99_ms:g} ms, <= {self.max_drop_ratio:.0%} dropped, {errors}, "
            "no call refused, no stream reconnected"
        )

    def mark(self, step: StepFigures) -> str:
        """`holds`, or `FAILS (why)`: the benchmarks' mark after a step's line."""
        passed, why = self.verdict(step)
        return "holds" if passed else f"FAILS ({why})"


# The benchmarks' objective (`make bench`'s calls carried, the GPU benchmark's calls held), and
# the load tool's defaults: p99 <= 100 ms, <= 1% dropped.
BENCHMARK_OBJECTIVE = Objective()
