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
    assert sum(spent.ticks.values()) >= spent.ticks["codec"]
    assert spent.total_s == sum(spent.ticks.values()) / os.sysconf("SC_CLK_TCK")
