"""The async front door: ``arun_all`` and ``amap`` for callers inside asyncio or trio.

Data flow::

    tasks --calls_from--> Call --router.route--> (executor, mode)
        async call routed to an AsyncioBackend
            --> a task in the *caller's* loop (an anyio task group); at most the backend's
                max_workers at once, the input pulled only when a slot frees
        any other call (sync, or async routed to processes)
            --> the sync Engine, in a helper thread; each outcome is posted back
    every outcome --> _Batch.deliver, on the caller's loop: results, progress, fail-fast

Structured: when the call returns or raises (first error, timeout, the caller cancelled),
nothing it started still runs. Coroutines are cancelled inside the task group; the engine
thread is told to stop (it interrupts what its executors run) and is waited for, shielded,
before the call ends. Options mean what they mean for ``run_all``.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import BrokenExecutor
from typing import TYPE_CHECKING, Any

import anyio

from unirun._backends._asyncio import AsyncioBackend
from unirun._engine import Router, _Cancelled, add_note, calls_from
from unirun._errors import TaskTimeoutError
from unirun._progress import make_progress
from unirun._tasks import Call, close_coroutines

if TYPE_CHECKING:
    from unirun._run import RunOptions

__all__ = ["acollect"]

logger = logging.getLogger("unirun")


def _poster() -> Callable[..., object]:
    """A thread-safe ``call_soon`` into the running loop (asyncio or trio)."""
    try:
        return asyncio.get_running_loop().call_soon_threadsafe
    except RuntimeError:  # not asyncio: anyio supports only trio besides
        import trio

        return trio.lowlevel.current_trio_token().run_sync_soon


class _Batch:
    """Outcomes of one call, gathered on the caller's loop."""

    def __init__(
        self,
        opts: RunOptions,
        progress: Callable[[int, int | None], object] | None,
        total: int | None,
    ) -> None:
        self.opts = opts
        self.progress = progress
        self.total = total
        self.results: dict[int, Any] = {}
        self.pulled = 0
        self.error: BaseException | None = None
        self.scope: anyio.CancelScope | None = None

    def deliver(self, index: int, ok: bool, value: Any) -> None:
        if self.error is not None:
            return  # stopping: later outcomes are not wanted
        self.results[index] = value
        if self.progress is not None:
            try:
                self.progress(len(self.results), self.total)
            except Exception:
                logger.exception("unirun: the progress callback raised; it is ignored")
        if not ok and not self.opts.return_exceptions:
            self.fail(value)

    def fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        if self.scope is not None:
            self.scope.cancel()


async def acollect(router: Router, tasks: Any, opts: RunOptions) -> list[Any]:
    """Run ``tasks`` for ``arun_all``; see the module docstring."""
    source, total, calls = calls_from(tasks, opts.hint)
    if calls is not None:
        if not calls:
            return []
        router.check(calls)
    progress, close_progress = make_progress(opts.progress, total)
    batch = _Batch(opts, progress, total)
    try:
        with anyio.move_on_after(opts.timeout) as deadline:
            async with anyio.create_task_group() as tg:
                batch.scope = tg.cancel_scope
                if calls is not None:
                    await _start_sized(tg, router, calls, opts, batch)
                else:
                    await _start_lazy(tg, router, source, opts, batch)
    finally:
        close_progress()
        if calls is not None:
            close_coroutines([c for c in calls if c.started_at is None])
        else:
            close = getattr(source, "close", None)
            if close is not None:
                close()
    if batch.error is not None:
        raise batch.error
    if deadline.cancelled_caught:
        unfinished = (total if total is not None else batch.pulled) - len(batch.results)
        raise TimeoutError(
            f"run_all() timed out after {opts.timeout}s with {unfinished} "
            f"task{'s' if unfinished != 1 else ''} unfinished"
        )
    return [batch.results[i] for i in range(len(batch.results))]


def _native(router: Router, call: Call) -> tuple[AsyncioBackend, str] | None:
    """The AsyncioBackend an async call is routed to (it then runs in the caller's loop)."""
    if not call.is_async:
        return None
    executor, mode = router.route(call)
    if isinstance(executor, AsyncioBackend):
        return executor, mode
    return None


async def _start_sized(
    tg: anyio.abc.TaskGroup, router: Router, calls: list[Call], opts: RunOptions, batch: _Batch
) -> None:
    batch.pulled = len(calls)
    native: list[tuple[Call, str]] = []
    other: list[Call] = []
    limit = 0
    for call in calls:
        found = _native(router, call)
        if found is None:
            other.append(call)
        else:
            native.append((call, found[1]))
            limit = limit or found[0].max_workers
    if other:
        tg.start_soon(_run_engine, router, iter(other), len(other), opts, batch)
    if native:
        slots = anyio.Semaphore(_window(limit, opts))
        for call, mode in native:
            await _acquire(slots)
            tg.start_soon(_run_native, call, mode, opts, batch, slots)


