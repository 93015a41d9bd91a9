"""The batching policy: the one place that decides when a batch closes and what is in it.

Frames from every stream of one model wait here in arrival order. A batch closes when
`max_batch_size` frames are waiting, when the oldest waiting frame has waited
`max_queue_delay_ms`, or as soon as no other frame can join it in time: none is being decoded
and no open stream is expected to send one before the delay runs out (the `Outlook`, plain
data from the pipeline). So a lightly loaded server adds no queueing delay, and a loaded one
still waits for the frames that are on their way. When the engine can run several batches at
once and some of it is idle, what waits is spread over the idle part instead (a CPU engine with
a model copy per core runs two single frames side by side sooner than a batch of two).
Whoever runs batches asks `take_batch()` whenever it has room for one more and sleeps for
`seconds_until_due()` otherwise; it never looks at the queue itself. While the engine is busy
nothing is taken, so frames pile up into a fuller batch for when it frees.

Time comes from an injected clock so that the policy can be tested without sleeping.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field, fields
from typing import Generic, TypeVar

from service.clock import Clock

Item = TypeVar("Item")


@dataclass(frozen=True)
class BatchPolicy:
    """Every batching option, declared once: its default, its help (the flag's) and its lower
    bound, checked here. `ServiceConfig` takes its batching flags from these fields and builds
    one with `batch_policy`."""

    max_batch_size: int = field(
        default=16, metadata={"help": "frames in one batch at most", "minimum": 1}
    )
    max_queue_delay_ms: float = field(
        default=4.0,
        metadata={
            "help": "longest a frame waits for others to join its batch, in milliseconds",
            "minimum": 0,
        },
    )
    # The engines are built with this many batches at once (a TFLite model copy each:
    # engines/selection.py), and each model's pipeline takes its engine's own figure
    # (frames/pipeline.policy_for), so the engine threads and the model copies always agree.
    max_batches_in_flight: int = field(
        default=2,
        metadata={
            "help": "batches run at once per model, each on its own engine thread (TFLite keeps "
            "a copy of the model per batch); while they run, the next batch fills",
            "minimum": 1,
        },
    )

    def __post_init__(self) -> None:
        for option in fields(self):
            value, minimum = getattr(self, option.name), option.metadata["minimum"]
            if value < minimum:
                bound = "be positive" if minimum == 1 else "not be negative"  # 1 or 0
                raise ValueError(f"{option.name} must {bound}; was {value}")


@dataclass(frozen=True)
class Outlook:
    """What is known of the frames still to come for one model, on the batcher's clock."""

    frames_being_prepared: int  # admitted, being readied (decoded): they join within milliseconds
    next_frames_due_at: tuple[float, ...]  # when each open stream's next frame is expected
    streams_starting: int = 0  # open streams whose frame rate is not known yet: any moment
    idle_engines: int = 1  # batches the engine could start at once right now


@dataclass(frozen=True)
class Batch(Generic[Item]):
    items: tuple[Item, ...]
    waited_s: tuple[float, ...]  # how long each item waited in the queue, same order

    def __len__(self) -> int:
        return len(self.items)


@dataclass
class _Enqueued(Generic[Item]):
    item: Item
    enqueued_at: float


class Batcher(Generic[Item]):
    """A FIFO of waiting frames and the rule that cuts it into batches.

    Invariants: items leave in the order they came; a batch never holds more than
    `max_batch_size` items; an item leaves either in a batch or through `remove()`.
    """

    def __init__(self, policy: BatchPolicy, clock: Clock = time.monotonic) -> None:
        self.policy = policy
        self._max_queue_delay_s = policy.max_queue_delay_ms / 1e3
        self._clock = clock
        self._waiting: deque[_Enqueued[Item]] = deque()

    def __len__(self) -> int:
        return len(self._waiting)

    def add(self, item: Item) -> None:
        self._waiting.append(_Enqueued(item, self._clock()))

    def remove(self, item: Item) -> bool:
        """Takes back an item that no longer needs running (its caller went away)."""
        for waiting in self._waiting:
            if waiting.item is item:
                self._waiting.remove(waiting)
                return True
        return False

    def seconds_until_due(self, outlook: Outlook | None = None) -> float | None:
        """How long until a batch closes if nothing else arrives; None when nothing waits.

        Without an outlook nothing is known of the frames to come, and the oldest frame
        waits the whole delay. With one, the wait ends at the first moment a frame may join
        (to look again then), and at once when none can."""
        if not self._waiting:
            return None
        if len(self._waiting) >= self.policy.max_batch_size:
            return 0.0  # full
        now = self._clock()
        deadline = self._waiting[0].enqueued_at + self._max_queue_delay_s
        if now >= deadline:
            return 0.0
        if outlook is None:
            return deadline - now
        coming = [due_at for due_at in outlook.next_frames_due_at if now < due_at < deadline]
        on_their_way = outlook.frames_being_prepared + outlook.streams_starting + len(coming)
        if outlook.idle_engines > 1 and outlook.idle_engines >= len(self._waiting) + on_their_way:
            # Every frame here or on its way can have a batch of its own, run side by side:
            # waiting for company would only add latency.
            return 0.0
        if outlook.frames_being_prepared or outlook.streams_starting:
            return deadline - now
        if not coming:
            return 0.0  # no frame can join in time
        return min(coming) - now

    def take_batch(self, outlook: Outlook | None = None) -> Batch[Item] | None:
        """Closes and returns the next batch if one is due now, else None."""
        due = self.seconds_until_due(outlook)
        if due is None or due > 0:
            return None
        now = self._clock()
        size = min(len(self._waiting), self.policy.max_batch_size)
        if outlook is not None and outlook.idle_engines > 1:
            # Spread what waits over the idle engines: side by side, smaller batches finish
            # sooner than one large one.
            size = -(-size // outlook.idle_engines)
        taken = [self._waiting.popleft() for _ in range(size)]
        return Batch(
            items=tuple(w.item for w in taken),
            waited_s=tuple(now - w.enqueued_at for w in taken),
        )

    def take_all(self) -> list[Item]:
        """Takes every waiting item out, to answer them when no batch can run any more."""
        items = [enqueued.item for enqueued in self._waiting]
        self._waiting.clear()
        return items
