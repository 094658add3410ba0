"""Long benches show themselves: a line when each run begins and when it ends, with how long
the bench has taken so far and an estimate of what remains (the mean time of the runs
finished so far, times the runs left; with several runs in parallel it is still wall time)."""
from __future__ import annotations

import sys
import time


def minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


class Runs:
    """`total` runs of a bench: `begin(label)` before one starts, `done(label)` after it ends.
    Lines go to stderr (the benches' stdout holds their tables)."""

    def __init__(self, total: int, stream=None):
        self.total, self.finished, self.stream = total, 0, stream or sys.stderr
        self.started = time.perf_counter()

    def begin(self, label: str):
        print(f"[{self.finished}/{self.total} done] {label} ...", file=self.stream, flush=True)

    def done(self, label: str) -> str:
        self.finished += 1
        elapsed = time.perf_counter() - self.started
        left = elapsed / self.finished * (self.total - self.finished)
        line = f"[{self.finished}/{self.total} done] {label}; {minutes(elapsed)} so far" + \
            (f", about {minutes(left)} left" if self.finished < self.total else "")
        print(line, file=self.stream, flush=True)
        return line
