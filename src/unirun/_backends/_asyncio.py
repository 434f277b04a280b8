"""AsyncioBackend: coroutines on an event loop that runs in a thread of its own.

The loop (asyncio, or trio through anyio) starts on the first async submit, in a daemon
thread, so ``submit``/``run_all``/``imap`` work from sync code and from a thread that
already runs another loop (a Jupyter cell): nothing ever calls ``asyncio.run`` in the
caller's thread. Data flow::

    submit(async fn or coroutine object), from any thread
        --> inbox (a list under a lock)
        --> one call_soon_threadsafe(_drain) per burst, not per task
        --> loop thread: _drain admits up to max_workers, the rest wait in a deque
        --> one task per call: _run_asyncio / _run_trio awaits the coroutine and settles
            the concurrent.futures.Future; a finished task admits the next one

    submit(sync callable) --> a private ThreadBackend: the loop never runs user sync code

The per-task path on asyncio is one ``loop.create_task`` of a small wrapper coroutine:
no task group, no semaphore, no per-task thread hop (see ``benchmarks/bench_asyncio.py``).

The future of an async task stays *pending* until the coroutine finishes, as the futures
of ``asyncio.run_coroutine_threadsafe`` and anyio's ``BlockingPortal.start_task_soon`` do:
``future.cancel()`` cancels the coroutine even while it runs.

A coroutine that blocks the loop (``time.sleep``, CPU work inside ``async def``) cannot be
cancelled until it next awaits. When a timeout finds a coroutine in the middle of a step,
``_interrupt`` posts a probe callback to the loop and gives it ``_CANCEL_GRACE`` seconds:
answered, the loop is free (the task is ``"cancelled"``, or ``"overran"`` if it returned
meanwhile); not answered, the task is ``"abandoned"`` and logged, as GeventBackend does for
a greenlet that blocks its hub. While tasks run, a heartbeat notes every ``_BEAT`` s that
the loop is alive, so when the probe is answered the block is measured and logged
(``blocked the event loop for 1.0 s``) with the task that caused it: asyncio's own
slow-callback report, without debug mode and its per-step cost.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import importlib.util
import itertools
import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures import wait as wait_futures
from types import CoroutineType
from typing import Any, ClassVar, Final, Literal

import anyio

from unirun._errors import BackendUnavailableError, TimeoutAction
from unirun._tasks import Call, _callable_name, close_coroutines
from unirun._warm import WARM, nesting_depth

from ._base import BackendBase
from ._exit import AT_EXIT
from ._thread import ThreadBackend

__all__ = ["AsyncioBackend", "default_concurrency", "run_lanes"]

logger = logging.getLogger("unirun")
_counter = itertools.count()

#: Most threads for the sync tasks of one AsyncioBackend (anyio's default thread limit).
SYNC_THREADS: Final = 40
#: How long a timed-out coroutine caught in the middle of a step may keep the loop busy
#: before it is reported as abandoned (GeventBackend waits as long for a kill to land).
_CANCEL_GRACE: Final = 0.2
#: How often the loop notes that it is alive while tasks run (seconds).
_BEAT: Final = 0.05
#: A step longer than this is a blocked loop (asyncio's default slow_callback_duration).
_SLOW_STEP: Final = 0.1
_ADVICE: Final = (
    "time.sleep, a lock, CPU work or another blocking call inside async def; await instead "
    "(asyncio.sleep), or move the blocking part to a thread (asyncio.to_thread, "
    "anyio.to_thread.run_sync, or a sync task)"
)
_LOOPS: Final = ("asyncio", "trio")

_Item = tuple[Future[Any], Call, contextvars.Context]


def _named(call: Call) -> str:
    """``task 3 ('name')``, or ``task 3 (fetch)`` after the function: for logs, which
    (unlike a task's slot) do not say which task they are about."""
    return call.describe() if call.name else f"{call.describe()} ({_callable_name(call.fn)})"


class _Probe:
    """A callback posted to the loop, to learn whether (and when) it is free again."""

    __slots__ = ("answered", "blocker", "posted_at", "since")

    def __init__(self, blocker: str | None, since: float) -> None:
        self.answered = threading.Event()
        self.blocker = blocker  # what is thought to block the loop, when known
        self.since = since  # the loop was last seen alive then
        self.posted_at = time.monotonic()

    def wait(self) -> bool:
        """Wait for the answer until ``_CANCEL_GRACE`` after posting; True if it came."""
        return self.answered.wait(max(0.0, self.posted_at + _CANCEL_GRACE - time.monotonic()))


def default_concurrency() -> int:
    """The default ``max_workers``: a quarter of the file-descriptor limit, in [64, 1024].

    Each running coroutine may hold a socket or two; a quarter of ``RLIMIT_NOFILE`` leaves
    room for the rest of the program (256 under Linux's usual soft limit of 1024, 64 under
    macOS's 256).
    """
    try:
        import resource
    except ImportError:  # Windows: no fd limit of this kind
        return 256
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1024
    return max(64, min(1024, soft // 4))


async def run_lanes(
    fn: Callable[..., Any], arg_tuples: Sequence[tuple[Any, ...]], lanes: int, fail_fast: bool
) -> tuple[list[Any], list[tuple[int, BaseException, str]]]:
    """``map`` of an async function as one job: ``lanes`` asyncio tasks, each awaiting the
    coroutine of the next argument tuple in turn, at most ``lanes`` coroutines at once.

    A coroutine awaited in a lane needs no task of its own: per coroutine that saves an
    ``asyncio.Task``, its scheduling and its done callback, which is most of what
    ``asyncio.gather`` spends on a short coroutine (and twice what unirun's per-task path
    spends). As in a thread pool, the coroutines of one lane share its context (a copy of
    the caller's): a context variable one of them sets is seen by the next in that lane.
    The lanes report to one future through a counter, not a callback per task.

    Returns the results by position and the failures as ``(position, exception, "")``;
    with ``fail_fast`` the first failure stops every lane and cancels what they await.
    """
    results: list[Any] = [None] * len(arg_tuples)
    failures: list[tuple[int, BaseException, str]] = []
    positions = iter(range(len(arg_tuples)))
    loop = asyncio.get_running_loop()
    finished = loop.create_future()
    count = min(lanes, len(arg_tuples))
    state = [count, False]  # lanes still running; stopping

    async def lane() -> None:
        try:
            for i in positions:
                try:
                    results[i] = await fn(*arg_tuples[i])
                except asyncio.CancelledError as exc:
                    if state[1]:
                        raise  # this job is being stopped
                    failures.append((i, exc, ""))  # the coroutine cancelled itself
                except BaseException as exc:  # KeyboardInterrupt too: the task's own outcome
                    failures.append((i, exc, ""))
                else:
                    continue
                if fail_fast:
                    break
        finally:
            state[0] -= 1
            if (state[0] == 0 or (fail_fast and failures)) and not finished.done():
                finished.set_result(None)

    tasks = [loop.create_task(lane()) for _ in range(count)]
    try:
        await finished
    finally:
        state[1] = True
        if state[0]:
            for task in tasks:
                task.cancel()  # no-op for finished lanes
    return results, failures


class AsyncioBackend(BackendBase):
    """Runs async tasks as coroutines on an event loop in a thread of its own.

    Async callables and coroutine objects run natively on the loop, at most
    ``max_workers`` at once. Sync callables run on a private thread pool of
    ``min(max_workers, 40)`` threads, so they never block the loop (a sync callable that
    returns a coroutine has it run to completion in its thread; pass the async function,
    ``unirun.task(fetch, url)``, to have it run on the loop).

    ``task_timeout``, ``timeout`` and fail-fast cancel running coroutines
    (``TaskTimeoutError.action == "cancelled"``); a sync task already running in a thread
    cannot be stopped and is ``"abandoned"``. So is a coroutine that blocks the event loop
    (``time.sleep`` inside ``async def``) past ``task_timeout``: it runs on until it next
    awaits, its result is discarded, and a warning on the ``unirun`` logger names it and
    says how long it blocked the loop (``"overran"`` if it returned within 0.2 s).
    ``shutdown(cancel_futures=True)`` cancels queued tasks *and* running coroutines.

    Inside async code, ``await backend.arun_all(...)`` runs the async tasks in the
    caller's own loop instead (see :func:`unirun.arun_all`).

    Args:
        max_workers: Most tasks running at once. Default: a quarter of the process's
            file-descriptor limit, between 64 and 1024 (256 under a soft limit of 1024),
            so a batch of network tasks does not run out of sockets.
        backend: ``"asyncio"`` (default) or ``"trio"`` (needs ``unirun[trio]``): the
            event loop of the backend's thread.

    Raises:
        ValueError: ``backend`` is not ``"asyncio"`` or ``"trio"``.
        BackendUnavailableError: ``backend="trio"`` and trio is not installed.
    """

    mode: ClassVar[str] = "asyncio"
    capabilities: ClassVar[frozenset[str]] = frozenset(
        {"parallel", "coroutines", "coroutine-objects", "interrupt", "blocking-io"}
    )

    def __init__(
        self,
        max_workers: int | None = None,
        backend: Literal["asyncio", "trio"] = "asyncio",
    ) -> None:
        if backend not in _LOOPS:
            raise ValueError(f"backend must be 'asyncio' or 'trio', got {backend!r}")
        if backend == "trio" and importlib.util.find_spec("trio") is None:
            raise BackendUnavailableError(
                "AsyncioBackend(backend='trio') needs the 'trio' package: "
                "pip install 'unirun[trio]'",
                backend="asyncio",
                extra="unirun[trio]",
            )
        super().__init__(max_workers)
        self._loop_backend: Literal["asyncio", "trio"] = backend
        self._name = f"unirun-{backend}-{next(_counter)}"
        self._lock = threading.Lock()
        self._closing = False  # under _lock: no new submits
        self._thread: threading.Thread | None = None
        self._threads: ThreadBackend | None = None
        self._inbox: list[_Item] = []
        self._drain_scheduled = False
        # set in the loop thread before the loop is announced ready
        self._call_soon: Callable[..., object] | None = None
        self._spawn: Callable[[_Item], Any] | None = None
        self._stop: asyncio.Event | anyio.Event | None = None  # set in the loop thread
        # touched only in the loop thread
        self._running = 0
        self._pending: deque[_Item] = deque()
        # launched calls: future -> (asyncio.Task, or trio's CancelScope once started; call)
        self._tasks: dict[Future[Any], tuple[Any, Call]] = {}
        self._stopping = False
        # blocked-loop detection (see the module docstring)
        self._loop: asyncio.AbstractEventLoop | None = None  # asyncio only
        self._start_soon: Callable[[Callable[[], Any]], Any] | None = None
        self._beating = False  # loop thread: a heartbeat task runs
        self._beat_task: Any = None  # a reference, so the asyncio task is not collected
        self._beat_at = 0.0  # written by the heartbeat, read from any thread
        self._probe: _Probe | None = None  # under _lock: the one probe not yet answered

    def _lanes(self, is_async: bool) -> Callable[..., Any] | None:
        return run_lanes if is_async and self._loop_backend == "asyncio" else None

    @property
    def loop_backend(self) -> str:
        """The event loop of the backend's thread: ``"asyncio"`` or ``"trio"``."""
        return self._loop_backend

    # -- BackendBase hooks ----------------------------------------------------------------

    def _finish_at_exit(self) -> None:
        # A warm default backend is shut down without waiting (unirun._warm). Here, as in
        # ThreadBackend: the submitted tasks finish, an abandoned one (its future settled
        # while it blocks the loop) is not waited for.
        if WARM.owns(self) or self._is_shutdown:
            return
        with self._lock:
            queued = [item[0] for item in (*self._inbox, *self._pending)]
        unsettled = [f for f in (*list(self._tasks), *queued) if not f.done()]
        wait_futures(unsettled)
        self.shutdown(wait=False)

    def _default_workers(self) -> int:
        return default_concurrency()

    def _submit(self, call: Call) -> Future[Any]:
        if not call.is_async:
            return self._thread_pool()._submit_call(call)
        future: Future[Any] = Future()
        # Tasks see the submitter's context variables (``using()``), one nesting level
        # deeper, so a nested run_all gets a backend of its own instead of this loop.
        ctx = contextvars.copy_context()
        ctx.run(nesting_depth.set, nesting_depth.get() + 1)
        future.add_done_callback(self._future_done)
        with self._lock:
            if self._closing:
                raise RuntimeError(f"cannot schedule new futures after shutdown ({self!r})")
            if self._thread is None:
                self._start_loop()
            self._inbox.append((future, call, ctx))
            wake = not self._drain_scheduled
            self._drain_scheduled = True
        if wake:
            assert self._call_soon is not None
            self._call_soon(self._drain)
        return future

    def _interrupt(self, future: Future[Any], call: Call, hard: bool) -> TimeoutAction:
        if not call.is_async:
            threads = self._threads
            if threads is None:
                return super()._interrupt(future, call, hard)
            return threads._interrupt(future, call, hard)
        probe = self._probe_if_running(future, call) if hard else None
        if probe is not None and not probe.wait():
            # The loop did not take the probe: this coroutine (or, on trio, maybe another
            # one) blocks it, so the cancellation cannot land before it next awaits.
            if future.cancel():  # _future_done cancels the coroutine on the loop
                logger.warning(
                    "unirun: %s could not be cancelled within %ss: %s the event loop of %r "
                    "(%s). It is abandoned: it runs on until it next awaits, and its result "
                    "is discarded.",
                    _named(call),
                    _CANCEL_GRACE,
                    "it is blocking" if probe.blocker else "a task is blocking",
                    self,
                    _ADVICE,
                )
                return "abandoned"
        elif future.cancel():
            return "cancelled"
        # It returned since the engine found it past task_timeout (a coroutine that held
        # the loop until it ended, typically): it could not be interrupted and finished late.
        return "overran"

    def _probe_if_running(self, future: Future[Any], call: Call) -> _Probe | None:
        """A probe of the loop to wait for, when ``call`` may be running a step right now.

        On asyncio the loop's current task says which coroutine runs a step: when it is
        another one, this one sits at an await and its cancellation lands as soon as the
        loop is free (a long step of the other one is reported once it ends, not waited
        for). On trio nothing says so, and every timed-out coroutine is probed.
        """
        thread = self._thread
        if thread is None or threading.current_thread() is thread or not thread.is_alive():
            return None  # never started, or ended; or called on the loop: it is free
        loop = self._loop
        if loop is None:
            return self._post_probe(None, self._beat_at)
        running = asyncio.current_task(loop)
        if running is None:
            return None
        entry = self._tasks.get(future)
        if entry is not None and entry[0] is running:
            return self._post_probe(_named(call), max(self._beat_at, call.started_at or 0))
        if time.monotonic() - self._beat_at > _BEAT + _SLOW_STEP:
            self._post_probe(self._describe(running), self._beat_at)  # report it, later
        return None

    def _describe(self, task: asyncio.Task[Any]) -> str:
        for _, (handle, call) in list(self._tasks.items()):
            if handle is task:
                return _named(call)
        return f"asyncio task {task.get_name()!r} ({task.get_coro()!r})"

    def _post_probe(self, blocker: str | None, since: float) -> _Probe | None:
        """Post a probe to the loop, or return the one posted and not yet answered."""
        with self._lock:
            probe = self._probe
            if probe is not None:
                return probe
            probe = self._probe = _Probe(blocker, since)
        assert self._call_soon is not None
        try:
            self._call_soon(self._answer_probe, probe)
        except RuntimeError:  # the loop already ended
            with self._lock:
                self._probe = None
            return None
        return probe

    def _answer_probe(self, probe: _Probe) -> None:
        # loop thread: the loop is free again; say how long it was not, if that was long
        now = time.monotonic()
        with self._lock:
            if self._probe is probe:
                self._probe = None
        probe.answered.set()
        blocked = now - probe.since
        if blocked > _BEAT + _SLOW_STEP:
            logger.warning(
                "unirun: %s blocked the event loop of %r for %.1f s (%s). Timeouts could "
                "not cancel it meanwhile, and the loop's other tasks waited.",
                probe.blocker or "a task",
                self,
                blocked,
                _ADVICE,
            )

    def _shutdown_workers(self, wait: bool, cancel_futures: bool) -> None:
        with self._lock:
            self._closing = True
            thread, threads = self._thread, self._threads
        if threads is not None:
            threads.shutdown(wait=wait, cancel_futures=cancel_futures)
        if thread is None:
            return
        assert self._call_soon is not None
        try:
            self._call_soon(self._begin_stop, cancel_futures)
        except RuntimeError:  # the loop already ended
            pass
        if wait and threading.current_thread() is not thread:
            thread.join()

    # -- the loop thread ------------------------------------------------------------------

    def _thread_pool(self) -> ThreadBackend:
        with self._lock:
            if self._closing:
                raise RuntimeError(f"cannot schedule new futures after shutdown ({self!r})")
            if self._threads is None:
                self._threads = ThreadBackend(
                    max_workers=min(self._max_workers, SYNC_THREADS),
                    thread_name_prefix=f"{self._name}-sync",
                )
            return self._threads

    def _start_loop(self) -> None:
        # called with self._lock held
        ready = threading.Event()
        failure: list[BaseException] = []

        def main() -> None:
            try:
                if self._loop_backend == "asyncio":
                    # plain asyncio: anyio's asyncio backend would cost 14 ms to import
                    asyncio.run(self._main(ready))
                else:
                    anyio.run(self._main, ready, backend="trio")
            except BaseException as exc:  # reported to the submitter below
                if ready.is_set():
                    logger.exception("unirun: the event loop of %r ended with an error", self)
                failure.append(exc)
            finally:
                ready.set()

        thread = threading.Thread(target=main, name=f"{self._name}-loop", daemon=True)
        AT_EXIT.add(self)  # a daemon thread: its tasks would be frozen mid-way at exit
        thread.start()
        ready.wait()
        if failure:
            thread.join()
            raise RuntimeError(f"could not start the event loop of {self!r}") from failure[0]
        self._thread = thread

    async def _main(self, ready: threading.Event) -> None:
        if self._loop_backend == "asyncio":
            self._stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            self._call_soon = loop.call_soon_threadsafe
            self._spawn = self._spawn_asyncio(loop)
            self._loop = loop
            self._start_soon = lambda fn: loop.create_task(fn())
            ready.set()
            await self._stop.wait()
            return
        import trio

        self._stop = anyio.Event()
        self._call_soon = trio.lowlevel.current_trio_token().run_sync_soon
        async with anyio.create_task_group() as tg:
            start_soon = tg.start_soon
            run = self._run_trio

            def spawn(item: _Item) -> None:
                item[2].run(start_soon, run, item[0], item[1])

            self._spawn = spawn
            self._start_soon = start_soon
            ready.set()
            await self._stop.wait()

    def _spawn_asyncio(self, loop: asyncio.AbstractEventLoop) -> Callable[[_Item], Any]:
        create_task = loop.create_task
        run = self._run_asyncio
        if sys.version_info >= (3, 11):

            def spawn(item: _Item) -> Any:
                return create_task(run(item[0], item[1]), context=item[2])

        else:  # pragma: no cover - Python 3.10: the task copies the current context

            def spawn(item: _Item) -> Any:
                return item[2].run(create_task, run(item[0], item[1]))

        return spawn

    def _drain(self) -> None:
        with self._lock:
            items, self._inbox = self._inbox, []
            self._drain_scheduled = False
        limit = self._max_workers
        for item in items:
            if self._running < limit:
                self._launch(item)
            else:
                self._pending.append(item)

    def _launch(self, item: _Item) -> None:
        # a call cancelled while it waited for a slot is settled by its wrapper's first step
        future, call, _ = item
        self._running += 1
        assert self._spawn is not None
        try:
            self._tasks[future] = (self._spawn(item), call)
        except BaseException as exc:  # never let a callback break the loop
            self._running -= 1
            close_coroutines([call])
            if future.set_running_or_notify_cancel():
                future.set_exception(exc)
            return
        if not self._beating:
            self._start_heartbeat()

    def _start_heartbeat(self) -> None:
        assert self._start_soon is not None
        self._beat_at = time.monotonic()
        try:  # in an empty context: no task's context variables are kept alive by it
            self._beat_task = contextvars.Context().run(self._start_soon, self._heartbeat)
        except RuntimeError:  # the loop is closing: nothing to measure
            return
        self._beating = True

    async def _heartbeat(self) -> None:
        """Note the time every ``_BEAT`` s while tasks run: a probe measures a block of the
        loop from the last beat before it. Two dozen cheap wake-ups a second, no per-step
        cost; it ends when the last task does (or at shutdown)."""
        stop = self._stop
        assert stop is not None
        try:
            while self._running and not stop.is_set():
                self._beat_at = time.monotonic()
                if isinstance(stop, asyncio.Event):
                    try:
                        await asyncio.wait_for(stop.wait(), _BEAT)
                    except asyncio.TimeoutError:
                        pass
                else:
                    with anyio.move_on_after(_BEAT):
                        await stop.wait()
        finally:
            self._beating = False
            self._beat_task = None

    def _finished(self, future: Future[Any]) -> None:
        self._tasks.pop(future, None)
        self._running -= 1
        pending = self._pending
        while pending and self._running < self._max_workers:
            self._launch(pending.popleft())
        if self._stopping:
            self._maybe_stop()

    async def _run_asyncio(self, future: Future[Any], call: Call) -> None:
        call.started_at = time.monotonic()
        try:
            if future.cancelled():
                raise asyncio.CancelledError
            value = call.fn(*call.args, **call.kwargs)
            if type(value) is CoroutineType or hasattr(value, "__await__"):
                value = await value
        except asyncio.CancelledError:
            call.ended_at = time.monotonic()
            close_coroutines([call])
            future.cancel()
            future.set_running_or_notify_cancel()
        except BaseException as exc:
            call.ended_at = time.monotonic()
            if future.set_running_or_notify_cancel():
                future.set_exception(exc)
            del exc
        else:
            call.ended_at = time.monotonic()
            if future.set_running_or_notify_cancel():
                future.set_result(value)
            del value
        finally:
            self._finished(future)

    async def _run_trio(self, future: Future[Any], call: Call) -> None:
        outcome: tuple[bool, Any] | None = None
        cancelled = anyio.get_cancelled_exc_class()
        try:
            with anyio.CancelScope() as scope:
                self._tasks[future] = (scope, call)
                call.started_at = time.monotonic()
                if future.cancelled():
                    scope.cancel()
                try:
                    value = call.fn(*call.args, **call.kwargs)
                    if hasattr(value, "__await__"):
                        value = await value
                except cancelled:
                    raise
                except BaseException as exc:
                    outcome = (False, exc)
                else:
                    outcome = (True, value)
        finally:
            call.ended_at = time.monotonic()
            if outcome is None:
                close_coroutines([call])
                future.cancel()
                future.set_running_or_notify_cancel()
            elif future.set_running_or_notify_cancel():
                if outcome[0]:
                    future.set_result(outcome[1])
                else:
                    future.set_exception(outcome[1])
            outcome = None
            self._finished(future)

    def _future_done(self, future: Future[Any]) -> None:
        # any thread; a cancelled future cancels its coroutine
        if future.cancelled():
            call_soon = self._call_soon
            if call_soon is None:
                return
            try:
                call_soon(self._cancel_task, future)
            except RuntimeError:  # the loop already ended: nothing runs
                pass

    def _cancel_task(self, future: Future[Any]) -> None:
        entry = self._tasks.get(future)
        if entry is None or entry[0] is None:
            return  # done, or not started (trio): its wrapper sees the cancelled future
        handle, call = entry
        handle.cancel()
        if isinstance(handle, asyncio.Task):
            handle.add_done_callback(functools.partial(self._after_cancel, future, call))

    def _after_cancel(self, future: Future[Any], call: Call, _: object) -> None:
        # An asyncio task cancelled before its first step never runs its wrapper's body
        # (so no ``finally``): settle its future and free its slot here.
        if future in self._tasks:
            future.set_running_or_notify_cancel()
            close_coroutines([call])
            self._finished(future)

    def _begin_stop(self, cancel: bool) -> None:
        self._drain()  # take in what was submitted before shutdown
        self._stopping = True
        if cancel:
            while self._pending:
                future, call, _ = self._pending.popleft()
                future.cancel()
                future.set_running_or_notify_cancel()
                close_coroutines([call])
            for future in list(self._tasks):
                future.cancel()  # _future_done cancels the coroutine
        self._maybe_stop()

    def _maybe_stop(self) -> None:
        if self._running == 0 and not self._pending and self._stop is not None:
            self._stop.set()

    def __repr__(self) -> str:
        state = "shut down" if self._is_shutdown else "running"
        return (
            f"<AsyncioBackend mode='asyncio' max_workers={self._max_workers} "
            f"backend={self._loop_backend!r} {state}>"
        )
