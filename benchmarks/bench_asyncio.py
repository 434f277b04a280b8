"""unirun's asyncio mode against a bare ``asyncio.gather`` and an anyio task group.

    python benchmarks/bench_asyncio.py [--repeat 3] [--sizes 10000,100000] [--sleep 0.01]
    python benchmarks/bench_asyncio.py --quick      # 10,000 tasks only, one repeat

Workload: N concurrent ``asyncio.sleep(--sleep)`` (``anyio.sleep`` for the task group), all
running at once (unirun gets ``max_workers=N``). Contenders:

* ``gather``: ``asyncio.run`` of ``asyncio.gather`` over N coroutines (the baseline);
* ``anyio-taskgroup``: ``anyio.run`` of a task group that starts N tasks;
* ``unirun run_all``: ``unirun.run_all(coroutines, mode="asyncio", max_workers=N)`` from
  sync code: the loop in its own thread, the engine in the caller's;
* ``unirun arun_all``: ``await unirun.arun_all(...)`` inside ``asyncio.run``: the tasks
  run in the caller's loop (anyio task group and semaphore).

Each measurement runs in a fresh interpreter; wall time covers the batch alone (loop or
backend start-up included, interpreter start and imports not). Peak memory is the growth
of the peak RSS (``ru_maxrss``) over the batch, so tracemalloc does not slow the timing.
Per-task overhead is ``(wall - sleep) / N``. Figures are medians of ``--repeat`` runs;
ratios are against ``gather`` (1.00 is as fast / as small).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from typing import Any

CONTENDERS = ("gather", "anyio-taskgroup", "unirun run_all", "unirun arun_all")


def _peak_rss_kib() -> int:
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux


def child(contender: str, n: int, sleep: float) -> dict[str, float]:
    """Run one measurement in this (fresh) interpreter."""
    import asyncio

    import anyio

    import unirun

    async def gather() -> None:
        await asyncio.gather(*(asyncio.sleep(sleep) for _ in range(n)))

    async def taskgroup() -> None:
        async with anyio.create_task_group() as tg:
            for _ in range(n):
                tg.start_soon(anyio.sleep, sleep)

    async def arun_all() -> None:
        await unirun.arun_all(
            [asyncio.sleep(sleep) for _ in range(n)], mode="asyncio", max_workers=n
        )

    rss0 = _peak_rss_kib()
    start = time.perf_counter()
    if contender == "gather":
        asyncio.run(gather())
    elif contender == "anyio-taskgroup":
        anyio.run(taskgroup)
    elif contender == "unirun run_all":
        unirun.run_all([asyncio.sleep(sleep) for _ in range(n)], mode="asyncio", max_workers=n)
    elif contender == "unirun arun_all":
        asyncio.run(arun_all())
    else:
        raise SystemExit(f"unknown contender {contender!r}")
    wall = time.perf_counter() - start
    return {"wall": wall, "rss_kib": max(0, _peak_rss_kib() - rss0)}


def measure(contender: str, n: int, sleep: float) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", contender, str(n), str(sleep)],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    figures: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--sleep", type=float, default=0.01)
    parser.add_argument("--quick", action="store_true", help="10,000 tasks, one repeat")
    args = parser.parse_args()
    sizes = [10_000] if args.quick else [int(s) for s in args.sizes.split(",")]
    repeat = 1 if args.quick else args.repeat

    rows: list[tuple[int, str, dict[str, Any]]] = []
    for n in sizes:
        for contender in CONTENDERS:
            runs = [measure(contender, n, args.sleep) for _ in range(repeat)]
            med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            rows.append((n, contender, med))
            print(f"  measured {contender} x {n}: {med['wall']:.3f} s", file=sys.stderr)

    print(f"\n{args.sleep}s sleeps, all concurrent; median of {repeat}; ratios vs gather\n")
    header = (
        f"{'tasks':>7}  {'contender':<16} {'wall s':>7} {'x':>5}  {'us/task':>8} {'x':>5}"
        f"  {'peak MiB':>8} {'KiB/task':>8} {'x':>5}"
    )
    print(header)
    print("-" * len(header))
    base: dict[int, dict[str, Any]] = {n: med for n, c, med in rows if c == "gather"}
    for n, contender, med in rows:
        b = base[n]
        over = max(0.0, med["wall"] - args.sleep) / n * 1e6
        b_over = max(1e-9, b["wall"] - args.sleep) / n * 1e6
        kib = med["rss_kib"] / n
        b_kib = max(1e-9, b["rss_kib"] / n)
        print(
            f"{n:>7}  {contender:<16} {med['wall']:>7.3f} {med['wall'] / b['wall']:>5.2f}"
            f"  {over:>8.1f} {over / b_over:>5.2f}"
            f"  {med['rss_kib'] / 1024:>8.1f} {kib:>8.2f} {kib / b_kib:>5.2f}"
        )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(child(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))))
    else:
        main()
