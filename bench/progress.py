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


def run_all(work, jobs: list, n_jobs: int, begins, ended) -> list:
    """work(job) for every job, n_jobs at a time in spawned processes (1: in this one), each
    announced (`begins(job)`: its label) and reported when it ends (`ended(result)`: its
    line); the results in the jobs' order.  `work` must be a module-level function."""
    runs = Runs(len(jobs))
    if n_jobs <= 1:
        results = []
        for job in jobs:
            runs.begin(begins(job))
            results.append(work(job))
            runs.done(ended(results[-1]))
        return results
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed
    with ProcessPoolExecutor(n_jobs, mp_context=mp.get_context("spawn")) as pool:
        futures = {pool.submit(work, job): i for i, job in enumerate(jobs)}
        print(f"{len(jobs)} runs, {n_jobs} at a time", file=sys.stderr, flush=True)
        results = [None] * len(jobs)
        for future in as_completed(futures):
            results[futures[future]] = future.result()
            runs.done(ended(results[futures[future]]))
    return results
