"""Outgrow one machine by changing one word: the same batch on processes, then on Dask.

``mode="process"`` runs the tasks on this machine's cores; ``mode="dask"`` runs them on a
Dask cluster — here a local one that unirun starts (loopback only, dashboard off) and
closes at exit. On a real cluster, add ``address="tcp://scheduler:8786"``; nothing else
changes. Run it: ``python examples/scale_out.py``.
"""

from __future__ import annotations

import time

import unirun


def count_primes(limit: int) -> int:
    """Count the primes below ``limit`` the slow way: a CPU-bound task."""
    return sum(all(n % d for d in range(2, int(n**0.5) + 1)) for n in range(2, limit))


def main() -> None:
    limits = [20_000 + 5_000 * i for i in range(8)]
    tasks = [unirun.task(count_primes, limit) for limit in limits]
    for mode in ("process", "dask"):  # <- the one word that changes
        start = time.perf_counter()
        results = unirun.run_all(tasks, mode=mode)
        print(f"{mode:>8}: {results}  ({time.perf_counter() - start:.2f}s)")


if __name__ == "__main__":  # worker processes import this module: keep the guard
    main()
