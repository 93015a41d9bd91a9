"""The batching policy: the one place that decides when a batch closes and what is in it.

Frames from every stream of one model wait here in arrival order. A batch closes when
`max_batch_size` frames are waiting, or when the oldest waiting frame has waited
`max_queue_delay_s`. Whoever runs batches asks `take_batch()` whenever it has room for one more
and sleeps for `seconds_until_due()` otherwise; it never looks at the queue itself. While the
engine is busy nothing is taken, so frames pile up into a fuller batch for when it frees.

Time comes from an injected clock so that the policy can be tested without sleeping.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

Item = TypeVar("Item")
Clock = Callable[[], float]


@dataclass(frozen=True)
class BatchPolicy:
    max_batch_size: int = 16  # frames in one batch
    max_queue_delay_s: float = 0.004  # longest the oldest frame waits for others to join it

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be positive; was {self.max_batch_size}")
        if self.max_queue_delay_s < 0:
            raise ValueError(
                f"max_queue_delay_s must not be negative; was {self.max_queue_delay_s}"
            )


@dataclass(frozen=True)
class Batch(Generic[Item]):
    items: tuple[Item, ...]
    waited_s: tuple[float, ...]  # how long each item waited in the queue, same order
    closed_because: str  # "full" or "delay"

    def __len__(self) -> int:
        return len(self.items)


@dataclass
class _Waiting(Generic[Item]):
    item: Item
    enqueued_at: float


class Batcher(Generic[Item]):
    """A FIFO of waiting frames and the rule that cuts it into batches.

    Invariants: items leave in the order they came; a batch never holds more than
    `max_batch_size` items; an item leaves either in a batch or through `remove()`.
    """

    def __init__(self, policy: BatchPolicy, clock: Clock = time.monotonic) -> None:
        self.policy = policy
        self._clock = clock
        self._waiting: deque[_Waiting[Item]] = deque()

    def __len__(self) -> int:
        return len(self._waiting)

    def add(self, item: Item) -> None:
        self._waiting.append(_Waiting(item, self._clock()))

    def remove(self, item: Item) -> bool:
        """Takes back an item that no longer needs running (its caller went away)."""
        for waiting in self._waiting:
            if waiting.item is item:
                self._waiting.remove(waiting)
                return True
        return False

    def seconds_until_due(self) -> float | None:
        """How long until a batch closes if nothing else arrives; None when nothing waits."""
        if not self._waiting:
            return None
        if len(self._waiting) >= self.policy.max_batch_size:
            return 0.0
        waited = self._clock() - self._waiting[0].enqueued_at
        return max(0.0, self.policy.max_queue_delay_s - waited)

    def take_batch(self) -> Batch[Item] | None:
        """Closes and returns the next batch if one is due now, else None."""
        due = self.seconds_until_due()
        if due is None or due > 0:
            return None
        closed_because = "full" if len(self._waiting) >= self.policy.max_batch_size else "delay"
        now = self._clock()
        size = min(len(self._waiting), self.policy.max_batch_size)
        taken = [self._waiting.popleft() for _ in range(size)]
        return Batch(
            items=tuple(w.item for w in taken),
            waited_s=tuple(now - w.enqueued_at for w in taken),
            closed_because=closed_because,
        )
