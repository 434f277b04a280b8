"""Soak: a million trivial tasks through ``unirun.imap``, memory flat (FAULTS L1/L2).

Streams ``abs(-i)`` for ``i`` in a lazy ``range`` through ``unirun.imap`` and measures the
resident set size (``/proc/self/statm``, after ``gc.collect()``) at the 200,000th result
(the first fifth of the run: pools, caches and the window are warm by then) and at the
last. The gate is growth below 5 MiB between the two.

    python benchmarks/soak_imap.py                         # thread, 1,000,000 tasks
    python benchmarks/soak_imap.py --mode process          # auto-chunked processes
    python benchmarks/soak_imap.py --mode asyncio -n 200000

Prints one line of figures per run; exits 1 when the gate is not met. Linux only (statm).
``tests/faults/test_soak.py`` runs a smaller version as a slow test.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from typing import Any

import unirun

MiB = 2**20
GATE = 5 * MiB


def rss() -> int:
    """Resident set size of this process, in bytes, after a full collection."""
    gc.collect()
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def soak(n: int, mode: str, *, mark: float = 0.2, **options: Any) -> dict[str, float]:
    """Run ``n`` tasks through ``imap``; the RSS at the ``mark`` fraction and at the end."""
    at = max(1, int(n * mark))
    rss_mark = 0
    start = time.perf_counter()
    count = 0
    checksum = 0
    for count, value in enumerate(unirun.imap(abs, range(0, -n, -1), mode=mode, **options), 1):
        checksum += value
        if count == at:
            rss_mark = rss()
            mark_time = time.perf_counter()
    wall = time.perf_counter() - start
    rss_end = rss()
    if count != n or checksum != n * (n - 1) // 2:
        raise AssertionError(f"lost or wrong results: {count} of {n}, checksum {checksum}")
    return {
        "n": n,
        "wall": wall,
        "per_task_us": wall / n * 1e6,
        "after_mark_s": wall - (mark_time - start),
        "rss_mark_mib": rss_mark / MiB,
        "rss_end_mib": rss_end / MiB,
        "growth_mib": (rss_end - rss_mark) / MiB,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=1_000_000, help="tasks (default 1,000,000)")
    parser.add_argument("--mode", default="thread", help="unirun mode (default thread)")
    parser.add_argument("--max-workers", type=int, default=None)
    args = parser.parse_args(argv)
    options: dict[str, Any] = {}
    if args.max_workers is not None:
        options["max_workers"] = args.max_workers
    figures = soak(args.n, args.mode, **options)
    ok = figures["growth_mib"] * MiB < GATE
    print(
        f"mode={args.mode} n={args.n:,} wall={figures['wall']:.1f}s "
        f"({figures['per_task_us']:.1f} us/task) rss@{int(args.n * 0.2):,}="
        f"{figures['rss_mark_mib']:.1f}MiB rss@end={figures['rss_end_mib']:.1f}MiB "
        f"growth={figures['growth_mib']:+.2f}MiB gate<{GATE / MiB:.0f}MiB "
        f"{'ok' if ok else 'FAILED'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
