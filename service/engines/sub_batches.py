"""How an engine splits a batch into runs of the sizes it keeps ready: the split with the least
measured cost.

On a CPU the cost of a frame does not simply fall as the batch grows: XNNPACK's cost per frame
can rise from a run of 1 to a run of 2 and fall again at 3, differently on each CPU, so the
cheapest split of a batch cannot be assumed (a batch of 7 may be cheapest as 3+3+1, not as
4+2+1). The engine times one run of each size at warm-up and splits every batch from those
figures; before that, the fewest runs win.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

# Splits are planned for batches up to this size; a larger batch is cut into pieces this big.
_PLANNED_UP_TO = 64


class SubBatchPlan:
    """The cheapest split of every batch size into runs of the given sizes."""

    def __init__(self, seconds_per_run: Mapping[int, float]) -> None:
        """`seconds_per_run`: what one run of each size costs (1 must be among the sizes)."""
        if 1 not in seconds_per_run:
            raise ValueError(f"a plan needs runs of 1 frame; sizes were {sorted(seconds_per_run)}")
        self.seconds_per_run = dict(seconds_per_run)
        largest_first = sorted(seconds_per_run, reverse=True)  # ties go to the larger run
        cost = [0.0]
        self._first_run = [0]  # the size of the first run of the cheapest split of n frames
        for frames in range(1, _PLANNED_UP_TO + 1):
            best = min(
                (size for size in largest_first if size <= frames),
                key=lambda size: seconds_per_run[size] + cost[frames - size],
            )
            cost.append(seconds_per_run[best] + cost[frames - best])
            self._first_run.append(best)

    @classmethod
    def fewest_runs(cls, sizes: Iterable[int]) -> SubBatchPlan:
        """The plan before anything is measured: every run counts the same."""
        return cls(dict.fromkeys(sizes, 1.0))

    def split(self, frames: int) -> tuple[int, ...]:
        """The sizes of the runs for a batch of `frames`, in order; they add up to `frames`."""
        runs: list[int] = []
        while frames > _PLANNED_UP_TO:
            runs += self.split(_PLANNED_UP_TO)
            frames -= _PLANNED_UP_TO
        while frames:
            runs.append(self._first_run[frames])
            frames -= runs[-1]
        return tuple(runs)

    @property
    def sizes_used(self) -> tuple[int, ...]:
        """The run sizes some split uses, ascending: the only ones worth keeping ready."""
        used = {size for frames in range(1, _PLANNED_UP_TO + 1) for size in self.split(frames)}
        return tuple(sorted(used))

    def describe(self) -> str:
        """The measured cost per frame of each size, for the start-up log."""
        return ", ".join(
            f"{size}: {seconds * 1e3 / size:.2f} ms/frame"
            for size, seconds in sorted(self.seconds_per_run.items())
        )