async def _start_lazy(
    tg: anyio.abc.TaskGroup,
    router: Router,
    source: Iterator[Call],
    opts: RunOptions,
    batch: _Batch,
) -> None:
    first = next(source, None)
    if first is None:
        return
    found = _native(router, first)
    if found is None:  # a stream of sync tasks: the engine consumes it lazily
        tg.start_soon(_run_engine, router, itertools.chain([first], source), None, opts, batch)
        return
    slots = anyio.Semaphore(_window(found[0].max_workers, opts))
    for call in itertools.chain([first], source):
        batch.pulled += 1
        await _acquire(slots)
        found = _native(router, call)
        if found is not None:
            tg.start_soon(_run_native, call, found[1], opts, batch, slots)
        else:  # a sync task in an async stream: a one-call engine, in this slot
            executor, mode = router.route(call)
            tg.start_soon(_run_engine, Router(executor, mode), iter([call]), 1, opts, batch, slots)


def _window(limit: int, opts: RunOptions) -> int:
    return min(limit, opts.max_in_flight) if opts.max_in_flight else limit


async def _acquire(slots: anyio.Semaphore) -> None:
    try:
        slots.acquire_nowait()  # no checkpoint on the fast path
    except anyio.WouldBlock:
        await slots.acquire()


async def _run_native(
    call: Call, mode: str, opts: RunOptions, batch: _Batch, slots: anyio.Semaphore
) -> None:
    try:
        ok, value = await _attempts(call, mode, opts)
    finally:
        slots.release()
    batch.deliver(call.index if call.index is not None else -1, ok, value)


async def _attempts(call: Call, mode: str, opts: RunOptions) -> tuple[bool, Any]:
    cancelled = anyio.get_cancelled_exc_class()
    limit = opts.task_timeout
    attempt = 0
    while True:
        call.started_at = time.monotonic()
        call.ended_at = None
        try:
            if limit is None:
                return True, await _call_async(call)
            with anyio.move_on_after(limit) as scope:
                return True, await _call_async(call)
            assert scope.cancelled_caught
            error = TaskTimeoutError(
                f"{call.describe()} ran longer than task_timeout={limit}s on mode {mode!r} "
                "and was cancelled",
                action="cancelled",
                timeout=limit,
                task_index=call.index,
            )
            add_note(error, f"unirun: {call.describe()} failed on mode {mode!r}")
            return False, error
        except cancelled:
            raise
        except BaseException as exc:
            if (
                attempt < opts.retries
                and isinstance(exc, Exception)
                and not isinstance(exc, (TaskTimeoutError, BrokenExecutor))
            ):
                attempt += 1
                continue
            add_note(exc, f"unirun: {call.describe()} failed on mode {mode!r}")
            return False, exc
        finally:
            call.ended_at = time.monotonic()


async def _call_async(call: Call) -> Any:
    value = call.fn(*call.args, **call.kwargs)
    if hasattr(value, "__await__"):
        value = await value
    return value


async def _run_engine(
    router: Router,
    source: Iterator[Call],
    total: int | None,
    opts: RunOptions,
    batch: _Batch,
    slots: anyio.Semaphore | None = None,
) -> None:
    """Run calls on the sync engine in a helper thread; post each outcome to this loop."""
    post = _poster()
    finished = anyio.Event()
    failure: list[BaseException] = []
    from unirun._run import make_engine  # loaded already: _run imports this module lazily

    engine = make_engine(router, source, total, opts, None)
    fail_fast = not opts.return_exceptions

    def work() -> None:
        outcomes = engine.outcomes()
        try:
            for index, ok, value in outcomes:
                post(batch.deliver, index, ok, value)
                if fail_fast and not ok:
                    break  # closing the generator stops the rest, softly, as run_all does
        except _Cancelled:
            pass
        except BaseException as exc:  # the engine's TimeoutError, a bad task in a stream
            failure.append(exc)
        finally:
            outcomes.close()
            post(finished.set)

    # the caller's context (``using()``, ...) must reach the tasks the engine starts
    context = contextvars.copy_context()
    thread = threading.Thread(
        target=context.run, args=(work,), name="unirun-arun-engine", daemon=True
    )
    thread.start()
    try:
        await finished.wait()
    finally:
        if not finished.is_set():  # cancelled: stop the engine and wait for it
            engine.cancel()
            with anyio.CancelScope(shield=True):
                await finished.wait()
        thread.join()
        if slots is not None:
            slots.release()
    if failure:
        batch.fail(failure[0])
