"""CPU-bound work: the GIL makes threads no faster than one loop; processes use every core.

Counts the primes below 1,000,000 in 8 slices, with ``mode="serial"``, ``"thread"``,
``"process"`` and ``"auto"`` (which sends ``@unirun.cpu_bound`` work to processes).

Run it: ``python examples/cpu_bound.py``. The ``if __name__ == "__main__"`` guard matters:
process workers import this file to find ``count_primes``.
"""

from __future__ import annotations

import os
import time

import unirun

LIMIT = 1_000_000
SLICES = 8


@unirun.cpu_bound
def count_primes(start: int, stop: int) -> int:
    """Primes in ``[start, stop)``, by trial division: pure Python, holds the GIL."""
    count = 0
    for n in range(max(start, 2), stop):
        if n % 2 == 0:
            count += n == 2
            continue
        d = 3
        while d * d <= n:
            if n % d == 0:
                break
            d += 2
        else:
            count += 1
    return count


def main() -> None:
    starts = [i * LIMIT // SLICES for i in range(SLICES)]
    stops = [(i + 1) * LIMIT // SLICES for i in range(SLICES)]
    print(f"Counting primes below {LIMIT:,} in {SLICES} slices on {os.cpu_count()} CPUs:")
    print(f"  auto would pick: {unirun.choose_backend(hint='cpu').reason}")
    baseline = None
    for mode in ["serial", "thread", "process", "auto"]:
        try:
            start = time.perf_counter()
            counts = unirun.map(count_primes, starts, stops, mode=mode)
            seconds = time.perf_counter() - start
        except ImportError as exc:  # BackendUnavailableError is an ImportError
            print(f"  {mode}: skipped (not available: {exc})")
            continue
        baseline = baseline or seconds
        print(
            f"  {mode:<8} {sum(counts):,} primes in {seconds:5.2f} s "
            f"({baseline / seconds:3.1f}x serial)"
        )
    print("Threads take turns holding the GIL; processes run in parallel.")


if __name__ == "__main__":
    main()
