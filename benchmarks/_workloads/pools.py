"""One batch of calls on each pool: unirun's modes and the raw tools they compete with.

Every runner is ``runner(fn, args, expected, *, warm=True, workers=None) -> Metrics``: it
times a fresh pool's start plus ``[fn(a) for a in args]`` (cold, ``wall``), then, with
``warm``, the same batch again on the same pool (``warm``); results are checked against
``expected`` outside the clock. ``workers=None`` leaves each pool at its default, as a
user would (as many processes as CPUs; 100 greenlets, GeventBackend's default too).
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any, Protocol

from .measure import Metrics, check, cold_warm, optional, require

__all__ = ["ASYNC_RUNNERS", "RUNNERS", "Runner"]

_CPUS = os.cpu_count() or 1


class Runner(Protocol):
    """Times one pool on one batch."""

    def __call__(
        self,
        fn: Callable[..., Any],
        args: Sequence[Any],
        expected: list[Any],
        *,
        warm: bool = True,
        workers: int | None = None,
    ) -> Metrics: ...


def _none() -> None:
    return None


def _ignore(_: object) -> None:
    return None


def _verifier(expected: list[Any]) -> Callable[[Any], None]:
    return lambda got: check(list(got), expected)


def unirun_mode(mode: str) -> Runner:
    """``unirun.map(fn, args, mode=mode)``; the second call reuses the warm backend."""

    def run(
        fn: Callable[..., Any],
        args: Sequence[Any],
        expected: list[Any],
        *,
        warm: bool = True,
        workers: int | None = None,
    ) -> Metrics:
        require(mode)
        import unirun

        options = {} if workers is None else {"max_workers": workers}
        return cold_warm(
            _none,
            lambda _: unirun.map(fn, args, mode=mode, **options),
            _ignore,
            _verifier(expected),
            warm=warm,
        )

    return run


def loop(
    fn: Callable[..., Any],
    args: Sequence[Any],
    expected: list[Any],
    *,
    warm: bool = True,
    workers: int | None = None,
) -> Metrics:
    """A plain list comprehension: the floor for serial work."""
    return cold_warm(
        _none, lambda _: [fn(a) for a in args], _ignore, _verifier(expected), warm=warm
    )


def tpe(
    fn: Callable[..., Any],
    args: Sequence[Any],
    expected: list[Any],
    *,
    warm: bool = True,
    workers: int | None = None,
) -> Metrics:
    """``ThreadPoolExecutor(workers).map``."""
    return cold_warm(
        lambda: ThreadPoolExecutor(workers),
        lambda ex: list(ex.map(fn, args)),
        lambda ex: ex.shutdown(),
        _verifier(expected),
        warm=warm,
    )


def ppe(chunked: bool) -> Runner:
    """``ProcessPoolExecutor().map``, chunksize 1 or ``multiprocessing.Pool``'s heuristic."""

    def run(
        fn: Callable[..., Any],
        args: Sequence[Any],
        expected: list[Any],
        *,
        warm: bool = True,
        workers: int | None = None,
    ) -> Metrics:
        size = max(1, math.ceil(len(args) / (4 * (workers or _CPUS)))) if chunked else 1
        return cold_warm(
            lambda: ProcessPoolExecutor(workers),
            lambda ex: list(ex.map(fn, args, chunksize=size)),
            lambda ex: ex.shutdown(),
            _verifier(expected),
            warm=warm,
        )

    return run


def mp_pool(
    fn: Callable[..., Any],
    args: Sequence[Any],
    expected: list[Any],
    *,
    warm: bool = True,
    workers: int | None = None,
) -> Metrics:
    """``multiprocessing.Pool().map`` (its own chunking)."""

    def stop(pool: Any) -> None:
        pool.close()
        pool.join()

    return cold_warm(
        lambda: multiprocessing.Pool(workers),
        lambda pool: pool.map(fn, args),
        stop,
        _verifier(expected),
        warm=warm,
    )


