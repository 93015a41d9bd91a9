"""The GPU benchmark's run: its output, its one deadline, and its sections, each isolated.

A section prints one line, `section NAME: ok`, `section NAME: FAILED (reason)` or `section NAME:
skipped (reason)`, then its figures; a failure writes its traceback to the summary and the run
goes on with the next section. A section that would not fit in the time left is skipped and
says so. Every line goes to OUT/summary.txt and every record to OUT/results.jsonl as soon as
its section ends, so a run cut short keeps what the sections before it measured.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class Skipped(Exception):
    """A section that cannot run here, with the reason it prints."""


class CheckFailed(Exception):
    """A self-check whose figures show the device wrong: the section is FAILED."""


class Output:
    """Prints each line and appends it to summary.txt; records go to results.jsonl."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.summary = folder / "summary.txt"
        self._results = folder / "results.jsonl"

    def line(self, text: str = "") -> None:
        print(text, flush=True)
        with self.summary.open("a") as file:
            file.write(text + "\n")

    def record(self, kind: str, **figures: object) -> None:
        with self._results.open("a") as file:
            file.write(json.dumps({"kind": kind, "time": time.time(), **figures}, default=str))
            file.write("\n")


class SectionOutput:
    """One section's figures, held until its status line is known, then written."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.records: list[tuple[str, dict[str, object]]] = []

    def line(self, text: str = "") -> None:
        self.lines.append(text)
        print(f"  .. {text}", file=sys.stderr, flush=True)  # progress, live on the host

    def record(self, kind: str, **figures: object) -> None:
        self.records.append((kind, figures))


@dataclass(frozen=True)
class Section:
    name: str
    run: Callable[[Any], None]  # gets the Bench; prints through bench.out
    cuda_s: float  # about how long it takes on the GPU host (the least, for those that adapt)
    cpu_s: float  # about how long the CPU dry run takes
    needs_cuda: bool = False


class Deadline:
    """One deadline for the whole run, from the process's start."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.started = clock()
        self.ends = self.started + seconds

    def left_s(self) -> float:
        return self.ends - self._clock()

    def elapsed_s(self) -> float:
        return self._clock() - self.started


def run_sections(bench: Any, sections: list[Section], out: Output) -> dict[str, str]:
    """Each section in order, isolated: its status ("ok", "FAILED", "skipped") by name."""
    statuses = {}
    for section in sections:
        expected_s = section.cuda_s if bench.cuda else section.cpu_s
        section_out = bench.out = SectionOutput()
        started = time.monotonic()
        failure = None
        print(f"[loadtest.bench.gpu] {section.name}: starting, about {expected_s:.0f} s",
              file=sys.stderr)  # fmt: skip
        try:
            if section.needs_cuda and not bench.cuda:
                raise Skipped("no CUDA")
            if bench.deadline.left_s() < expected_s:
                raise Skipped(
                    f"no time: needs about {expected_s:.0f} s, "
                    f"{max(0.0, bench.deadline.left_s()):.0f} s left"
                )
            section.run(bench)
            status = "ok"
        except Skipped as skipped:
            status = f"skipped ({skipped})"
        except Exception as error:  # the section fails; the run goes on
            status = f"FAILED ({type(error).__name__}: {error})"
            failure = traceback.format_exc()
        took_s = time.monotonic() - started
        statuses[section.name] = status.split(" ")[0]
        out.line(f"\nsection {section.name}: {status}  [{took_s:.1f} s]")
        for text in section_out.lines:
            out.line(text)
        if failure:
            out.line("  " + failure.rstrip().replace("\n", "\n  "))
        for kind, figures in section_out.records:
            out.record(kind, section=section.name, **figures)
        out.record("section", section=section.name, status=status, seconds=took_s)
    return statuses
