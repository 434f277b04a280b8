"""Is auto as good as the best backend? Six workload classes, every backend, and auto.

    python benchmarks/bench_auto.py            # a quick run (about a minute on 2 cores)
    python benchmarks/bench_auto.py --scale 3  # bigger batches, steadier figures
    python benchmarks/bench_auto.py --only cpu,mixed --repeats 3

Each workload runs on every backend that can be imported here, and on ``mode="auto"``,
in the same interpreter. Backends are started and warmed before the clock starts (auto's
warm pools too), so the figures compare running, not start-up. Tasks carry *no hints*:
auto decides by what the tasks are and by measuring them. The last columns give auto's
time over the best single backend's (goal: at most 1.10) and what auto picked.

gevent runs here without monkey-patching (it would patch this whole process), so its
blocking-I/O figures are serial ones; ``benchmarks/bench_gevent.py`` measures it patched.
Benchmarks are not tests: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import unirun
from unirun._backends._base import BackendBase
from unirun._errors import BackendUnavailableError
from unirun._registry import factory_for
from unirun._warm import WARM

MODES = ("serial", "thread", "process", "asyncio", "gevent", "dask")


# -- task functions (module level, so processes and dask pickle them by reference) --------


def spin(n: int) -> int:
    total = 0
    for i in range(n):
        total += i
    return total


def block(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


async def wait(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


def add(x: int, y: int) -> int:
    return x + y


def checksum(payload: bytes) -> int:
    return len(payload) + payload[0]


# -- workloads --------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    name: str
    what: str
    make: Callable[[int], list[Any]]


def _cpu(scale: int) -> list[Any]:
    return [functools.partial(spin, 1_500_000) for _ in range(12 * scale)]


def _blocking(scale: int) -> list[Any]:
    return [functools.partial(block, 0.02) for _ in range(60 * scale)]


def _async(scale: int) -> list[Any]:
    return [unirun.task(wait, 0.02) for _ in range(200 * scale)]


def _tiny(scale: int) -> list[Any]:
    return [functools.partial(add, i, i) for i in range(10_000 * scale)]


def _payload(scale: int) -> list[Any]:
    blob = bytes(range(256)) * (4 * 1024 * 4)  # 4 MiB
    return [functools.partial(checksum, blob) for _ in range(16 * scale)]


def _mixed(scale: int) -> list[Any]:
    tasks: list[Any] = []
    for _ in range(6 * scale):
        tasks.append(functools.partial(spin, 1_500_000))
        tasks.extend(functools.partial(block, 0.05) for _ in range(5))
        tasks.extend(unirun.task(wait, 0.05) for _ in range(5))
    return tasks


WORKLOADS = (
    Workload("cpu", "pure-Python loops, ~30-60 ms each", _cpu),
    Workload("blocking", "time.sleep(0.02) each", _blocking),
    Workload("async", "await asyncio.sleep(0.02) each", _async),
    Workload("tiny", "x + y, a few us each", _tiny),
    Workload("payload", "4 MiB argument, trivial work", _payload),
    Workload("mixed", "CPU loops, blocking sleeps and async sleeps in one batch", _mixed),
)


# -- running -----------------------------------------------------------------------------


def available() -> list[str]:
    out = []
    for mode in MODES:
        try:
            factory_for(mode)
        except (BackendUnavailableError, ModuleNotFoundError):
            continue
        out.append(mode)
    return out


def make_backend(mode: str) -> BackendBase:
    backend = factory_for(mode)()  # the defaults, which is what mode="..." gives a user
    assert isinstance(backend, BackendBase)
    return backend


def run_on(backend: BackendBase | None, workload: Workload, scale: int) -> list[Any]:
    tasks = workload.make(scale)
    return unirun.run_all(tasks) if backend is None else backend.run_all(tasks)


def timed(run: Callable[[], list[Any]], repeats: int) -> float | str:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        try:
            run()
        except (TypeError, ValueError) as exc:  # the backend cannot take these tasks
            return f"n/a ({type(exc).__name__})"
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def warm_auto() -> None:
    """Start auto's warm pools, as a long-running program would already have."""
    unirun.run_all([unirun.Task(add, (1, 2), hint="cpu")] * 4)
    unirun.run_all([unirun.Task(add, (1, 2), hint="io")] * 4)
    unirun.run_all([unirun.task(wait, 0)] * 4)


def picked(tasks: list[Any]) -> str:
    records: list[str] = []

    class Grab(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    handler = Grab(level=logging.INFO)
    logger = logging.getLogger("unirun")
    old = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        unirun.run_all(tasks)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)
    modes = []
    for message in records:
        if "measuring it" in message:
            continue
        mode = message.split("chose mode '", 1)[1].split("'", 1)[0]
        if mode not in modes:
            modes.append(mode)
    return "+".join(modes) or "?"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--scale", type=int, default=1, help="multiply batch sizes")
    parser.add_argument("--repeats", type=int, default=1, help="median of this many runs")
    parser.add_argument("--only", default="", help="comma-separated workload names")
    parser.add_argument("--modes", default="", help="comma-separated modes (default: all)")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore", RuntimeWarning)  # gevent without monkey-patching
    modes = [m for m in (args.modes.split(",") if args.modes else available()) if m]
    chosen = [w for w in WORKLOADS if not args.only or w.name in args.only.split(",")]

    backends = {mode: make_backend(mode) for mode in modes}
    try:
        for backend in backends.values():
            backend.run_all([functools.partial(add, 1, 1)] * 8)  # start workers
        warm_auto()
        header = ["workload", *modes, "auto", "auto/best", "auto picked"]
        print(" | ".join(header))
        print(" | ".join("---" for _ in header))
        for workload in chosen:
            row: list[str] = [workload.name]
            best = float("inf")
            for mode in modes:
                backend = backends[mode]
                t = timed(functools.partial(run_on, backend, workload, args.scale), args.repeats)
                if isinstance(t, float):
                    best = min(best, t)
                    row.append(f"{t:.3f}")
                else:
                    row.append(t)
            auto = timed(functools.partial(run_on, None, workload, args.scale), args.repeats)
            assert isinstance(auto, float)
            row += [f"{auto:.3f}", f"{auto / best:.2f}", picked(workload.make(args.scale))]
            print(" | ".join(row), flush=True)
    finally:
        for backend in backends.values():
            backend.shutdown(wait=True, cancel_futures=True)
        WARM.shutdown_all()
    print(
        f"\nseconds, median of {args.repeats}; scale {args.scale}; "
        f"python {sys.version.split()[0]}; {unirun._choose.available_cpus()} CPUs usable"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
