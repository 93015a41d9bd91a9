"""The clock every timed decision takes, injected so that tests can move time by hand."""

from collections.abc import Callable

Clock = Callable[[], float]  # seconds, monotonic
