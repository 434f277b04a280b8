"""Soak: one executor shared by many threads, each making many ``run_all`` calls
(FAULTS L11).

T threads each make C calls of ``run_all`` with 10 tasks on the same backend, all at once.
Every task's result is unique in the whole run (a key made of thread, call and index), and
one task in each call raises ``ZeroDivisionError``, with ``return_exceptions=True``. Each
call must get exactly its own 10 outcomes, in its input order: a lost, duplicated or
misdelivered outcome shows as a wrong key ("nothing lost", invariant 1, over T x C calls).

    python benchmarks/soak_threads.py                          # thread, 10 x 1,000 calls
    python benchmarks/soak_threads.py --mode process --calls 100

Tasks are ``operator.floordiv`` (a built-in: it pickles by reference for process and dask
workers); on asyncio an async twin, so the calls share the event loop. Prints one line of
figures (calls per second, call latency p50 and p99); exits 1 on a wrong outcome.
``tests/faults/test_load.py`` runs 10 x 100 calls on thread, process and asyncio.
"""

from __future__ import annotations

import argparse
import operator
import statistics
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import unirun

TASKS = 10  # per call
FAILING = 3  # the index of the task that raises in each call


async def afloordiv(a: int, b: int) -> int:
    return a // b


def expected(key: int) -> list[Any]:
    """The outcomes of the call whose first task has ``key``."""
    return [ZeroDivisionError if i == FAILING else key + i for i in range(TASKS)]


def soak(threads: int, calls: int, mode: str, **options: Any) -> dict[str, float]:
    """``threads`` threads, ``calls`` calls each, on one ``mode`` backend; the figures."""
    fn: Callable[[int, int], Any] = afloordiv if mode == "asyncio" else operator.floordiv
    latencies: list[list[float]] = [[] for _ in range(threads)]
    wrong: list[str] = []
    errors: list[BaseException] = []
    go = threading.Barrier(threads + 1)

    def caller(t: int, backend: Any) -> None:
        try:
            go.wait()
            for c in range(calls):
                key = (t * calls + c) * TASKS
                tasks = [
                    unirun.task(fn, 2 * (key + i), 0 if i == FAILING else 2) for i in range(TASKS)
                ]
                start = time.perf_counter()
                out = backend.run_all(tasks, return_exceptions=True)
                latencies[t].append(time.perf_counter() - start)
                got = [type(o) if isinstance(o, BaseException) else o for o in out]
                if got != expected(key):
                    wrong.append(f"thread {t} call {c}: {got} != {expected(key)}")
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    with unirun.executor(mode, **options) as backend:
        backend.run_all([unirun.task(fn, 4, 2)] * TASKS)  # workers up before the clock
        workers = [
            threading.Thread(target=caller, args=(t, backend), name=f"caller-{t}")
            for t in range(threads)
        ]
        for worker in workers:
            worker.start()
        go.wait()
        start = time.perf_counter()
        for worker in workers:
            worker.join()
        wall = time.perf_counter() - start
    if errors:
        raise errors[0]
    if wrong:
        raise AssertionError(f"{len(wrong)} calls got wrong outcomes, the first: {wrong[:3]}")
    every = sorted(x for per in latencies for x in per)
    if len(every) != threads * calls:
        raise AssertionError(f"{len(every)} calls returned, of {threads * calls}")
    return {
        "threads": threads,
        "calls": calls,
        "wall": wall,
        "calls_per_s": threads * calls / wall,
        "p50_ms": statistics.median(every) * 1e3,
        "p99_ms": every[min(len(every) - 1, int(0.99 * len(every)))] * 1e3,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=10, help="caller threads (10)")
    parser.add_argument("--calls", type=int, default=1_000, help="calls per thread (1,000)")
    parser.add_argument("--mode", default="thread", help="unirun mode (default thread)")
    parser.add_argument("--max-workers", type=int, default=None)
    args = parser.parse_args(argv)
    options: dict[str, Any] = {}
    if args.max_workers is not None:
        options["max_workers"] = args.max_workers
    try:
        f = soak(args.threads, args.calls, args.mode, **options)
    except AssertionError as exc:
        print(f"mode={args.mode} FAILED: {exc}")
        return 1
    print(
        f"mode={args.mode} threads={args.threads} calls={args.calls:,} each "
        f"({args.threads * args.calls:,} calls, {args.threads * args.calls * TASKS:,} tasks) "
        f"wall={f['wall']:.1f}s ({f['calls_per_s']:.0f} calls/s) call latency "
        f"p50={f['p50_ms']:.1f}ms p99={f['p99_ms']:.1f}ms; no outcome lost or duplicated ok"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
