"""The engine: one loop that runs a batch of calls on any ``Executor``.

Data flow::

    user tasks --as_call--> Call --Router.route--> (executor, mode)
        --submit (one call, or a chunk of calls)--> Future --done callback--> SimpleQueue
        --Engine.outcomes()--> (index, ok, value) --> run_all's list / imap's iterator

The engine keeps at most ``window`` tasks pulled from the input and not yet delivered, so a
lazy input of any length streams in constant memory. It waits on a queue fed by the
futures' done callbacks (one put per task, no per-wait waiter lists). It enforces the
whole-call ``timeout`` and the per-task ``task_timeout``, resubmits for ``retries``, and
when it stops early (first failure, timeout, Ctrl-C, ``imap`` closed) it cancels what has
not started and asks each backend to stop what has (``BackendBase._interrupt``).
"""

from __future__ import annotations

import logging
import math
import queue
import time
from collections import deque
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import BrokenExecutor, CancelledError, Future
from typing import Any, Final

from ._backends._base import BackendBase
from ._errors import TaskSerializationError, TaskTimeoutError, TimeoutAction, is_worker_crash
from ._executor import Executor
from ._remote import attach_remote_traceback, format_remote
from ._tasks import Call, Hint, as_call, close_coroutines, invoke

__all__ = ["Engine", "Router", "add_note"]

logger = logging.getLogger("unirun")

_WAKE: Final = object()
#: How often (seconds) running tasks are checked against ``task_timeout`` at most.
_TASK_CHECK: Final = 0.05
#: What an adaptive chunk aims to take in a worker, in seconds.
_CHUNK_TARGET: Final = 0.02
_CHUNK_MAX: Final = 4096


def add_note(exc: BaseException, note: str) -> None:
    """PEP 678 ``add_note``; sets ``__notes__`` directly on Python 3.10."""
    if hasattr(exc, "add_note"):
        exc.add_note(note)
    else:  # Python 3.10
        notes = getattr(exc, "__notes__", None)
        if not isinstance(notes, list):
            notes = []
            try:
                exc.__notes__ = notes  # type: ignore[attr-defined]
            except AttributeError:
                return
        notes.append(note)


class Router:
    """Decides which executor runs a call. The base routes everything to one executor."""

    def __init__(self, executor: Executor | None, mode: str) -> None:
        self._executor = executor
        self.mode = mode

    def route(self, call: Call) -> tuple[Executor, str]:
        """The executor for ``call`` and the mode name to report."""
        assert self._executor is not None
        return self._executor, self.mode

    def check(self, calls: list[Call]) -> None:
        """Reject calls the chosen executor cannot take, before anything runs."""
        if isinstance(self._executor, BackendBase):
            self._executor._check_calls(calls)

    def default_window(self) -> int:
        """How many tasks to keep in flight when ``max_in_flight`` is not given."""
        ex = self._executor
        if isinstance(ex, BackendBase):
            return ex._default_window()
        workers = getattr(ex, "_max_workers", None)
        return 2 * workers if isinstance(workers, int) and workers > 0 else 32


def _run_chunk(
    calls: list[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]],
) -> tuple[list[tuple[bool, Any, str | None]], float]:
    """Run a chunk of calls in one go (in a worker); capture each outcome."""
    start = time.perf_counter()
    out: list[tuple[bool, Any, str | None]] = []
    for fn, args, kwargs in calls:
        try:
            out.append((True, invoke(fn, args, kwargs), None))
        except BaseException as exc:  # SystemExit in one task is that task's outcome
            out.append((False, exc, format_remote(exc)))
    return out, time.perf_counter() - start


class _Flight:
    """One submitted unit: a call, or a chunk of calls sent as one."""

    __slots__ = ("attempt", "calls", "executor", "future", "mode", "submitted_at")

    def __init__(self, calls: list[Call], executor: Executor, mode: str, attempt: int) -> None:
        self.calls = calls
        self.executor = executor
        self.mode = mode
        self.attempt = attempt
        self.submitted_at = time.monotonic()
        self.future: Future[Any] | None = None


class _Cancelled(Exception):
    """The awaiting caller was cancelled (``arun_all``)."""


