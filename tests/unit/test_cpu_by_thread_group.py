"""The server's CPU time by thread group, read from /proc, as `make bench` reads it."""

from __future__ import annotations

import os
import threading
import time

from loadtest.process_cpu import GROUPS, sample
from service.threads import name_this_thread


def _burn(name: str, seconds: float, done: threading.Event, sampled: threading.Event) -> None:
    name_this_thread(name)
    until = time.thread_time() + seconds
    while time.thread_time() < until:
        pass
    done.set()
    sampled.wait()  # a thread that ended is in no task of /proc any more


def test_cpu_time_lands_in_the_group_of_the_thread_that_spent_it() -> None:
    before = sample(os.getpid())
    done, sampled = threading.Event(), threading.Event()
    worker = threading.Thread(target=_burn, args=("codec", 0.3, done, sampled))
    worker.start()
    done.wait()
    spent = sample(os.getpid()) - before
    sampled.set()
    worker.join()
    assert set(spent.seconds) == set(GROUPS)
    assert spent.seconds["codec"] >= 0.2  # /proc counts in clock ticks
    assert spent.seconds["engine"] == 0.0
    # Each group's ticks grew or stayed; `other` may read one tick short (the process's total
    # and its threads' ticks are read one after the other, not at one instant).
    assert all(ticks >= (-1 if group == "other" else 0) for group, ticks in spent.ticks.items())
    assert spent.total_s == sum(spent.ticks.values()) / os.sysconf("SC_CLK_TCK")
