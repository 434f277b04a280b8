"""GeventBackend: tasks as greenlets, correct with and without monkey-patching.

Where the greenlets run depends on whether gevent has patched ``threading``::

    patched ("cooperative"):    caller greenlet --submit--> pending deque --hub callback-->
        Greenlet(task) on the caller thread's own hub; the engine's waits (a patched
        ``queue.SimpleQueue``, ``Future``'s patched ``Condition``) yield to that hub.

    not patched:                caller thread --submit--> pending deque
        --loop.run_callback_threadsafe--> a private hub in a daemon thread of its own
        --> Greenlet(task); ``Future.set_result`` (a real lock) wakes the caller.

Either way nothing can deadlock on a future: in the first case waiting lets the hub run,
in the second the hub never waits on the caller. Without patching, stdlib blocking calls
(``time.sleep``, sockets) block that private hub, so only gevent-aware waits overlap; the
backend warns once per process (:class:`GeventNotPatchedWarning`).

Only the hub's thread touches the greenlets; other threads post callbacks to it. A killed
greenlet (``task_timeout``, fail-fast, whole-call timeout) gets ``GreenletExit`` at its
next switch; a task's exceptions, ``KeyboardInterrupt`` and ``SystemExit`` included, are
caught inside the greenlet and become its future's outcome, so the hub never prints them.

Ctrl-C is not a task's exception. Patched, the greenlets share the main thread, where Python
runs signal handlers, so a SIGINT can land in a task greenlet's own code. While greenlets
run there, :func:`_on_sigint` stands in for ``signal.default_int_handler`` (as
``asyncio.run`` does): a SIGINT landing in a task greenlet or in the hub is thrown into the
hub's parent, the main greenlet, as gevent does with a greenlet's ``KeyboardInterrupt``,
and the interrupted task is killed.
"""

from __future__ import annotations

# isort: off
import gevent  # first: a missing gevent is BackendUnavailableError (see _registry)

# isort: on

import contextvars
import inspect
import itertools
import logging
import os
import signal
import sys
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError, Future
from concurrent.futures import wait as wait_futures
from types import CoroutineType, FrameType
from typing import Any, ClassVar, Final

import gevent.event
import gevent.monkey
from gevent import Greenlet, GreenletExit
from gevent.hub import Hub

from unirun._backends._base import BackendBase
from unirun._backends._exit import AT_EXIT
from unirun._errors import TimeoutAction
from unirun._tasks import Call, close_coroutines
from unirun._warm import WARM, nesting_depth

__all__ = ["GeventBackend", "GeventNotPatchedWarning", "run_lanes"]

logger = logging.getLogger("unirun")

#: ``max_workers`` when left out: greenlets are cheap, and the point of gevent is many waits.
DEFAULT_WORKERS: Final = 100
#: How long a timed-out task's kill may take to be confirmed (unpatched only) before the
#: task is reported as abandoned: a confirmed kill means the hub was free to deliver it.
_KILL_GRACE: Final = 0.2
_FULL_CAPABILITIES: Final = frozenset({"parallel", "interrupt", "blocking-io"})

_counter = itertools.count()
_real_get_ident: Callable[[], int] = gevent.monkey.get_original("_thread", "get_ident")
_warned_lock = gevent.monkey.get_original("_thread", "allocate_lock")()
_warned = False

_Item = tuple[Future[Any], Call, contextvars.Context]

#: Cooperative backends with greenlets running on the main thread: while there are any,
#: :func:`_on_sigint` is the SIGINT handler. Written by the main thread only: no lock.
_sigint_users = 0
#: The main thread's real ident, once a hold succeeded there (no other thread may hold).
_sigint_thread: int | None = None


class GeventNotPatchedWarning(RuntimeWarning):
    """gevent has not monkey-patched the standard library, so blocking calls serialise."""


def _patched(*modules: str) -> bool:
    return all(gevent.monkey.is_module_patched(m) for m in modules)


def _blocking_io_patched() -> bool:
    """True when stdlib sleeps and sockets yield to the hub in this process."""
    return _patched("time", "socket")


