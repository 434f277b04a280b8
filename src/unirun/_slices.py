"""``map`` without a future per call: slices (process, dask, serial) and lanes (asyncio,
gevent, thread).

The engine's general path makes one ``Call`` per task and measures its way to a chunk
size, which costs a few microseconds per task in the caller's thread. When ``map`` gets a
sized input of a sync function for a backend that batches (``supports_chunking``), and no
per-task option needs per-task bookkeeping (``task_timeout``, ``retries``, ``progress``),
the input is instead cut into slices of argument tuples up front, as
``multiprocessing.Pool.map`` does (``len / (4 * workers)``), and each slice is one engine
task whose worker runs the function over the whole slice. Per task, only C-level list
work remains in the caller.

On ``SerialBackend`` the same cut removes the engine's per-task bookkeeping from the
caller's loop: each slice runs in the caller's thread, each task still in a context of its
own, stopping at the first failure unless ``return_exceptions``; only without a whole-call
``timeout``, which serial checks between tasks.

Over one iterable the slices carry the items themselves (:class:`Singles`: no argument
tuple per item), and a slice holds about ``_SLICE_BYTES`` of arguments at most.

*Lanes* serve the backends that run many calls at once in one process: the whole call is
one job of ``max_workers`` lanes that each take the next argument in turn, with no future,
task or greenlet per call. The asyncio and gevent backends run the job themselves
(``BackendBase._lanes``); on a thread pool each lane is a task of the pool
(``lanes_in_pool``). As in ``ThreadPoolExecutor``, the calls of one lane share its
context.

A slice whose worker died, or that could not be pickled, is re-run task by task on the
general path, so that only the culprit gets ``WorkerCrashedError`` or
``TaskSerializationError`` (its siblings may then run twice, as with any re-run after a
crash).
"""

from __future__ import annotations

import builtins
import contextvars
import itertools
import math
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import BrokenExecutor
from typing import TYPE_CHECKING, Any, Final, TypeGuard, overload

from ._backends._base import BackendBase
from ._engine import Engine, Router, add_note
from ._errors import TaskSerializationError
from ._remote import attach_remote_traceback, format_remote
from ._tasks import Call, is_async_callable

if TYPE_CHECKING:
    from ._run import RunOptions

__all__ = ["Singles", "map_in_slices", "slices_apply"]

#: The most tasks one slice holds: bounds the memory of a slice and its results.
_SLICE_MAX: Final = 8192
#: About the most bytes of arguments one slice holds, judged by the first task's.
_SLICE_BYTES: Final = 1 << 20


def _item_bytes(args: tuple[Any, ...]) -> int:
    """A cheap guess of what one task's arguments weigh pickled (their shallow sizes)."""
    return sum(sys.getsizeof(arg) for arg in args)


