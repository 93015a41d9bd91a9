"""CPU time a process spent, per thread group, read from /proc (Linux).

A server measured on the machine that also runs its load must be judged by its own CPU time,
not by wall time. Threads are grouped by what they do: the event loop is the main thread
(its id is the process id); the service names its codec and engine threads (`codec`,
`engine`, see `service/threads.py`), and threads those start (XNNPACK's workers) inherit the
name. Everything else (gRPC's C-core threads, the metrics server) is `other`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
GROUPS = ("event_loop", "codec", "engine", "other")


def _thread_group(pid: int, tid: int, name: str) -> str:
    if tid == pid:
        return "event_loop"
    for group in ("codec", "engine"):
        if name.startswith(group):
            return group
    return "other"


@dataclass(frozen=True)
class CpuSample:
    """CPU (user + system) per thread group, at one moment, in clock ticks: /proc's own
    integer unit, so that sums and differences are exact and seconds are derived last."""

    ticks: dict[str, int]

    @property
    def seconds(self) -> dict[str, float]:
        return {group: ticks / _TICKS_PER_S for group, ticks in self.ticks.items()}

    @property
    def total_s(self) -> float:
        return sum(self.ticks.values()) / _TICKS_PER_S

    def __sub__(self, earlier: CpuSample) -> CpuSample:
        return CpuSample({g: self.ticks[g] - earlier.ticks.get(g, 0) for g in GROUPS})


def thread_ticks(pid: int | str) -> Iterator[tuple[int, str, int]]:
    """(thread id, thread name, user + system clock ticks) of each live thread of `pid`
    ("self" for this process)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue  # the thread ended while we read
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        yield int(task.name), name, int(fields[11]) + int(fields[12])


def sample(pid: int) -> CpuSample:
    """CPU per group of the process's threads. Threads that ended before the sample are
    counted through the process's own total (they are in no task any more): as `other`."""
    ticks = dict.fromkeys(GROUPS, 0)
    for tid, name, ticks_of_thread in thread_ticks(pid):
        ticks[_thread_group(pid, tid, name)] += ticks_of_thread
    process = Path(f"/proc/{pid}/stat").read_text()
    fields = process[process.rindex(")") + 2 :].split()
    whole = int(fields[11]) + int(fields[12])  # utime + stime
    ticks["other"] += max(0, whole - sum(ticks.values()))
    return CpuSample(ticks)
