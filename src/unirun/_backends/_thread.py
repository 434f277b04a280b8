"""ThreadBackend: a thread pool that never holds the interpreter hostage.

It behaves like ``ThreadPoolExecutor`` (same keywords, threads started on demand up to
``max_workers``, context variables copied into each task as ``asyncio.to_thread`` does),
with two differences that matter when things go wrong:

* a task that passes ``task_timeout`` is *abandoned*: a thread cannot be killed, so it runs
  on and its result is discarded, while a new thread takes its place so the pool keeps
  ``max_workers`` threads serving; the old one exits when its task returns;
* the workers are daemon threads, so an abandoned task blocked forever, or Ctrl-C while
  tasks block, does not stop the interpreter from exiting. ``shutdown(wait=True)`` still
  waits for every task that was not abandoned, and so does interpreter exit (unless Ctrl-C
  ended the program), as with ``ThreadPoolExecutor``: work submitted and not abandoned is
  finished, and ``submit`` raises ``RuntimeError`` from then on.
"""

from __future__ import annotations

import contextvars
import itertools
import logging
import os
import queue
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures.thread import BrokenThreadPool
from typing import Any, ClassVar

from unirun._errors import TimeoutAction
from unirun._tasks import Call
from unirun._warm import run_nested

from ._base import BackendBase
from ._exit import ended_by_ctrl_c, register_exit_hook

__all__ = ["ThreadBackend"]

logger = logging.getLogger("unirun")
_counter = itertools.count()

_Item = tuple[Future[Any], Call, contextvars.Context]

#: Backends that may have worker threads, for ``_join_at_exit``.
_live: weakref.WeakSet[ThreadBackend] = weakref.WeakSet()
_exiting = False


def _join_at_exit() -> None:
    """At interpreter exit, as ``ThreadPoolExecutor`` does: refuse new work and wait for the
    tasks not abandoned (an abandoned one may never return; its daemon thread is left).

    Not when Ctrl-C ended the program: then it exits at once, whatever still runs.
    """
    global _exiting
    _exiting = True
    if ended_by_ctrl_c():
        return
    for backend in list(_live):
        backend._drain_at_exit()


