"""The same code on every backend: the mode is one word.

``resize_all`` stands for library code: it calls ``unirun.run_all`` without naming a
mode. The application picks the backend, either by passing ``mode=`` or, without touching
the library, with ``unirun.using(mode=...)``. Nothing else changes: same tasks, same
results, same error handling.

Run it: ``python examples/swap_backends.py``.
"""

from __future__ import annotations

import time
import warnings

import unirun

MODES = ["serial", "thread", "process", "asyncio", "gevent", "dask"]


def thumbnail(size: int) -> int:
    """A little I/O and a little computing, like most real tasks."""
    time.sleep(0.01)
    return sum(i * i for i in range(size)) % 1_000


def resize_all(sizes: list[int]) -> list[int]:
    """Library code: no mode here."""
    return unirun.run_all([unirun.task(thumbnail, s) for s in sizes])


def main() -> None:
    sizes = [20_000 + i for i in range(40)]
    expected = [thumbnail(s) for s in sizes]
    print(f"{len(sizes)} tasks, one word apart:")
    for mode in MODES:
        start = time.perf_counter()
        try:
            with warnings.catch_warnings(record=True) as caught, unirun.using(mode=mode):
                warnings.simplefilter("always")
                results = resize_all(sizes)  # <- runs on `mode`
        except ImportError as exc:  # BackendUnavailableError is an ImportError
            print(f"  mode={mode!r:<10} skipped (not available: {exc})")
            continue
        seconds = time.perf_counter() - start
        same = "same results" if results == expected else "DIFFERENT RESULTS"
        print(f"  mode={mode!r:<10} {seconds:5.2f} s  {same}")
        for warning in caught:
            print(f"    note: {str(warning.message).split(':')[0]}")
    print("Start-up costs are included: process and dask pay them once, on first use.")


if __name__ == "__main__":
    main()