def _warn_if_not_patched() -> None:
    global _warned  # once per process: one flag, written once under a lock
    if _blocking_io_patched():
        return
    with _warned_lock:
        if _warned:
            return
        _warned = True
    warnings.warn(
        "gevent has not monkey-patched the standard library in this process: in "
        "mode='gevent', time.sleep, sockets and other blocking calls block the hub, so tasks "
        "that make them run one at a time (only gevent-aware calls such as gevent.sleep "
        "overlap). Call gevent.monkey.patch_all() at the very top of the program, before "
        "other imports, or start it with 'python -m gevent.monkey script.py'.",
        GeventNotPatchedWarning,
        stacklevel=_user_stacklevel(),
    )


def _user_stacklevel() -> int:
    """The ``stacklevel`` that points a warning at the first frame outside unirun."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
    frame = sys._getframe(1)  # the function calling warnings.warn: stacklevel 1
    level = 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    return level


class _Capabilities:
    """``GeventBackend.capabilities``, read when asked: it depends on the patching."""

    def __get__(self, obj: object, owner: type | None = None) -> frozenset[str]:
        # Without patching, a task blocking in the stdlib (an Event, time.sleep) blocks the
        # hub: such tasks neither overlap nor can be killed, so nothing is claimed.
        if _patched("threading", "time", "socket"):
            return _FULL_CAPABILITIES
        return frozenset()


def _noop() -> None:
    return None


class _TaskGreenlet(Greenlet):  # type: ignore[misc]
    """The greenlet of one task (what :func:`_on_sigint` looks for)."""


#: Code that must not get an exception between two of its lines: a lock, a queue or a
#: future could stay locked for good, unirun's bookkeeping hold a pool slot. Patched, even
#: locks are Python code. (Prefixes end with a dot.)
_MACHINERY: Final = ("threading", "queue", "concurrent.futures.", "gevent.", "unirun.")


def _in_machinery(frame: FrameType | None) -> bool:
    name = "" if frame is None else str(frame.f_globals.get("__name__", ""))
    return frame is None or any(
        name.startswith(m) if m.endswith(".") else name == m for m in _MACHINERY
    )


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    """``signal.default_int_handler``, except that Ctrl-C is never a task's exception.

    Landing in a task greenlet (that runs Python code) or in the hub, the
    ``KeyboardInterrupt`` is thrown into the hub's parent, the main greenlet, where gevent
    sends a greenlet's ``KeyboardInterrupt`` and where the caller waits; raised here, it
    would be that task's outcome, or the hub would print a traceback. The hub resumes as
    if nothing happened when next switched to. The task resumes when the hub next runs
    (say in gevent's own shutdown at exit) with ``GreenletExit`` where it was interrupted,
    as it would have had ``KeyboardInterrupt`` there without unirun: a CPU-bound task does
    not run on. Elsewhere the ``KeyboardInterrupt`` is raised in place, as by the default
    handler.

    Except inside :data:`_MACHINERY`: nothing is interrupted there. The task, the caller
    or whichever greenlet it is goes on to its next switch (the caller's is near: its
    engine soon waits), and the ``KeyboardInterrupt`` is thrown in when the hub next runs:
    into the main greenlet for a task, into that greenlet for any other.

    A task's own ``raise KeyboardInterrupt`` never comes here: it stays its outcome.
    """
    current = gevent.getcurrent()
    if isinstance(current, Hub):
        current.parent.throw(KeyboardInterrupt)  # the hub stays suspended here meanwhile
        return
    task = isinstance(current, _TaskGreenlet)
    if not _in_machinery(frame):
        if not task:
            raise KeyboardInterrupt
        hub = current.parent
        hub.loop.run_callback(current.throw)  # GreenletExit, here
        hub.parent.throw(KeyboardInterrupt)
    elif task:
        current.parent.loop.run_callback(current.parent.parent.throw, KeyboardInterrupt)
    elif current.parent is None or isinstance(current, Greenlet):  # a main greenlet or
        gevent.get_hub().loop.run_callback(current.throw, KeyboardInterrupt)  # gevent's
    else:
        raise KeyboardInterrupt


def _hold_sigint() -> bool:
    """Put :func:`_on_sigint` in place of the default SIGINT handler; whether it is held.

    Only over ``signal.default_int_handler``: another handler is the program's own, and
    outside the main thread ``signal.signal`` refuses (no signal lands there anyway).
    """
    global _sigint_users, _sigint_thread
    me = _real_get_ident()
    if _sigint_thread not in (None, me):
        return False
    if _sigint_users == 0:
        if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
            return False
        try:
            signal.signal(signal.SIGINT, _on_sigint)
        except ValueError:  # not the main thread (of the main interpreter)
            return False
        _sigint_thread = me
    _sigint_users += 1
    return True


def _release_sigint() -> None:
    """Undo :func:`_hold_sigint`; a handler the program set meanwhile stays."""
    global _sigint_users
    _sigint_users -= 1
    if _sigint_users == 0 and signal.getsignal(signal.SIGINT) is _on_sigint:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _run_call(call: Call) -> Any:
    """Run ``call`` in the current greenlet, one nesting level deeper (see ``_warm``)."""
    token = nesting_depth.set(nesting_depth.get() + 1)
    call.started_at = time.monotonic()
    try:
        result = call.fn(*call.args, **call.kwargs)
        if inspect.iscoroutine(result):
            result.close()
            raise TypeError(
                f"{call.describe()} returned a coroutine: mode 'gevent' runs sync code only; "
                "use mode='asyncio' for async tasks"
            )
        return result
    finally:
        call.ended_at = time.monotonic()
        nesting_depth.reset(token)


def run_lanes(
    fn: Callable[..., Any], arg_tuples: Sequence[tuple[Any, ...]], lanes: int, fail_fast: bool
) -> tuple[list[Any], list[tuple[int, BaseException, str]]]:
    """``map`` as one job, in a task greenlet: ``lanes`` greenlets, each calling ``fn`` for
    the next argument tuple in turn, at most ``lanes`` calls at once.

    A call made in a lane needs no greenlet, future or callback of its own, which is most
    of what ``gevent.pool.Pool.map`` spends on a short task. As in a thread pool, the calls
    of one lane share its context (a copy of the caller's). The lanes are task greenlets
    (Ctrl-C landing in one is the caller's, see :func:`_on_sigint`); killing the job kills
    them. Returns the results by position and the failures as ``(position, exception,
    "")``; with ``fail_fast`` the first failure kills every lane.
    """
    results: list[Any] = [None] * len(arg_tuples)
    failures: list[tuple[int, BaseException, str]] = []
    positions = iter(range(len(arg_tuples)))
    finished = gevent.event.Event()
    count = min(lanes, len(arg_tuples))
    left = [count]

    def lane() -> None:
        try:
            for i in positions:
                try:
                    value = results[i] = fn(*arg_tuples[i])
                    if type(value) is CoroutineType:
                        results[i] = None
                        value.close()
                        raise TypeError(
                            f"task {i} returned a coroutine: mode 'gevent' runs sync code "
                            "only; use mode='asyncio' for async tasks"
                        )
                except GreenletExit:
                    raise  # killed: the job is being stopped
                except BaseException as exc:  # KeyboardInterrupt too: the task's own outcome
                    failures.append((i, exc, ""))
                    if fail_fast:
                        break
        finally:
            left[0] -= 1
            if left[0] == 0 or (fail_fast and failures):
                finished.set()

    greenlets = [_TaskGreenlet(contextvars.copy_context().run, lane) for _ in range(count)]
    for greenlet in greenlets:
        greenlet.start()
    try:
        finished.wait()
    finally:
        if left[0]:
            gevent.killall(greenlets, block=False)
    return results, failures


class GeventBackend(BackendBase):
    """Runs tasks as greenlets: thousands of I/O waits at once, in one OS thread.

    Works whether or not the program called ``gevent.monkey.patch_all()``. Patched, the
    greenlets run on the caller's hub and blocking stdlib calls (``time.sleep``, sockets,
    ``urllib``) overlap. Not patched, they run on a private hub in a helper thread, only
    gevent-aware calls (``gevent.sleep``, gevent sockets) overlap, and a
    :class:`GeventNotPatchedWarning` is issued once per process.

    Async callables and coroutine objects are rejected with ``TypeError``: use
    ``mode="asyncio"`` for them.

    Args:
        max_workers: Most greenlets running at once (the pool size); default 100.

    Raises:
        BackendUnavailableError: gevent is not installed (``pip install 'unirun[gevent]'``).
        RuntimeError: ``threading`` is patched but ``queue`` is not, so waiting on results
            would block the hub.
    """

    mode: ClassVar[str] = "gevent"
    capabilities = _Capabilities()

    def __init__(self, max_workers: int | None = None) -> None:
        super().__init__(max_workers)
        self._cooperative = _patched("threading")
        if self._cooperative and not _patched("queue"):
            raise RuntimeError(
                "gevent has patched threading but not queue, so unirun's waits on results "
                "would block the hub. Call gevent.monkey.patch_all() (or patch_queue() too)."
            )
        _warn_if_not_patched()
        self._name = f"unirun-gevent-{next(_counter)}"
        self._lock = threading.Lock()  # a gevent lock when threading is patched
        self._pending: deque[_Item] = deque()  # guarded by _lock
        self._drain_scheduled = False  # guarded by _lock
        self._running: dict[Future[Any], Greenlet] = {}  # hub thread only
        self._closing = False
        self._hub: Any = None
        self._hub_ident: int | None = None
        self._thread: threading.Thread | None = None
        self._stopped: Any = None  # gevent.event.Event, set when closing and idle
        self._kill_acks: dict[Future[Any], threading.Event] = {}
        self._stalled = False  # a kill went unconfirmed and the hub has not run since
        self._busy = False  # hub thread only: greenlets are running (cooperative only)
        self._holds_sigint = False  # hub thread only: see _hold_sigint

    def _finish_at_exit(self) -> None:
        # A warm default backend is shut down without waiting (unirun._warm). Here, as in
        # ThreadBackend: the submitted tasks finish, an abandoned one (a kill that did not
        # land: it blocks the private hub) is not waited for.
        if WARM.owns(self) or self._is_shutdown:
            return
        if self._cooperative:
            super()._finish_at_exit()  # greenlets on this thread's hub: nothing abandoned
            return
        with self._lock:
            queued = [item[0] for item in self._pending]
        running = [f for f in list(self._running) if f not in self._kill_acks]
        wait_futures([f for f in (*running, *queued) if not f.done()])
        self.shutdown(wait=False)

    def _default_workers(self) -> int:
        return DEFAULT_WORKERS

    def _lanes(self, is_async: bool) -> Callable[..., Any] | None:
        return None if is_async else run_lanes

    @classmethod
    def _check_calls(cls, calls: list[Call]) -> None:
        bad = next((c for c in calls if c.is_async), None)
        if bad is None:
            return
        close_coroutines(calls)  # nothing of this batch will run
        what = "a coroutine object" if bad.coroutine else "an async callable"
        raise TypeError(
            f"{bad.describe()} is {what}, and mode 'gevent' runs sync callables only "
            "(greenlets cannot await). Use mode='asyncio' for async tasks, or pass a sync "
            "function."
        )

    # -- the hub ---------------------------------------------------------------------------

    def _ensure_hub(self) -> Any:
        hub = self._hub
        if hub is not None:
            return hub
        with self._lock:
            if self._hub is not None:  # another thread won the race
                return self._hub
            AT_EXIT.add(self)  # greenlets nobody waits for would be dropped at exit
            if self._cooperative:
                # Patched: greenlets live on the hub of the thread that first submits.
                self._hub = gevent.get_hub()
                self._hub_ident = _real_get_ident()
                self._stopped = gevent.event.Event()
            else:
                started = threading.Event()
                self._thread = threading.Thread(
                    target=self._hub_main, args=(started,), name=self._name, daemon=True
                )
                self._thread.start()
                started.wait()
            return self._hub

    def _hub_main(self, started: threading.Event) -> None:
        """The private hub's thread (unpatched): run greenlets until closed and idle."""
        hub = gevent.get_hub()
        # A referenced watcher keeps the loop alive while idle: without one, waiting here
        # with no greenlet to run would be gevent's LoopExit ("would block forever").
        keepalive = hub.loop.async_()
        keepalive.start(_noop)
        self._stopped = gevent.event.Event()
        self._hub_ident = _real_get_ident()
        self._hub = hub
        started.set()
        try:
            self._stopped.wait()
        finally:
            keepalive.stop()
            keepalive.close()
            hub.destroy(destroy_loop=True)

    def _in_hub_thread(self) -> bool:
        return self._hub_ident == _real_get_ident()

    def _post(self, fn: Any, *args: Any) -> None:
        """Run ``fn(*args)`` soon in the hub's thread, from any thread."""
        hub = self._ensure_hub()
        if self._thread is not None and not self._thread.is_alive():
            return  # the private hub is gone, and with it every greenlet
        if self._in_hub_thread():
            hub.loop.run_callback(fn, *args)
        else:
            hub.loop.run_callback_threadsafe(fn, *args)

    # -- submitting and running ------------------------------------------------------------

    def _submit(self, call: Call) -> Future[Any]:
        if call.is_async:  # a lazy batch is not checked up front
            self._check_calls([call])
        future: Future[Any] = Future()
        item = (future, call, contextvars.copy_context())
        with self._lock:
            self._pending.append(item)
            schedule = not self._drain_scheduled
            self._drain_scheduled = True
        if schedule:
            self._post(self._drain)
        return future

    def _drain(self) -> None:
        """Start pending tasks while the pool has room (hub thread)."""
        with self._lock:
            self._drain_scheduled = False
        self._start_pending()

    def _start_pending(self) -> None:
        while len(self._running) < self._max_workers:
            with self._lock:
                if not self._pending:
                    break
                future, call, ctx = self._pending.popleft()
            if future.cancelled():
                continue
            greenlet = _TaskGreenlet(self._run_one, future, call, ctx)
            self._running[future] = greenlet
            greenlet.start()
        busy = bool(self._running)
        if self._cooperative and busy != self._busy:
            # Greenlets on the caller's thread, maybe the main one: while any runs, Ctrl-C
            # could land in a task's own code (see _on_sigint)
            self._busy = busy
            if busy:
                self._holds_sigint = _hold_sigint()
            elif self._holds_sigint:
                self._holds_sigint = False
                _release_sigint()
        self._stop_if_idle()

    def _run_one(self, future: Future[Any], call: Call, ctx: contextvars.Context) -> None:
        try:
            if not future.set_running_or_notify_cancel():
                return
            try:
                result = ctx.run(_run_call, call)
            except GreenletExit:
                future.set_exception(CancelledError(f"{call.describe()} was killed"))
            except BaseException as exc:  # the task's outcome, whatever it is: never the hub's
                future.set_exception(exc)
                del exc
            else:
                future.set_result(result)
                del result
        finally:
            self._running.pop(future, None)
            ack = self._kill_acks.pop(future, None)
            if ack is not None:
                ack.set()
            del future, call, ctx  # keep no reference to delivered work
            self._start_pending()

    # -- stopping ----------------------------------------------------------------------------

    def _kill(self, future: Future[Any]) -> None:
        """Kill the greenlet running ``future`` (hub thread)."""
        self._stalled = False
        greenlet = self._running.get(future)
        if greenlet is not None:
            greenlet.kill(block=False)
        else:  # it finished meanwhile
            ack = self._kill_acks.pop(future, None)
            if ack is not None:
                ack.set()

    def _interrupt(self, future: Future[Any], call: Call, hard: bool) -> TimeoutAction:
        if future.cancel():
            return "cancelled"
        if future.done() or self._hub is None:
            return "cancelled"
        if self._cooperative or self._in_hub_thread() or not hard:
            # The caller runs on the hub's thread, so every task greenlet sits at a switch
            # point: the kill lands as soon as the caller yields. Fail-fast (not hard) does
            # not wait for it either.
            self._post(self._kill, future)
            return "cancelled"
        # Unpatched: the kill lands only if no greenlet is blocking the hub in the stdlib.
        ack = threading.Event()
        self._kill_acks[future] = ack
        self._post(self._kill, future)
        if not self._stalled and ack.wait(_KILL_GRACE):
            return "cancelled"
        self._stalled = True
        logger.warning(
            "unirun: %s could not be killed within %ss: a task is blocking the gevent hub in "
            "an unpatched call (time.sleep, a lock, a socket, CPU work). It is abandoned and "
            "will be killed when it next yields. Monkey-patch with gevent.monkey.patch_all().",
            call.describe(),
            _KILL_GRACE,
        )
        return "abandoned"

    def _stop_if_idle(self) -> None:
        if self._closing and not self._running and not self._pending:
            self._stopped.set()

    def _close(self) -> None:
        self._closing = True
        self._stop_if_idle()

    def _shutdown_workers(self, wait: bool, cancel_futures: bool) -> None:
        if cancel_futures:
            with self._lock:
                pending = list(self._pending)
            for future, _, _ in pending:
                future.cancel()
        if self._hub is None:
            return  # nothing was ever submitted
        self._post(self._close)
        if not wait:
            return
        if self._thread is not None:
            if not self._in_hub_thread():  # else a task shuts down its own backend
                self._thread.join()
        elif not self._in_hub_thread():
            logger.debug("unirun: %s cannot wait from another thread than its hub's", self)
        elif gevent.getcurrent() not in self._running.values():
            self._stopped.wait()
