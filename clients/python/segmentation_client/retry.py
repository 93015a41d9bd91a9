"""When a stream reopens, and how soon: the reopen predicates (which ends of a call another
replica, or the same one later, may serve) and the retry policy, whose backoff is the one place
that decides the wait before a reconnect."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import grpc

# Codes that say "this replica cannot serve the stream now; another one, or later, may":
# draining and unreachable replicas are UNAVAILABLE, a full one RESOURCE_EXHAUSTED. The caller's
# own mistakes (INVALID_ARGUMENT, NOT_FOUND, UNAUTHENTICATED, ...) fail the same everywhere.
RETRYABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})


@dataclass(frozen=True)
class RetryPolicy:
    """How a stream reconnects: bounded exponential backoff with full jitter."""

    initial_backoff_s: float = 0.05  # the first reconnect waits up to this long
    max_backoff_s: float = 1.0  # no wait is longer, however many attempts failed
    backoff_multiplier: float = 2.0
    answer_timeout_s: float = 2.0  # frames sent and no answer for this long: the replica is lost
    give_up_after_s: float = 15.0  # no replica answered for this long: the stream raises

    def __post_init__(self) -> None:
        for name in ("initial_backoff_s", "max_backoff_s", "answer_timeout_s", "give_up_after_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive; was {getattr(self, name)}")
        if self.backoff_multiplier < 1:
            raise ValueError(f"backoff_multiplier must be >= 1; was {self.backoff_multiplier}")

    def backoff_s(self, attempt: int) -> float:
        """The wait before reconnect `attempt` (0 first): jitter spreads the streams of a
        drained replica over time instead of moving them all at once."""
        ceiling = min(self.max_backoff_s, self.initial_backoff_s * self.backoff_multiplier**attempt)
        return random.uniform(0.0, ceiling)


# grpcio's asyncio client reports a call that the server ended while the client was writing
# as this INTERNAL instead of the server's status (grpc/grpc issue 36066): it is no verdict of
# the server's, so it is retried like the status it hides (the server's own INTERNAL errors
# carry a message of their own and are not retried).
_ENDED_WHILE_WRITING = (grpc.StatusCode.INTERNAL, "Internal error from Core")


def is_ended_while_writing(error: grpc.aio.AioRpcError) -> bool:
    return (error.code(), error.details()) == _ENDED_WHILE_WRITING


def should_retry(error: grpc.aio.AioRpcError) -> bool:
    """The default reopen predicate: another replica, or this one later, may serve."""
    return error.code() in RETRYABLE_CODES or is_ended_while_writing(error)


def is_silence(error: grpc.aio.AioRpcError) -> bool:
    """The server ended the stream because the caller sent nothing for its idle timeout."""
    return error.code() == grpc.StatusCode.DEADLINE_EXCEEDED


def should_retry_or_silence(error: grpc.aio.AioRpcError) -> bool:
    """The reopen predicate of `reopen_after_silence`: a paused video is segmented again when
    its frames come back."""
    return should_retry(error) or is_silence(error)


ReopenPredicate = Callable[[grpc.aio.AioRpcError], bool]
