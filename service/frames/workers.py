"""Threads that do a frame's CPU work (JPEG decode, mask encode) for the event loop.

`run()` hands a call to the threads and returns an asyncio future of its result. It costs the
event loop less than `loop.run_in_executor()`, which builds a `concurrent.futures.Future` (with
its own lock and condition) and chains it to an asyncio future for every call: at hundreds of
frames a second, with two such calls per frame, that is a large share of the loop's work.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from service.threads import name_this_thread

Result = TypeVar("Result")


def _set_result(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():  # the caller may have gone (cancelled) while the work ran
        future.set_result(result)


def _set_exception(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


class WorkerThreads:
    """`workers` threads named `name` (see service/threads.py) taking calls in order."""

    def __init__(self, workers: int, name: str) -> None:
        self._calls: queue.SimpleQueue[tuple | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._work, args=(name,), name=f"{name}_{n}", daemon=True)
            for n in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def run(self, function: Callable[..., Result], *args: Any) -> asyncio.Future[Result]:
        """Runs `function(*args)` on a worker; the future is set on the calling event loop."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result] = loop.create_future()
        self._calls.put((loop, future, function, args))
        return future

    def shutdown(self) -> None:
        """Lets the calls already handed in finish, then stops the threads."""
        for _ in self._threads:
            self._calls.put(None)
        for thread in self._threads:
            thread.join()

    def _work(self, name: str) -> None:
        name_this_thread(name)
        while (call := self._calls.get()) is not None:
            loop, future, function, args = call
            try:
                result = function(*args)
            except BaseException as error:  # handed to the awaiting caller, whatever it is
                loop.call_soon_threadsafe(_set_exception, future, error)
            else:
                loop.call_soon_threadsafe(_set_result, future, result)
