"""Dask mode against process mode: what running on a cluster costs on one machine.

    python benchmarks/bench_dask.py [--workers 2]

Workloads (one run each; the backends are started and warmed up before the clock):

* ``cpu``: 16 tasks of a pure-Python loop calibrated to about 0.2 s each;
* ``tiny``: 20,000 tasks of ``x + 1`` (``chunksize="auto"``: both modes batch them);
* ``tiny-unchunked``: 2,000 tasks of ``x + 1`` with ``chunksize=1``, the raw cost of one
  task travelling on its own.

Both modes use ``--workers`` worker processes (Dask: a ``LocalCluster`` with one thread per
worker). "overhead/task" is wall time minus the ideal (total work divided by workers),
divided by the number of tasks. The ratio is dask over process: above 1.00 dask is slower.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import unirun

CPU_TASKS = 16
CPU_SECONDS = 0.2
TINY_TASKS = 20_000
UNCHUNKED_TASKS = 2_000


def spin(n: int) -> int:
    """A CPU-bound loop; ``n`` is calibrated to take about ``CPU_SECONDS``."""
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


def plus_one(x: int) -> int:
    return x + 1


def calibrate() -> int:
    n = 100_000
    while True:
        start = time.perf_counter()
        spin(n)
        elapsed = time.perf_counter() - start
        if elapsed > 0.05:
            return int(n * CPU_SECONDS / elapsed)
        n *= 2


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(
    backend: unirun.Executor, mode: str, cpu_tasks: list[Any], one: float, workers: int
) -> list[tuple[str, str, float, float]]:
    """Time the three workloads on a warm backend: (workload, mode, wall, overhead/task)."""
    wall = timed(lambda: unirun.run_all(cpu_tasks, mode=backend))
    rows = [("cpu", mode, wall, (wall - len(cpu_tasks) * one / workers) / len(cpu_tasks))]
    wall = timed(lambda: unirun.map(plus_one, range(TINY_TASKS), mode=backend))
    rows.append(("tiny", mode, wall, wall / TINY_TASKS))
    unchunked = range(UNCHUNKED_TASKS)
    wall = timed(lambda: unirun.map(plus_one, unchunked, mode=backend, chunksize=1))
    rows.append(("tiny-unchunked", mode, wall, wall / UNCHUNKED_TASKS))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    workers: int = args.workers
    n = calibrate()
    one = timed(lambda: spin(n))
    cpu_tasks = [unirun.task(spin, n) for _ in range(CPU_TASKS)]

    rows: list[tuple[str, str, float, float]] = []
    startup: dict[str, float] = {}
    for mode in ("process", "dask"):
        start = time.perf_counter()
        with unirun.executor(mode, max_workers=workers) as backend:
            unirun.run_all([unirun.task(plus_one, i) for i in range(2 * workers)], mode=backend)
            startup[mode] = time.perf_counter() - start
            rows += measure(backend, mode, cpu_tasks, one, workers)

    print(f"one cpu task alone: {one:.3f}s; {workers} workers")
    print(f"start-up + warm-up: process {startup['process']:.2f}s, dask {startup['dask']:.2f}s")
    print(f"{'workload':<16}{'mode':<9}{'wall (s)':>10}{'overhead/task':>16}{'dask/process':>14}")
    walls = {(w, m): t for w, m, t, _ in rows}
    for workload, mode, wall, per_task in rows:
        ratio = f"{wall / walls[(workload, 'process')]:.2f}" if mode == "dask" else ""
        print(f"{workload:<16}{mode:<9}{wall:>10.3f}{per_task * 1e6:>13.0f} us{ratio:>14}")


if __name__ == "__main__":
    main()
