"""Splitting a batch into runs of the sizes an engine keeps ready, at the least measured cost."""

from __future__ import annotations

import pytest

from service.engines.sub_batches import SubBatchPlan

# One run's cost per size, shaped like XNNPACK's on the 2-core host: a run of 3 is the
# cheapest per frame, a run of 2 the dearest (seconds per run = ms per frame x size / 1000).
MEASURED_ON_THE_CPU = {1: 6.0e-3, 2: 12.6e-3, 3: 15.0e-3, 4: 22.0e-3, 6: 33.0e-3, 8: 48.0e-3}


def test_before_anything_is_measured_the_fewest_runs_win() -> None:
    plan = SubBatchPlan.fewest_runs((1, 2, 4, 8))
    assert plan.split(7) == (4, 2, 1)
    assert plan.split(8) == (8,)
    assert plan.split(20) == (8, 8, 4)
    assert plan.sizes_used == (1, 2, 4, 8)


@pytest.mark.parametrize(
    ("frames", "runs"), [(1, (1,)), (2, (1, 1)), (6, (3, 3)), (7, (3, 3, 1)), (9, (3, 3, 3))]
)
def test_measured_costs_pick_the_cheapest_split(frames: int, runs: tuple[int, ...]) -> None:
    assert SubBatchPlan(MEASURED_ON_THE_CPU).split(frames) == runs


def test_every_split_adds_up_and_costs_no_more_than_the_fewest_runs() -> None:
    plan = SubBatchPlan(MEASURED_ON_THE_CPU)
    fewest = SubBatchPlan.fewest_runs(MEASURED_ON_THE_CPU)
    for frames in range(1, 200):  # past the planned range too, which is cut into pieces
        runs = plan.split(frames)
        assert sum(runs) == frames
        assert sum(map(MEASURED_ON_THE_CPU.get, runs)) <= sum(
            map(MEASURED_ON_THE_CPU.get, fewest.split(frames))
        )
    assert plan.split(0) == ()


def test_sizes_no_split_uses_are_not_kept() -> None:
    assert SubBatchPlan(MEASURED_ON_THE_CPU).sizes_used == (1, 3)


def test_a_plan_without_runs_of_one_frame_is_refused() -> None:
    with pytest.raises(ValueError, match="runs of 1 frame"):
        SubBatchPlan({2: 1.0, 4: 1.5})
