"""I/O-bound workloads: blocking sleeps, async sleeps and HTTP GETs to a loopback server.

``concurrency`` is the pool size (threads, greenlets) or the most coroutines at once; the
gevent variants run in an interpreter that ``workloads.py`` monkey-patched first.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .measure import Metrics, Params, memory, require
from .pools import ASYNC_RUNNERS, RUNNERS
from .tasks import asleep, block, fetch, fetch_async

__all__ = ["async_sleeps", "blocking", "http", "local_server"]

Variant = Callable[[], Metrics]
_SCRIPT = Path(__file__).resolve().parent.parent / "workloads.py"
_THREADS_AND_GREENLETS = ("unirun-thread", "tpe", "unirun-gevent", "gevent-pool")


def blocking(p: Params) -> dict[str, Variant]:
    """``n`` x ``time.sleep(seconds)`` on ``concurrency`` threads or greenlets."""
    n, seconds = int(p.get("n", 2000)), p.get("seconds", 0.01)
    concurrency = int(p.get("concurrency", 100))
    args = [seconds] * n

    def variant(name: str) -> Variant:
        return lambda: RUNNERS[name](block, args, args, workers=concurrency)

    return {name: variant(name) for name in _THREADS_AND_GREENLETS}


def async_sleeps(p: Params) -> dict[str, Variant]:
    """``n`` x ``await asyncio.sleep(seconds)``, all at once; peak memory too."""
    n, seconds = int(p.get("n", 10_000)), p.get("seconds", 0.01)
    trace = bool(p.get("tracemalloc", 0))
    args = [seconds] * n

    def variant(name: str) -> Variant:
        # one batch only: a second would start from the first one's memory peak
        def run() -> Metrics:
            metrics: Metrics = {}
            # unirun needs to be told: its default bounds the coroutines running at once
            workers = n if name == "unirun-asyncio" else None
            # libraries are imported before the measurement, as asyncio is for gather:
            # the figure is the memory of the batch (about 2 KiB per task), not of imports
            if name == "unirun-asyncio":
                require("asyncio")
            elif name == "anyio-tg":
                import anyio  # noqa: F401
            with memory(metrics, trace=trace):
                metrics.update(ASYNC_RUNNERS[name](asleep, args, args, warm=False, workers=workers))
            return metrics

        return run

    return {name: variant(name) for name in ASYNC_RUNNERS}


@contextmanager
def local_server(latency: float) -> Iterator[int]:
    """Start the loopback server in its own process; yield its port."""
    proc = subprocess.Popen(
        [sys.executable, str(_SCRIPT), "serve", "-", f"latency={latency}"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        for _ in range(100):  # wait until it answers
            try:
                fetch(port)
                break
            except OSError:
                time.sleep(0.05)
        yield port
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def http(p: Params) -> dict[str, Variant]:
    """``n`` GETs, ``concurrency`` at once, to a 127.0.0.1 server with ``latency`` s."""
    n, concurrency = int(p.get("n", 2000)), int(p.get("concurrency", 100))
    latency = p.get("latency", 0.02)
    expected = [2] * n  # the body is b"ok"

    def variant(name: str) -> Variant:
        def run() -> Metrics:
            with local_server(latency) as port:
                ports = [port] * n
                if name in ASYNC_RUNNERS:
                    return ASYNC_RUNNERS[name](fetch_async, ports, expected, workers=concurrency)
                return RUNNERS[name](fetch, ports, expected, workers=concurrency)

        return run

    return {name: variant(name) for name in (*_THREADS_AND_GREENLETS, "unirun-asyncio", "gather")}