class Singles(Sequence[tuple[Any, ...]]):
    """The argument tuples of ``map`` over one iterable, made only when asked for: the
    process and dask slices send the items themselves (no tuple per item to build,
    pickle and unpack)."""

    __slots__ = ("items",)

    def __init__(self, items: list[Any]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    @overload
    def __getitem__(self, index: int) -> tuple[Any, ...]: ...
    @overload
    def __getitem__(self, index: slice) -> list[tuple[Any, ...]]: ...
    def __getitem__(self, index: int | slice) -> tuple[Any, ...] | list[tuple[Any, ...]]:
        if isinstance(index, slice):
            return [(item,) for item in self.items[index]]
        return (self.items[index],)

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return zip(self.items)


def _run_slice(
    fn: Callable[..., Any], args: list[Any], star: bool = True
) -> tuple[list[Any], list[tuple[int, BaseException, str]]]:
    """Run ``fn`` over a slice in a worker: results, and the failures by position.

    ``args`` holds argument tuples (``star``) or, for ``map`` over one iterable, the items
    themselves. ``list.extend`` drives ``starmap``/``map`` at C speed and keeps what it
    appended before a call raised; the same iterator then goes on after the failed call.
    """
    results: list[Any] = []
    failures: list[tuple[int, BaseException, str]] = []
    calls = itertools.starmap(fn, args) if star else builtins.map(fn, args)
    while True:
        try:
            results.extend(calls)
        except BaseException as exc:  # SystemExit in one task is that task's outcome
            failures.append((len(results), exc, format_remote(exc)))
            results.append(None)
        else:
            return results, failures


def _run_slice_here(
    fn: Callable[..., Any], arg_tuples: list[tuple[Any, ...]], fail_fast: bool
) -> tuple[list[Any], list[tuple[int, BaseException, str]]]:
    """Run ``fn`` over a slice in the caller's thread (serial): Ctrl-C is not an outcome,
    and with ``fail_fast`` no task starts after a failure."""
    results: list[Any] = []
    failures: list[tuple[int, BaseException, str]] = []
    append = results.append
    copy_context = contextvars.copy_context
    for position, args in enumerate(arg_tuples):
        try:
            append(copy_context().run(fn, *args))
        except KeyboardInterrupt:
            raise
        except BaseException as exc:
            append(None)
            failures.append((position, exc, ""))
            if fail_fast:
                break
    return results, failures


def slices_apply(router: Router, call: Call, opts: RunOptions) -> BackendBase | None:
    """The backend to slice ``map`` for, or None when the general path must be taken."""
    if (
        router.mode == "auto"  # auto decides per task; it may not batch at all
        or opts.task_timeout is not None
        or opts.retries
        or opts.progress
        or opts.chunksize == 1
    ):
        return None
    executor, _ = router.route(call)
    if isinstance(executor, BackendBase) and executor._lanes(call.is_async) is not None:
        return executor
    if call.is_async:
        return None
    if isinstance(executor, BackendBase) and (executor.supports_chunking or executor.lanes_in_pool):
        return executor
    if _in_caller_thread(executor) and opts.timeout is None:
        return executor
    return None


def _in_caller_thread(executor: object) -> TypeGuard[BackendBase]:
    from ._backends._serial import SerialBackend

    return isinstance(executor, SerialBackend)


def map_in_slices(
    router: Router,
    executor: BackendBase,
    fn: Callable[..., Any],
    arg_tuples: Sequence[tuple[Any, ...]],
    opts: RunOptions,
    general: Callable[[list[Call], RunOptions], list[Any]],
) -> list[Any]:
    """Run ``fn(*args)`` for each tuple in slices; ``general`` re-runs a failed slice."""
    if executor.lanes_in_pool:
        return _map_in_pool_lanes(router, executor, fn, arg_tuples, opts)
    n = len(arg_tuples)
    if isinstance(opts.chunksize, int):
        size = opts.chunksize
    else:
        size = min(_SLICE_MAX, max(1, math.ceil(n / (4 * executor.max_workers))))
        # big items (a 4 MiB bytes each): a slice that would pickle more than _SLICE_BYTES
        # is cut smaller, so workers start early and one pickle stays small
        size = max(1, min(size, _SLICE_BYTES // max(1, _item_bytes(arg_tuples[0]))))
    is_async = is_async_callable(fn)
    lanes = executor._lanes(is_async)
    if lanes is not None:  # the whole call is one job
        size = n
        job = (fn, arg_tuples, executor.max_workers, not opts.return_exceptions)
        slices = [Call(lanes, job, index=0, is_async=is_async)]
    elif _in_caller_thread(executor):
        fail_fast = not opts.return_exceptions
        slices = [
            Call(_run_slice_here, (fn, arg_tuples[start : start + size], fail_fast), index=start)
            for start in range(0, n, size)
        ]
    elif isinstance(arg_tuples, Singles):  # one iterable: send the items themselves
        items = arg_tuples.items
        slices = [
            Call(_run_slice, (fn, items[start : start + size], False), index=start)
            for start in range(0, n, size)
        ]
    else:
        slices = [
            Call(_run_slice, (fn, arg_tuples[start : start + size]), index=start)
            for start in range(0, n, size)
        ]
    engine = Engine(
        iter(slices),
        router,
        total=len(slices),
        timeout=opts.timeout,
        max_in_flight=opts.max_in_flight,
        chunksize=1,
    )
    mode = router.mode
    results: list[Any] = [None] * n
    outcomes = engine.outcomes()
    try:
        for start, ok, value in outcomes:
            stop = min(start + size, n)
            if not ok:
                if not isinstance(value, (BrokenExecutor, TaskSerializationError)):
                    raise value
                calls = [Call(fn, arg_tuples[i], index=i) for i in range(start, stop)]
                results[start:stop] = general(calls, opts._replace(chunksize=1))
                continue
            values, failures = value
            results[start:stop] = values
            for position, exc, tb in failures:
                attach_remote_traceback(exc, tb)
                add_note(exc, f"unirun: task {start + position} failed on mode {mode!r}")
                if not opts.return_exceptions:
                    raise exc
                results[start + position] = exc
    finally:
        outcomes.close()
    return results


# -- lanes in a pool of threads --------------------------------------------------------------


class _LaneFailed(Exception):
    """A lane saw a failure under fail-fast: the engine stops the others."""


class _PoolLanes:
    """What the lanes of one ``map`` on a thread pool share."""

    __slots__ = ("arg_tuples", "fail_fast", "failures", "fn", "positions", "results", "stop")

    def __init__(
        self, fn: Callable[..., Any], arg_tuples: Sequence[tuple[Any, ...]], fail_fast: bool
    ) -> None:
        self.fn = fn
        self.arg_tuples = arg_tuples
        self.fail_fast = fail_fast
        self.positions = iter(range(len(arg_tuples)))  # next() is atomic under the GIL
        self.results: list[Any] = [None] * len(arg_tuples)
        self.failures: list[tuple[int, BaseException]] = []
        self.stop = False


def _pool_lane(lanes: _PoolLanes) -> None:
    """One lane: call ``fn`` for the next position until none is left (or the map stops)."""
    fn, arg_tuples, results = lanes.fn, lanes.arg_tuples, lanes.results
    for i in lanes.positions:
        if lanes.stop:
            return
        try:
            results[i] = fn(*arg_tuples[i])
        except BaseException as exc:  # KeyboardInterrupt too: the task's own outcome
            lanes.failures.append((i, exc))
            if lanes.fail_fast:
                lanes.stop = True
                raise _LaneFailed from None


def _map_in_pool_lanes(
    router: Router,
    executor: BackendBase,
    fn: Callable[..., Any],
    arg_tuples: Sequence[tuple[Any, ...]],
    opts: RunOptions,
) -> list[Any]:
    """``map`` on a thread pool as ``max_workers`` lane tasks sharing one input: one future
    per lane instead of one per call (as in a thread pool, the calls of one lane share
    its context). Fail-fast and a timeout stop the lanes from taking more input; a call
    already running in a lane finishes in the background, as a thread task would."""
    lanes = _PoolLanes(fn, arg_tuples, fail_fast=not opts.return_exceptions)
    count = min(executor.max_workers, len(arg_tuples))
    engine = Engine(
        iter([Call(_pool_lane, (lanes,), index=k) for k in range(count)]),
        router,
        total=count,
        timeout=opts.timeout,
        chunksize=1,
    )
    outcomes = engine.outcomes()
    try:
        for _, ok, value in outcomes:
            if not ok and not isinstance(value, _LaneFailed):
                raise value  # the engine's own trouble (a broken pool)
            if not ok:
                break
    finally:
        lanes.stop = True
        outcomes.close()
    results = lanes.results
    for i, exc in lanes.failures:
        add_note(exc, f"unirun: task {i} failed on mode {router.mode!r}")
        if not opts.return_exceptions:
            raise exc
        results[i] = exc
    return results
