"""A model's frame path whose engine the test can break, for the tests of readiness, failover
and process exit.

A broken GPU (a sticky CUDA error, a lost context) cannot happen on a CPU test machine, so the
server runs its real frame path and real model, and while the test has broken it, `run_batch`,
`warm_up` and `probe` raise the EngineFailure that the GPU path raises for a broken device.
Everything around it (the batch runner, readiness, the streams, the client) is the real thing.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

import pytest

import service.app
from service.errors import EngineFailure
from service.frames.path import FramePath

FAILURE = "CUDA error: an illegal memory access was encountered"


class EngineSwitch:
    """Breaks and mends one server's engine; thread-safe (batches run on engine threads)."""

    def __init__(self, recoverable: bool = True, break_after_batches: int | None = None) -> None:
        self._broken = threading.Event()
        self.recoverable = recoverable
        self._batches_left = break_after_batches
        self._lock = threading.Lock()

    def break_engine(self) -> None:
        self._broken.set()

    def mend(self) -> None:
        self._broken.clear()

    def check(self) -> None:
        with self._lock:
            if self._batches_left is not None:
                self._batches_left -= 1
                if self._batches_left < 0:
                    self._broken.set()
        if self._broken.is_set():
            raise EngineFailure(FAILURE, recoverable=self.recoverable)


class BreakablePath:
    """The real frame path, with its engine behind the switch."""

    def __init__(self, path: FramePath, switch: EngineSwitch) -> None:
        self._path = path
        self._switch = switch

    def __getattr__(self, name: str) -> Any:
        return getattr(self._path, name)

    def run_batch(self, prepared: Sequence[Any]) -> Sequence[Any]:
        self._switch.check()
        return self._path.run_batch(prepared)

    def warm_up(self) -> None:
        self._switch.check()
        self._path.warm_up()

    def probe(self) -> None:
        self._switch.check()
        self._path.probe()


def breakable_paths(
    make_switch: Callable[[], EngineSwitch],
) -> tuple[Callable[..., BreakablePath], list[EngineSwitch]]:
    """A replacement for `create_frame_path` and the switches of the paths it makes, in the
    order the servers load their models."""
    real = service.app.create_frame_path
    switches: list[EngineSwitch] = []

    def create(*args: Any) -> BreakablePath:
        switches.append(make_switch())
        return BreakablePath(real(*args), switches[-1])

    return create, switches


def break_engines(monkeypatch: pytest.MonkeyPatch) -> list[EngineSwitch]:
    """Every server started in this test gets a breakable engine; returns their switches."""
    create, switches = breakable_paths(EngineSwitch)
    monkeypatch.setattr(service.app, "create_frame_path", create)
    return switches


def serve_with_an_engine_that_dies() -> None:
    """`segmentation-server` whose engine fails beyond recovery after BREAK_AFTER_BATCHES
    batches (warm-up included): for the test of the process's exit."""
    from service.main import main

    after = int(os.environ["BREAK_AFTER_BATCHES"])
    create, _switches = breakable_paths(lambda: EngineSwitch(False, after))
    service.app.create_frame_path = create  # type: ignore[assignment]
    main()


if __name__ == "__main__":
    serve_with_an_engine_that_dies()
