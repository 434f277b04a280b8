"""Soak: a batch in which every task raises, with ``return_exceptions=True`` (FAULTS L8).

``run_all`` of N tasks that each raise ``ValueError`` from a frame holding a 1 KiB
payload, with ``return_exceptions=True``, several rounds on one backend. While the
outcomes are held, each exception's traceback keeps its frame, and so its payload, alive;
once the caller drops them, nothing may ("tracebacks released"). Gates:

- no payload outlives its round (weak references: exact);
- the Python allocations the rounds after the first leave behind, measured with
  ``tracemalloc``, stay under 1 MiB (kept tracebacks would be N x ~3 KiB);
- the resident set size (``/proc/self/statm``, after ``gc.collect()`` and glibc's
  ``malloc_trim``) after the last round is within 5 MiB, or a quarter of what the outcomes
  held, of the RSS after the first: the allocator keeps some freed memory, a leak would
  keep all of it, every round.

The first round is timed (without tracemalloc, which slows a round about 2.5 times).

    python benchmarks/soak_errors.py                        # thread, 100,000 tasks
    python benchmarks/soak_errors.py --mode asyncio -n 20000 --rounds 5

Async tasks on asyncio, sync ones elsewhere. Prints one line of figures; exits 1 when a
gate is not met. Linux only (statm). ``tests/faults/test_load.py`` runs 20,000 on thread
and asyncio as a slow test.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import sys
import time
import tracemalloc
import weakref
from collections.abc import Callable
from typing import Any, NoReturn

import unirun

MiB = 2**20
#: Python allocations (tracemalloc) the traced rounds may leave behind: a dict or two
#: that keep their size, never the outcomes (N exceptions with frames: N x ~3 KiB).
RETAINED_GATE = 1 * MiB
#: RSS growth from the first round to the last: under 5 MiB, or a quarter of what the
#: outcomes held (allocator noise grows with the batch; a leak would be all of it).
RSS_GATE = 5 * MiB
RSS_SHARE = 0.25
PAYLOAD = 1024  # bytes held by each failing task's frame


class Payload:
    """1 KiB that lives in a failing task's frame; watched with a weak reference."""

    def __init__(self) -> None:
        self.data = bytearray(PAYLOAD)


#: Weak references to every payload made in this round (``list.append`` is atomic).
_payloads: list[weakref.ref[Payload]] = []


def fail(i: int) -> NoReturn:
    payload = Payload()
    _payloads.append(weakref.ref(payload))
    raise ValueError(f"task {i} failed")


async def afail(i: int) -> NoReturn:
    payload = Payload()
    _payloads.append(weakref.ref(payload))
    raise ValueError(f"task {i} failed")


def _malloc_trim() -> Callable[[], object]:
    """glibc's ``malloc_trim(0)``: hand freed heap pages back to the system, so that the
    RSS shows what is alive rather than what the allocator keeps (a no-op elsewhere)."""
    try:
        fn = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return lambda: None
    return lambda: fn(0)


trim = _malloc_trim()


def rss() -> int:
    """Resident set size of this process, in bytes, after a full collection and a trim."""
    gc.collect()
    trim()
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _round(backend: Any, fn: Callable[[int], Any], n: int) -> tuple[float, int]:
    """One call of ``n`` failing tasks: its wall time, and the RSS growth while the
    outcomes are held. Checks the outcomes, then that no payload outlives them."""
    tasks = [unirun.task(fn, i) for i in range(n)]
    start = time.perf_counter()
    out = backend.run_all(tasks, return_exceptions=True)
    wall = time.perf_counter() - start
    del tasks
    wrong = [
        (i, o)
        for i, o in enumerate(out)
        if type(o) is not ValueError or str(o) != f"task {i} failed"
    ]
    if len(out) != n or wrong:
        raise AssertionError(f"{len(out)} outcomes for {n} tasks; wrong: {wrong[:3]}")
    held = rss()
    del out, wrong
    gc.collect()
    alive = sum(ref() is not None for ref in _payloads)
    del _payloads[:]
    if alive:
        raise AssertionError(f"{alive} of {n} failed tasks' frames outlived their outcomes")
    return wall, held


def soak(n: int, mode: str, *, rounds: int = 3, **options: Any) -> dict[str, float]:
    """``rounds`` calls of ``n`` failing tasks each, on one ``mode`` backend.

    The first round is timed; the others run under ``tracemalloc``, which measures what
    they leave allocated once their outcomes are dropped (about 2.5x slower).
    """
    if rounds < 2:
        raise ValueError("rounds must be >= 2: one timed, then at least one traced")
    fn: Callable[[int], Any] = afail if mode == "asyncio" else fail
    with unirun.executor(mode, **options) as backend:
        _round(backend, fn, min(n, 1000))  # threads, the loop, caches
        base = rss()
        wall, held = _round(backend, fn, n)
        first = rss()
        tracemalloc.start(1)
        try:
            traced_base = tracemalloc.get_traced_memory()[0]
            for _ in range(rounds - 1):
                _round(backend, fn, n)
            gc.collect()
            retained = tracemalloc.get_traced_memory()[0] - traced_base
        finally:
            tracemalloc.stop()
        last = rss()
    return {
        "n": n,
        "rounds": rounds,
        "wall": wall,
        "per_task_us": wall / n * 1e6,
        "rss_base_mib": base / MiB,
        "held_mib": (held - base) / MiB,
        "rss_first_mib": first / MiB,
        "rss_last_mib": last / MiB,
        "growth_mib": (last - first) / MiB,
        "retained_kib": retained / 1024,
    }


def gates(f: dict[str, float]) -> list[str]:
    """The gates that the figures ``f`` miss (an empty list: all met)."""
    failed = []
    if f["retained_kib"] * 1024 >= RETAINED_GATE:
        failed.append(f"{f['retained_kib']:.0f} KiB of Python allocations retained")
    if f["growth_mib"] >= max(RSS_GATE / MiB, RSS_SHARE * f["held_mib"]):
        failed.append(f"RSS grew {f['growth_mib']:+.1f} MiB")
    return failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=100_000, help="tasks per round (100,000)")
    parser.add_argument("--mode", default="thread", help="unirun mode (default thread)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    parser.add_argument("--max-workers", type=int, default=None)
    args = parser.parse_args(argv)
    options: dict[str, Any] = {}
    if args.max_workers is not None:
        options["max_workers"] = args.max_workers
    f = soak(args.n, args.mode, rounds=args.rounds, **options)
    failed = gates(f)
    print(
        f"mode={args.mode} n={args.n:,} rounds={args.rounds} wall={f['wall']:.2f}s "
        f"({f['per_task_us']:.1f} us/task) rss: base={f['rss_base_mib']:.1f}MiB "
        f"held={f['held_mib']:+.1f}MiB after-round-1={f['rss_first_mib']:.1f}MiB "
        f"after-last={f['rss_last_mib']:.1f}MiB growth={f['growth_mib']:+.2f}MiB; "
        f"python allocations retained={f['retained_kib']:.0f}KiB "
        f"{'ok' if not failed else 'FAILED: ' + ', '.join(failed)}"
    )
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