def joblib_loky(
    fn: Callable[..., Any],
    args: Sequence[Any],
    expected: list[Any],
    *,
    warm: bool = True,
    workers: int | None = None,
) -> Metrics:
    """``joblib.Parallel(n_jobs=-1)`` on loky, automatic batching."""
    joblib = optional("joblib")
    return cold_warm(
        lambda: joblib.Parallel(n_jobs=workers or -1),
        lambda par: par(joblib.delayed(fn)(a) for a in args),
        _ignore,
        _verifier(expected),
        warm=warm,
    )


def mpire_pool(
    fn: Callable[..., Any],
    args: Sequence[Any],
    expected: list[Any],
    *,
    warm: bool = True,
    workers: int | None = None,
) -> Metrics:
    """``mpire.WorkerPool(keep_alive=True).map`` (its own chunking)."""
    mpire = optional("mpire")
    return cold_warm(
        lambda: mpire.WorkerPool(n_jobs=workers, keep_alive=True),
        lambda pool: pool.map(fn, args),
        lambda pool: pool.terminate(),
        _verifier(expected),
        warm=warm,
    )


def gevent_pool(
    fn: Callable[..., Any],
    args: Sequence[Any],
    expected: list[Any],
    *,
    warm: bool = True,
    workers: int | None = None,
) -> Metrics:
    """``gevent.pool.Pool(workers or 100).map``."""
    pool_mod = optional("gevent.pool")
    return cold_warm(
        lambda: pool_mod.Pool(workers or 100),
        lambda pool: pool.map(fn, args),
        lambda pool: pool.kill(),
        _verifier(expected),
        warm=warm,
    )


def gather(
    fn: Callable[..., Any],
    args: Sequence[Any],
    expected: list[Any],
    *,
    warm: bool = True,
    workers: int | None = None,
) -> Metrics:
    """``asyncio.run`` of ``asyncio.gather`` over every call (a semaphore bounds it)."""

    async def main() -> list[Any]:
        if workers is None:
            return await asyncio.gather(*(fn(a) for a in args))
        sem = asyncio.Semaphore(workers)

        async def one(a: Any) -> Any:
            async with sem:
                return await fn(a)

        return await asyncio.gather(*(one(a) for a in args))

    return cold_warm(_none, lambda _: asyncio.run(main()), _ignore, _verifier(expected), warm=warm)


def anyio_tg(
    fn: Callable[..., Any],
    args: Sequence[Any],
    expected: list[Any],
    *,
    warm: bool = True,
    workers: int | None = None,
) -> Metrics:
    """``anyio.run`` of a task group that starts one task per call (a limiter bounds it)."""
    import anyio

    async def main() -> list[Any]:
        results: list[Any] = [None] * len(args)
        limiter = anyio.CapacityLimiter(workers) if workers is not None else None

        async def one(i: int, a: Any) -> None:
            if limiter is None:
                results[i] = await fn(a)
            else:
                async with limiter:
                    results[i] = await fn(a)

        async with anyio.create_task_group() as tg:
            for i, a in enumerate(args):
                tg.start_soon(one, i, a)
        return results

    return cold_warm(_none, lambda _: anyio.run(main), _ignore, _verifier(expected), warm=warm)


#: Runners for a sync function.
RUNNERS: dict[str, Runner] = {
    "loop": loop,
    "unirun-serial": unirun_mode("serial"),
    "unirun-thread": unirun_mode("thread"),
    "tpe": tpe,
    "unirun-process": unirun_mode("process"),
    "ppe-1": ppe(chunked=False),
    "ppe-chunked": ppe(chunked=True),
    "mp-pool": mp_pool,
    "joblib": joblib_loky,
    "mpire": mpire_pool,
    "unirun-gevent": unirun_mode("gevent"),
    "gevent-pool": gevent_pool,
    "unirun-dask": unirun_mode("dask"),
}

#: Runners for an async function.
ASYNC_RUNNERS: dict[str, Runner] = {
    "unirun-asyncio": unirun_mode("asyncio"),
    "gather": gather,
    "anyio-tg": anyio_tg,
}
