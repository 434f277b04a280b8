"""Clocks and memory gauges for one measurement in one fresh interpreter.

Memory figures are *deltas* in MiB from a baseline taken just before the measured code
(after imports and input data are made): ``rss_mib`` is this process's peak RSS
(``ru_maxrss``) above its RSS at the baseline, ``tree_mib`` the peak of the summed PSS
(proportional set size: a page shared by forked processes counts once in all) of this
process and all its children, sampled every 10 ms (psutil finds the children; RSS where
``/proc/PID/smaps_rollup`` is missing), ``tracemalloc_mib``
the peak of Python allocations (only with ``tracemalloc=1``: tracing slows the code down).
"""

from __future__ import annotations

import os
import resource
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

__all__ = [
    "Metrics",
    "Params",
    "SkipVariant",
    "check",
    "cold_warm",
    "memory",
    "optional",
    "require",
]

T = TypeVar("T")
Metrics = dict[str, float]
Params = dict[str, float]
MIB = float(1 << 20)
_PAGE = os.sysconf("SC_PAGE_SIZE")


class SkipVariant(Exception):
    """This variant cannot run here (a backend failed to load, a package is missing)."""


def require(mode: str) -> None:
    """Load unirun's backend for ``mode`` now, so a broken or missing one is a skip."""
    import unirun

    name = {
        "serial": "SerialBackend",
        "thread": "ThreadBackend",
        "process": "ProcessBackend",
        "asyncio": "AsyncioBackend",
        "gevent": "GeventBackend",
        "dask": "DaskBackend",
    }[mode]
    try:
        getattr(unirun, name)
    except Exception as exc:
        reason = f"unirun's {mode} backend failed to load: {type(exc).__name__}: {exc}"
        raise SkipVariant(reason) from exc


def optional(package: str) -> Any:
    """Import a peer's package, or skip the variant when it is not installed."""
    import importlib

    try:
        return importlib.import_module(package)
    except ModuleNotFoundError as exc:
        raise SkipVariant(f"{package} is not installed ({exc})") from None


def check(got: Any, expected: Any) -> None:
    """Fail the measurement (not silently time a wrong answer) when results are wrong."""
    if got != expected:
        raise RuntimeError(f"wrong results: {str(got)[:80]} != {str(expected)[:80]}")


def cold_warm(
    start: Callable[[], T],
    call: Callable[[T], Any],
    stop: Callable[[T], object],
    verify: Callable[[Any], None],
    *,
    warm: bool = True,
) -> Metrics:
    """Time ``start()`` plus a first ``call`` (cold), then a second ``call`` (warm).

    ``stop`` (shutting a pool down) is not timed: unirun's warm backends are not shut down
    between calls either. ``verify`` checks each call's result, outside the clock.
    """
    t0 = time.perf_counter()
    pool = start()
    first = call(pool)
    t1 = time.perf_counter()
    metrics = {"wall": t1 - t0}
    if warm:
        second = call(pool)
        metrics["warm"] = time.perf_counter() - t1
        verify(second)
    stop(pool)
    verify(first)
    return metrics


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _pss(proc: Any) -> int:
    try:
        with open(f"/proc/{proc.pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except FileNotFoundError:
        pass
    return int(proc.memory_info().rss)


class _TreeSampler(threading.Thread):
    """Samples the summed RSS of this process and its descendants."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        psutil = optional("psutil")
        self._me = psutil.Process()
        self._error: type[Exception] = psutil.Error
        self._stop_event = threading.Event()
        self.peak = 0

    def sample(self) -> int:
        total = _pss(self._me)
        for child in self._me.children(recursive=True):
            try:
                total += _pss(child)
            except (OSError, self._error):
                pass  # it exited between listing and reading
        return total

    def run(self) -> None:
        while not self._stop_event.wait(0.01):
            self.peak = max(self.peak, self.sample())

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


@contextmanager
def memory(metrics: Metrics, *, tree: bool = False, trace: bool = False) -> Iterator[None]:
    """Record the memory figures of the enclosed code into ``metrics``."""
    sampler = _TreeSampler() if tree else None
    base = _rss()
    tree_base = sampler.sample() if sampler is not None else 0
    if trace:
        tracemalloc.start()
    if sampler is not None:
        sampler.start()
    try:
        yield
    finally:
        if trace:
            metrics["tracemalloc_mib"] = tracemalloc.get_traced_memory()[1] / MIB
            tracemalloc.stop()
        if sampler is not None:
            sampler.stop()
            metrics["tree_mib"] = max(0, sampler.peak - tree_base) / MIB
        metrics["rss_mib"] = max(0, _peak_rss() - base) / MIB