class Engine:
    """Runs calls from ``source`` through ``router``; see the module docstring."""

    def __init__(
        self,
        source: Iterator[Call],
        router: Router,
        *,
        total: int | None,
        timeout: float | None = None,
        task_timeout: float | None = None,
        retries: int = 0,
        retry_crashes: bool = False,
        max_in_flight: int | None = None,
        chunksize: int | str | None = None,
        progress: Callable[[int, int | None], object] | None = None,
    ) -> None:
        self._source = source
        self._router = router
        self._total = total
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._timeout = timeout
        self._task_timeout = task_timeout
        self._retries = retries
        self._retry_crashes = retry_crashes
        self._window = max_in_flight or 0  # resolved on the first route
        self._fixed_window = max_in_flight is not None
        self._chunksize = chunksize if task_timeout is None else 1
        self._progress = progress
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._flights: dict[Future[Any], _Flight] = {}
        self._ready: deque[tuple[int, bool, Any]] = deque()
        self._again: deque[tuple[Call, int]] = deque()  # calls to resubmit, with attempt
        self._buffers: dict[int, tuple[Executor, str, list[Call]]] = {}
        self._chunk_rate: dict[int, float] = {}  # executor id -> seconds per task
        self._sizes: dict[int, int] = {}  # executor id -> chunk size, until the rate changes
        self._exhausted = False
        self._outstanding = 0  # pulled from the source and not yet delivered
        self.held = 0  # delivered to a consumer that has not released them yet (ordered imap)
        self._done = 0
        self._next_task_check = 0.0
        self._cancelled = False

    # -- the consumer's side -----------------------------------------------------------

    def outcomes(self) -> Generator[tuple[int, bool, Any], None, None]:
        """Yield ``(index, ok, value)`` as tasks finish. Close it to stop the rest."""
        hard = True
        try:
            while True:
                # Hand over what is done before pulling more input: pulling may block
                # (a pipe that is slow to fill) and must not hold finished results back.
                while self._ready:
                    item = self._ready.popleft()
                    self._outstanding -= 1
                    self._report_progress()
                    if not item[1]:
                        hard = False  # fail-fast: stop what is cheap to stop
                    yield item
                    hard = True
                self._fill()
                if self._ready:
                    continue  # some calls finished while they were submitted (serial)
                if not self._flights and not self._buffers and self._exhausted:
                    if not self._again:
                        return
                    continue
                self._wait_one()
        finally:
            self._abort(hard)

    def cancel(self) -> None:
        """Stop the run from another thread: the consumer sees ``_Cancelled``."""
        self._cancelled = True
        self._queue.put(_WAKE)

    # -- pulling and submitting ----------------------------------------------------------

    def _fill(self) -> None:
        while self._again:  # already counted in the window
            call, attempt = self._again.popleft()
            executor, mode = self._router.route(call)
            self._submit([call], executor, mode, attempt)
        while not self._exhausted and self._room():
            self._check_deadline()
            try:
                call = next(self._source)
            except StopIteration:
                self._exhausted = True
                break
            self._outstanding += 1
            executor, mode = self._router.route(call)
            if not self._window:
                self._window = self._router.default_window()
            size = self._chunk_size(executor)
            if size > 1:
                key = id(executor)
                buffered = self._buffers.setdefault(key, (executor, mode, []))[2]
                buffered.append(call)
                if len(buffered) >= size:
                    del self._buffers[key]
                    self._submit(buffered, executor, mode, 0)
            else:
                self._submit([call], executor, mode, 0)
        if self._buffers and (self._exhausted or not self._room() or not self._flights):
            for key, (executor, mode, calls) in list(self._buffers.items()):
                # A full window with every worker still busy: wait for the chunk to fill
                # up instead of sending it short (one call at a time, as results drain).
                busy = isinstance(executor, BackendBase) and len(self._flights) >= (
                    executor.max_workers
                )
                if self._exhausted or not self._flights or not busy:
                    del self._buffers[key]
                    self._submit(calls, executor, mode, 0)

    def _room(self) -> bool:
        return not self._window or self._outstanding + self.held < self._window

    def _chunk_size(self, executor: Executor) -> int:
        size = self._sizes.get(id(executor))
        if size is None:
            size = self._sizes[id(executor)] = self._new_chunk_size(executor)
        return size

    def _new_chunk_size(self, executor: Executor) -> int:
        """Worked out again only when a new measurement comes in (hot path otherwise)."""
        if self._chunksize is None or self._chunksize == 1:
            return 1
        if not (isinstance(executor, BackendBase) and executor.supports_chunking):
            return 1
        if isinstance(self._chunksize, int):
            return self._chunksize
        workers = executor.max_workers
        cap = _CHUNK_MAX
        if self._total is not None:
            cap = max(1, math.ceil(self._total / (4 * workers)))
        rate = self._chunk_rate.get(id(executor))
        if rate is None:
            return 1  # measure one task first
        size = max(1, min(int(_CHUNK_TARGET / rate) if rate > 0 else cap, cap))
        if not self._fixed_window:
            # let every worker hold two chunks, as mpire's default window does
            self._window = max(self._window, 2 * workers * size)
        return size

    def _submit(self, calls: list[Call], executor: Executor, mode: str, attempt: int) -> None:
        flight = _Flight(calls, executor, mode, attempt)
        try:
            if len(calls) == 1:
                call = calls[0]
                call.started_at = call.ended_at = None
                if isinstance(executor, BackendBase):
                    future = executor._submit_call(call)
                else:
                    future = executor.submit(invoke, call.fn, call.args, call.kwargs)
            else:
                payload = [(c.fn, c.args, c.kwargs) for c in calls]
                chunk = Call(_run_chunk, (payload,), index=calls[0].index)
                assert isinstance(executor, BackendBase)
                future = executor._submit_call(chunk)
        except TaskSerializationError as exc:
            if len(calls) > 1:
                self._split(calls)
                return
            self._deliver(calls[0], flight, False, exc)
            return
        flight.future = future
        self._flights[future] = flight
        future.add_done_callback(self._queue.put)

    def _split(self, calls: list[Call]) -> None:
        """Resubmit a failed chunk's calls one by one, so only the culprit fails."""
        for call in calls:
            self._again.append((call, 0))

    # -- waiting and delivering ------------------------------------------------------------

    def _wait_one(self) -> None:
        wait: float | None = None
        now = time.monotonic()
        if self._deadline is not None:
            wait = max(0.0, self._deadline - now)
        if self._task_timeout is not None:
            wait = _TASK_CHECK if wait is None else min(wait, _TASK_CHECK)
        try:
            item = self._queue.get() if wait is None else self._queue.get(timeout=wait)
        except queue.Empty:
            item = None
        if self._cancelled:
            raise _Cancelled
        if item is not None and item is not _WAKE:
            flight = self._flights.pop(item, None)
            if flight is not None:
                self._finish(flight, item)
        self._check_deadline()
        if self._task_timeout is not None:
            self._check_task_timeouts()

    def _check_deadline(self) -> None:
        if self._deadline is not None and time.monotonic() >= self._deadline:
            unfinished = self._outstanding
            raise TimeoutError(
                f"run_all() timed out after {self._timeout}s with {unfinished} "
                f"task{'s' if unfinished != 1 else ''} unfinished"
            )

    def _check_task_timeouts(self) -> None:
        now = time.monotonic()
        if now < self._next_task_check:
            return
        self._next_task_check = now + _TASK_CHECK / 2
        limit = self._task_timeout
        assert limit is not None
        for future, flight in list(self._flights.items()):
            call = flight.calls[0]
            if isinstance(flight.executor, BackendBase):
                started = call.started_at
            else:
                started = flight.submitted_at  # a foreign executor does not say
            if started is None or now - started < limit or future.done():
                continue
            del self._flights[future]
            action = self._interrupt(flight, future, hard=True)
            error = TaskTimeoutError(
                f"{call.describe()} ran longer than task_timeout={limit}s on mode "
                f"{flight.mode!r} and {'' if action == 'overran' else 'was '}{action}"
                + (
                    " (it cannot be stopped where it runs, e.g. in a thread: it runs on and"
                    " its result is discarded)"
                    if action == "abandoned"
                    else ""
                ),
                action=action,
                timeout=limit,
                task_index=call.index,
            )
            self._deliver(call, flight, False, error)

    def _interrupt(self, flight: _Flight, future: Future[Any], hard: bool) -> TimeoutAction:
        executor = flight.executor
        try:
            if isinstance(executor, BackendBase):
                return executor._interrupt(future, flight.calls[0], hard)
            return "cancelled" if future.cancel() else "abandoned"
        except Exception:  # stopping must not hide the original outcome
            logger.exception("unirun: could not stop a task on mode %r", flight.mode)
            return "abandoned"

    def _finish(self, flight: _Flight, future: Future[Any]) -> None:
        calls = flight.calls
        if future.cancelled():
            for call in calls:
                self._deliver(
                    call, flight, False, CancelledError(f"{call.describe()} was cancelled")
                )
            return
        exc = future.exception()
        if len(calls) > 1:
            if exc is not None:
                if isinstance(exc, (BrokenExecutor, TaskSerializationError)):
                    self._split(calls)
                    return
                for call in calls:
                    self._deliver(call, flight, False, exc)
                return
            outcomes, elapsed = future.result()
            self._chunk_rate[id(flight.executor)] = elapsed / max(1, len(calls))
            self._sizes.pop(id(flight.executor), None)
            for call, (ok, value, tb) in zip(calls, outcomes, strict=False):
                if not ok:
                    attach_remote_traceback(value, tb)
                self._deliver(call, flight, ok, value)
            return
        call = calls[0]
        if exc is not None:
            self._deliver(call, flight, False, exc)
            return
        value = future.result()
        if (
            self._task_timeout is not None
            and call.started_at is not None
            and call.ended_at is not None
            and call.ended_at - call.started_at > self._task_timeout
        ):
            error = TaskTimeoutError(
                f"{call.describe()} ran {call.ended_at - call.started_at:.3g}s, longer than "
                f"task_timeout={self._task_timeout}s; mode {flight.mode!r} cannot interrupt a "
                "task, so it overran and its result was discarded",
                action="overran",
                timeout=self._task_timeout,
                task_index=call.index,
            )
            self._deliver(call, flight, False, error)
            return
        self._ready.append((call.index if call.index is not None else -1, True, value))
        key = id(flight.executor)
        if (
            call.started_at is not None
            and call.ended_at is not None
            and key not in self._chunk_rate
        ):
            # the first measured task sets the initial chunk size of this executor
            self._chunk_rate[key] = call.ended_at - call.started_at
            self._sizes.pop(key, None)

    def _deliver(self, call: Call, flight: _Flight, ok: bool, value: Any) -> None:
        if not ok and self._should_retry(value, flight.attempt):
            logger.debug("unirun: retrying %s (attempt %d)", call.describe(), flight.attempt + 2)
            self._again.append((call, flight.attempt + 1))
            return
        if not ok:
            if flight.attempt and is_worker_crash(value):
                value.attempts = flight.attempt + 1
                add_note(
                    value,
                    f"unirun: {call.describe()} was attempted on {value.attempts} workers, "
                    "all died",
                )
            add_note(value, f"unirun: {call.describe()} failed on mode {flight.mode!r}")
        index = call.index if call.index is not None else -1
        self._ready.append((index, ok, value))

    def _should_retry(self, exc: BaseException, attempt: int) -> bool:
        if attempt >= self._retries or not isinstance(exc, Exception):
            return False
        if is_worker_crash(exc):
            return self._retry_crashes  # a fresh worker each time: asked for, not by default
        # a broken executor other than a crash cannot run the task again
        return not isinstance(exc, (TaskTimeoutError, BrokenExecutor, CancelledError))

    def _report_progress(self) -> None:
        self._done += 1
        if self._progress is None:
            return
        try:
            self._progress(self._done, self._total)
        except Exception:
            logger.exception("unirun: the progress callback raised; it is ignored")

    # -- stopping early --------------------------------------------------------------------

    def _abort(self, hard: bool) -> None:
        flights = list(self._flights.items())
        self._flights.clear()
        for future, flight in flights:
            if not future.done():
                self._interrupt(flight, future, hard)
        leftovers = [c for _, _, calls in self._buffers.values() for c in calls]
        leftovers += [c for c, _ in self._again]
        self._buffers.clear()
        self._again.clear()
        close_coroutines(leftovers)
        if not self._exhausted:
            close = getattr(self._source, "close", None)
            if close is not None:
                close()


def calls_from(
    tasks: Any, hint: Hint | None
) -> tuple[Iterator[Call], int | None, list[Call] | None]:
    """Turn user tasks into calls: all at once for a sized input (so a bad task fails
    before anything runs), lazily for an iterator."""
    if (hasattr(tasks, "__len__") and hasattr(tasks, "__getitem__")) or isinstance(
        tasks, (set, frozenset, dict)
    ):
        calls = []
        try:
            for i, t in enumerate(tasks):
                calls.append(as_call(t, i, hint))
        except TypeError:
            close_coroutines([*calls, *tasks])
            raise
        return iter(calls), len(calls), calls
    iterator = iter(tasks)

    def lazily() -> Iterator[Call]:
        try:
            for i, t in enumerate(iterator):
                yield as_call(t, i, hint)
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    return lazily(), None, None