class ThreadBackend(BackendBase):
    """Runs tasks on a pool of threads: for blocking I/O, and for C code that drops the GIL.

    Args:
        max_workers: Most threads at once; default ``min(32, os.process_cpu_count() + 4)``
            (``os.cpu_count()`` before Python 3.13) as in ``ThreadPoolExecutor``.
        thread_name_prefix: Prefix of the worker threads' names.
        initializer: Called in each new worker thread before it takes tasks; if it raises,
            the pool is broken and pending tasks fail with ``BrokenThreadPool``.
        initargs: Arguments for ``initializer``.
    """

    mode: ClassVar[str] = "thread"
    lanes_in_pool: ClassVar[bool] = True
    capabilities: ClassVar[frozenset[str]] = frozenset(
        {"parallel", "coroutines", "coroutine-objects", "blocking-io"}
    )

    def __init__(
        self,
        max_workers: int | None = None,
        thread_name_prefix: str = "",
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
    ) -> None:
        super().__init__(max_workers)
        if initializer is not None and not callable(initializer):
            raise TypeError(f"initializer must be callable, got {initializer!r}")
        self._prefix = thread_name_prefix or f"unirun-thread-{next(_counter)}"
        self._initializer = initializer
        self._initargs = initargs
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads: set[threading.Thread] = set()
        self._serving = 0  # threads not abandoned
        # Every queued item is reserved by exactly one thread, so no item waits while a
        # thread could take it (a replacement for an abandoned thread included):
        self._waiting = 0  # threads waiting for work that no queued item has reserved
        self._unclaimed = 0  # queued items that no thread has reserved yet
        self._running: dict[Future[Any], threading.Thread] = {}
        self._abandoned: set[threading.Thread] = set()
        self._broken: str | None = None
        _live.add(self)

    def _default_workers(self) -> int:
        # as ThreadPoolExecutor: os.process_cpu_count() (the affinity mask) from 3.13 on
        cpus = getattr(os, "process_cpu_count", os.cpu_count)()
        return min(32, (cpus or 1) + 4)

    def _submit(self, call: Call) -> Future[Any]:
        if self._broken is not None:
            raise BrokenThreadPool(self._broken)
        if _exiting:
            raise RuntimeError("cannot schedule new futures after interpreter shutdown")
        future: Future[Any] = Future()
        self._queue.put((future, call, contextvars.copy_context()))
        with self._lock:
            if self._waiting > 0:
                self._waiting -= 1  # a waiting thread will take it
            elif self._serving < self._max_workers:
                self._start_thread()  # the new thread takes it
            else:
                self._unclaimed += 1  # the next thread to finish takes it
        return future

    def _reserve_next(self) -> None:
        """Before a thread reads the queue: reserve an unclaimed item, or wait for one."""
        with self._lock:
            if self._unclaimed > 0:
                self._unclaimed -= 1
            else:
                self._waiting += 1

    def _start_thread(self) -> None:
        # called with self._lock held
        thread = threading.Thread(
            target=self._work,
            name=f"{self._prefix}_{len(self._threads)}",
            daemon=True,
        )
        self._threads.add(thread)
        self._serving += 1
        thread.start()

    def _work(self) -> None:
        me = threading.current_thread()
        if self._initializer is not None:
            try:
                self._initializer(*self._initargs)
            except BaseException:
                logger.exception("unirun: a thread initializer raised")
                self._break("A thread initializer failed, the thread pool is not usable anymore")
                self._retire(me)
                return
        try:
            first = True  # a new thread was started for an item already reserved for it
            while True:
                if not first:
                    self._reserve_next()
                first = False
                item = self._queue.get()
                if item is None:
                    self._queue.put(None)  # let the next worker see it too
                    return
                future, call, ctx = item
                if not future.set_running_or_notify_cancel():
                    continue
                self._running[future] = me
                try:
                    result = ctx.run(run_nested, call)
                except BaseException as exc:
                    self._running.pop(future, None)
                    future.set_exception(exc)
                    del exc
                else:
                    self._running.pop(future, None)
                    future.set_result(result)
                    del result
                del item, future, call, ctx  # keep no reference to delivered work
                if me in self._abandoned:
                    return  # a replacement already serves in this thread's place
        finally:
            self._retire(me)

    def _retire(self, thread: threading.Thread) -> None:
        with self._lock:
            self._threads.discard(thread)
            if thread in self._abandoned:
                self._abandoned.discard(thread)
            else:
                self._serving -= 1

    def _break(self, message: str) -> None:
        self._broken = message
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                item[0].set_exception(BrokenThreadPool(message))

    def _interrupt(self, future: Future[Any], call: Call, hard: bool) -> TimeoutAction:
        if future.cancel():
            return "cancelled"
        if not hard:
            return "abandoned"  # fail-fast: let it finish; its thread then serves again
        with self._lock:
            thread = self._running.get(future)
            if thread is not None and thread not in self._abandoned:
                self._abandoned.add(thread)
                self._serving -= 1
                if self._unclaimed > 0 and not self._is_shutdown and not _exiting:
                    self._unclaimed -= 1
                    self._start_thread()  # in its place, for the work it leaves queued
        return "abandoned"

    def _drain_at_exit(self) -> None:
        self._queue.put(None)
        with self._lock:
            threads = [t for t in self._threads if t not in self._abandoned]
        for thread in threads:
            thread.join()

    def _shutdown_workers(self, wait: bool, cancel_futures: bool) -> None:
        if cancel_futures:
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    item[0].cancel()
        self._queue.put(None)
        if wait:
            with self._lock:
                threads = [t for t in self._threads if t not in self._abandoned]
            for thread in threads:
                thread.join()


# Runs in threading._shutdown(), before atexit callbacks, as ThreadPoolExecutor's own hook.
if not register_exit_hook(_join_at_exit):  # imported while the interpreter already exits
    _exiting = True
