"""Processes and coroutines together: async tasks that await *and* burn CPU.

    python benchmarks/bench_async_cpu.py [--tasks 64] [--waits 4] [--burn 0.005] [--repeat 3]

Each task awaits ``--waits`` sleeps of 20 ms and burns ``--burn`` seconds of pure-Python
CPU after each. Contenders, in one run, each in a fresh interpreter:

* ``asyncio``: ``mode="asyncio"`` -- every task on one loop: the waits overlap, the CPU
  work queues behind the GIL on one core;
* ``process (1 per worker)``: ``ProcessBackend(async_concurrency=1)`` -- both cores, but a
  worker sits idle through each of its task's waits;
* ``process + coroutines``: ``ProcessBackend(async_concurrency=32)`` -- both cores, and
  each worker overlaps the waits of many tasks on its own event loop.

Prints wall-time medians and each contender's ratio to the best.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

CONTENDERS = ("asyncio", "process (1 per worker)", "process + coroutines")


def burn(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


async def job(waits: int, cpu: float) -> int:
    import asyncio

    for _ in range(waits):
        await asyncio.sleep(0.02)
        burn(cpu)
    return waits


def _measure(contender: str, tasks: int, waits: int, cpu: float) -> float:
    import unirun

    batch = [unirun.task(job, waits, cpu) for _ in range(tasks)]
    if contender == "asyncio":
        backend: unirun.Executor = unirun.executor("asyncio", max_workers=tasks)
    else:
        concurrency = 1 if contender == "process (1 per worker)" else 32
        backend = unirun.ProcessBackend(max_workers=2, async_concurrency=concurrency)
    with backend:
        unirun.run_all([unirun.task(job, 1, 0.0)] * 2, mode=backend)  # start the workers
        start = time.perf_counter()
        out = unirun.run_all(batch, mode=backend)
        elapsed = time.perf_counter() - start
    assert out == [waits] * tasks
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=64)
    parser.add_argument("--waits", type=int, default=4)
    parser.add_argument("--burn", type=float, default=0.005)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_measure(args.child, args.tasks, args.waits, args.burn)))
        return
    times: dict[str, list[float]] = {c: [] for c in CONTENDERS}
    for _ in range(args.repeat):
        for contender in CONTENDERS:  # alternate, each in a fresh interpreter
            out = subprocess.run(
                [sys.executable, __file__, "--child", contender, "--tasks", str(args.tasks),
                 "--waits", str(args.waits), "--burn", str(args.burn)],
                capture_output=True, text=True, check=True, timeout=300,
            )  # fmt: skip
            times[contender].append(float(out.stdout.strip().splitlines()[-1]))
    medians = {c: statistics.median(v) for c, v in times.items()}
    best = min(medians.values())
    cpu_total = args.tasks * args.waits * args.burn
    print(
        f"{args.tasks} async tasks x {args.waits} waits of 20 ms + {args.burn * 1e3:.0f} ms "
        f"CPU each ({cpu_total:.2f} s CPU in all); median of {args.repeat}"
    )
    print(f"| {'contender':<24} | wall (s) | x best |")
    print(f"|{'-' * 26}|----------|--------|")
    for contender in CONTENDERS:
        print(f"| {contender:<24} | {medians[contender]:8.3f} | {medians[contender] / best:6.2f} |")


if __name__ == "__main__":
    main()
