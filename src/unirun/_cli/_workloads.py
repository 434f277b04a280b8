"""The workloads ``unirun bench`` measures.

The task functions live at module level so they pickle by reference into process and
Dask workers. Sizes are scaled to the machine: the CPU task is calibrated so that one call
takes about ``cpu_seconds`` here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import unirun

__all__ = ["Workload", "calibrate", "make_workloads", "noop", "spin"]


def spin(n: int) -> int:
    """Pure-Python CPU work: holds the GIL for its whole run."""
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


def block(seconds: float) -> float:
    """Blocking I/O stand-in: a stdlib call that releases the GIL and waits."""
    time.sleep(seconds)
    return seconds


async def nap(seconds: float) -> float:
    """Async I/O stand-in: waits on the event loop."""
    await asyncio.sleep(seconds)
    return seconds


def tiny(x: int) -> int:
    """Almost no work: what is left is the backend's overhead per task."""
    return x + 1


def noop() -> None:
    """Warms a backend up (starts its workers) before it is timed."""
    return None


async def anoop() -> None:
    """The async warm-up task."""
    return None


@dataclass
class Workload:
    """A named batch of tasks and what its results must be."""

    name: str
    description: str
    fn: Callable[..., Any]
    args: list[Any]
    hint: str | None
    expected: list[Any] = field(default_factory=list)
    is_async: bool = False

    def tasks(self) -> list[unirun.Task[Any]]:
        """A fresh list of tasks (hinted, so auto and choose_backend can see the hint)."""
        return [unirun.Task(self.fn, (a,), hint=self.hint) for a in self.args]  # type: ignore[arg-type]

    def warmup(self) -> list[unirun.Task[Any]]:
        """One trivial task of the same kind, so workers start before the clock does."""
        return [unirun.Task(anoop if self.is_async else noop, hint=self.hint)]  # type: ignore[arg-type]


def calibrate(seconds: float) -> int:
    """The ``spin`` argument that takes about ``seconds`` on this machine."""
    n = 20_000
    while True:
        start = time.perf_counter()
        spin(n)
        took = time.perf_counter() - start
        if took > 0.02:
            return max(1, int(n * seconds / took))
        n *= 4


def make_workloads(quick: bool) -> list[Workload]:
    """The four built-in workloads; smaller with ``quick``."""
    cpu_seconds = 0.1 if quick else 0.2
    cpu_tasks = 4 if quick else 12
    io_tasks, io_seconds = (20, 0.05) if quick else (100, 0.05)
    async_tasks, async_seconds = (40, 0.025) if quick else (200, 0.02)
    tiny_tasks = 1_000 if quick else 20_000
    n = calibrate(cpu_seconds)
    expected_spin = spin(n)
    return [
        Workload(
            "cpu",
            f"{cpu_tasks} x pure-Python loop (~{cpu_seconds:g} s each), hint='cpu'",
            spin,
            [n] * cpu_tasks,
            "cpu",
            [expected_spin] * cpu_tasks,
        ),
        Workload(
            "blocking-io",
            f"{io_tasks} x time.sleep({io_seconds:g}), hint='io'",
            block,
            [io_seconds] * io_tasks,
            "io",
            [io_seconds] * io_tasks,
        ),
        Workload(
            "async-io",
            f"{async_tasks} x await asyncio.sleep({async_seconds:g})",
            nap,
            [async_seconds] * async_tasks,
            None,
            [async_seconds] * async_tasks,
            is_async=True,
        ),
        Workload(
            "tiny",
            f"{tiny_tasks} x x + 1 (per-task overhead), no hint",
            tiny,
            list(range(tiny_tasks)),
            None,
            [x + 1 for x in range(tiny_tasks)],
        ),
    ]
