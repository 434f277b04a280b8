"""The manager thread of ProcessBackend: queue, dispatch, the selector loop, worker deaths.

Data flow::

    caller's thread   enqueue(Job) -> pending; wake the manager (start it on first use)
    manager thread    pending --dispatch to an idle worker--> frame --non-blocking write-->
                      task pipe ==> worker: run, pickle the outcome ==> result pipe
                      --read--> frame --> future.set_result / set_exception
                      worker sentinel readable --> the worker died: drain its result pipe,
                      blame the task it had read, requeue a task it never read, replace it
                      a LOG frame (a task logged) --> the parent's logging (_process_logs)

One daemon thread (the manager) owns every worker and waits with a selector on the result
pipes, the sentinels, the task pipes it still has to write to, and a wake-up pipe. Writes
are non-blocking, so a worker that dies while a large argument is being sent never blocks
it. The parent keeps a copy of the read end of each task pipe: the bytes still unread there
when a worker dies tell which queued task the worker never began (``FIONREAD``), so a
worker that dies *after* sending its result (a crash in a destructor) is replaced without
blaming the next task.

The pool's health is counted here too: workers that die during start-up, or with no task
to blame, too many times in a row break the pool (every pending and later task fails with
``WorkerCrashedError``) instead of respawning forever.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import os
import selectors
import signal
import threading
import time
import weakref
from collections import deque
from concurrent.futures import CancelledError, Future
from multiprocessing.context import BaseContext
from typing import Any, Final

from unirun._errors import TimeoutAction, WorkerCrashedError
from unirun._tasks import Call

from . import _process_logs
from ._process_logs import LogSettings
from ._process_outcomes import Settle, crash_error, decode, set_outcomes
from ._process_workers import Job, Worker, launch
from ._worker import (
    CANCEL,
    HEADER,
    INIT_FAILED,
    LOG,
    READY,
    RUN_ASYNC,
    RUN_SYNC,
    Frame,
    WorkerConfig,
    encode_frame,
)

__all__ = ["PoolManager"]

logger = logging.getLogger("unirun")

#: Seconds between SIGTERM and SIGKILL when a worker must stop.
_GRACE: Final = 1.0
#: Workers that die before they are ready, in a row, before the pool gives up.
_START_ATTEMPTS: Final = 3
#: Workers that die with no task to blame, in a row, before the pool gives up.
_IDLE_DEATHS: Final = 5
_READ_SIZE: Final = 1 << 18


class PoolManager:
    """The workers of one ``ProcessBackend``, and the thread that runs them.

    Args:
        ctx: The multiprocessing context workers start with.
        max_workers: Most worker processes at once.
        init: The pickled ``(initializer, initargs)``, or None.
        max_tasks: Tasks per worker before it is replaced, or None.
        async_concurrency: Async tasks each worker runs at once.
        name: A prefix for the manager thread's and the workers' names.
    """

    def __init__(
        self,
        ctx: BaseContext,
        max_workers: int,
        init: bytes | None,
        max_tasks: int | None,
        async_concurrency: int,
        name: str,
    ) -> None:
        self._ctx = ctx
        self._fork = ctx.get_start_method() == "fork"
        self._max_workers = max_workers
        self._init = init
        self._max_tasks = max_tasks
        self._async = async_concurrency
        self._name = name
        self._lock = threading.Lock()
        self._pending: deque[Job] = deque()
        self._futures: dict[Future[Any], Job] = {}
        self._jobs: dict[int, Job] = {}  # task id -> job sent to a worker
        self._workers: list[Worker] = []
        self._ids = itertools.count(1)
        self._thread: threading.Thread | None = None
        self._selector: selectors.BaseSelector | None = None
        self._wake_r = self._wake_w = -1
        self._life_r = self._life_w = -1
        self._wake_pending = False
        self._stopping = False
        self._broken: str | None = None
        self._start_failures = 0
        self._idle_deaths = 0
        self._stop_deadline: float | None = None

    @property
    def started(self) -> bool:
        """Whether the manager thread was started (on the first task)."""
        return self._thread is not None

    def worker_pids(self) -> set[int]:
        """The pids of the worker processes now known."""
        with self._lock:
            return {w.pid for w in self._workers}

    # -- the caller's side -----------------------------------------------------------------

    def enqueue(self, call: Call, future: Future[Any], payload: bytes) -> bool:
        """Queue a pickled call; False when the pool is shut down.

        Raises:
            WorkerCrashedError: The pool is broken.
        """
        with self._lock:
            if self._broken is not None:
                raise WorkerCrashedError(self._broken)
            if self._stopping:
                return False
            job = Job(call, future, payload, next(self._ids))
            self._pending.append(job)
            self._futures[future] = job
            if self._thread is None:
                self._start_manager()
            self._wake()
        return True

    def interrupt(self, future: Future[Any], hard: bool) -> TimeoutAction:
        """Stop the task of ``future``; ``hard``: even if it runs (kill its worker)."""
        if future.cancel():
            return "cancelled"
        action: TimeoutAction
        error: BaseException
        with self._lock:
            job = self._futures.get(future)
            if job is None:
                return "abandoned"  # it finished meanwhile
            worker = job.worker
            if worker is None:  # requeued after its worker died before reading it
                self._pending.remove(job)
                action, error = "cancelled", CancelledError(f"{job.call.describe()} was cancelled")
            elif not hard:
                job.abandoned = True
                return "abandoned"
            elif self._async > 1 and job.is_async:
                worker.out.append(memoryview(encode_frame(job.task_id, CANCEL)))
                action = "cancelled"
                error = CancelledError(f"{job.call.describe()} was cancelled in its worker")
            else:
                self._kill(worker)
                action = "killed"
                error = WorkerCrashedError(
                    f"{job.call.describe()} was stopped: its worker process (pid "
                    f"{worker.pid}) was terminated",
                    exitcode=-int(signal.SIGTERM),
                    pid=worker.pid,
                    task_index=job.call.index,
                )
            self._forget(job)
            self._wake()
        set_outcomes([(future, False, error)])
        return action

    def shutdown(self, wait: bool, cancel_futures: bool) -> None:
        """Run or cancel what is queued, then stop the workers and the manager thread."""
        cancelled: list[Job] = []
        with self._lock:
            self._stopping = True
            if cancel_futures:
                cancelled = list(self._pending)
                self._pending.clear()
                for job in cancelled:
                    self._futures.pop(job.future, None)
            for worker in self._workers:  # nobody waits for what they run: stop them now
                if worker.jobs and all(j.abandoned for j in worker.jobs.values()):
                    self._kill(worker)
            thread = self._thread
            if thread is not None:
                self._wake()
        for job in cancelled:
            if not job.future.cancel():  # already marked running (requeued)
                error = CancelledError(f"{job.call.describe()} was cancelled")
                set_outcomes([(job.future, False, error)])
        if thread is not None and wait and thread is not threading.current_thread():
            thread.join()  # (from a done-callback, the manager itself: it cannot wait on itself)

    # -- the caller's side helpers (under self._lock) --------------------------------------

    def _start_manager(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        self._life_r, self._life_w = os.pipe()  # workers exit when the write end closes
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._thread = threading.Thread(
            target=self._manage, name=f"{self._name}-manager", daemon=True
        )
        _LIVE.add(self)
        self._thread.start()

    def _wake(self) -> None:
        if not self._wake_pending and self._wake_w >= 0:
            self._wake_pending = True
            try:
                os.write(self._wake_w, b"\0")
            except BlockingIOError:  # the pipe is full: the manager is awake anyway
                pass

    def _kill(self, worker: Worker) -> None:
        worker.killed = True
        if worker.kill_at is None and not worker.dead:
            worker.kill_at = time.monotonic() + _GRACE
            try:
                os.kill(worker.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def _forget(self, job: Job) -> None:
        self._futures.pop(job.future, None)
        self._jobs.pop(job.task_id, None)
        if job.worker is not None:
            job.worker.jobs.pop(job.task_id, None)
        job.payload = b""

    # -- the manager thread ---------------------------------------------------------------

    def _manage(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # a bug here must not leave futures hanging forever
            logger.exception("unirun: the process backend's manager thread failed")
            self._break(f"the process pool's manager thread failed: {exc!r}")
            with self._lock:
                workers = list(self._workers)
            for worker in workers:
                if not worker.dead:
                    worker.dead = True
                    try:
                        worker.process.kill()
                        self._reap(worker)
                    except Exception:
                        logger.exception("unirun: could not stop worker %d", worker.pid)
        finally:
            self._close_manager_fds()

    def _loop(self) -> None:
        selector = self._selector
        assert selector is not None
        while True:
            settle: list[Settle] = []
            with self._lock:
                self._wake_pending = False
                if self._broken is not None:
                    settle += self._fail_pending(self._broken)
                self._dispatch(settle)
                spawn = self._spawn_count()
                done = self._stop_workers()
                for worker in self._workers:
                    self._flush(worker)
            set_outcomes(settle)
            if done:
                return
            for _ in range(spawn):
                self._spawn()
            for key, _events in selector.select(self._select_timeout()):
                kind = key.data
                if kind is None:
                    _drain(self._wake_r)
                    continue
                what, worker = kind
                if what == "result":
                    self._read(worker)
                elif what == "exit":
                    self._on_exit(worker)
                # "write": flushed at the top of the loop
            self._escalate()

    def _dispatch(self, settle: list[Settle]) -> None:
        while self._pending:
            job = self._pending[0]
            worker = self._pick(job)
            if worker is None:
                return
            self._pending.popleft()
            if not job.running:
                if not job.future.set_running_or_notify_cancel():
                    self._futures.pop(job.future, None)
                    continue
                job.running = True
            job.worker = worker
            job.offset = worker.queued
            kind = RUN_ASYNC if job.is_async else RUN_SYNC
            header = HEADER.pack(len(job.payload), job.task_id, kind)
            worker.out.append(memoryview(header))
            worker.out.append(memoryview(job.payload))  # not copied behind the header
            worker.queued += len(header) + len(job.payload)
            worker.jobs[job.task_id] = job
            self._jobs[job.task_id] = job
            worker.dispatched += 1
            if self._max_tasks is not None and worker.dispatched >= self._max_tasks:
                worker.retiring = True
            job.call.ended_at = None
            job.call.started_at = time.monotonic()

    def _pick(self, job: Job) -> Worker | None:
        best: Worker | None = None
        for worker in self._workers:
            if not worker.ready or worker.retiring or worker.kill_at is not None or worker.eof_sent:
                continue
            n = len(worker.jobs)
            if n == 0:
                return worker
            if (
                job.is_async
                and n < self._async
                and all(j.is_async for j in worker.jobs.values())
                and (best is None or n < len(best.jobs))
            ):
                best = worker
        return best

    def _spawn_count(self) -> int:
        if not self._pending or self._broken is not None:
            return 0
        live = [w for w in self._workers if not w.retiring and w.kill_at is None and not w.eof_sent]
        starting = sum(1 for w in live if not w.ready)
        wanted = -(-len(self._pending) // self._async) - starting  # ceil division
        return max(0, min(wanted, self._max_workers - len(live)))

    def _stop_workers(self) -> bool:
        """At shutdown, once no work is left: close the task pipes (EOF ends each worker)."""
        if not self._stopping or self._pending or self._jobs:
            return False
        if self._stop_deadline is None:
            self._stop_deadline = time.monotonic() + 3 * _GRACE
        for worker in self._workers:
            if not worker.eof_sent:
                worker.eof_sent = True
                worker.out.clear()
                self._unwatch_write(worker)
                os.close(worker.task_w)
        if time.monotonic() > self._stop_deadline:
            for worker in self._workers:
                self._kill(worker)
        return not self._workers

    def _flush(self, worker: Worker) -> None:
        out = worker.out
        while out and not worker.eof_sent:
            view = out[0]
            try:
                n = os.write(worker.task_w, view)
            except BlockingIOError:
                break
            except OSError:  # the worker died; its sentinel tells the rest
                out.clear()
                break
            worker.written += n
            if n < len(view):
                out[0] = view[n:]
                break
            out.popleft()
        if out and not worker.wants_write:
            assert self._selector is not None
            self._selector.register(worker.task_w, selectors.EVENT_WRITE, ("write", worker))
            worker.wants_write = True
        elif not out:
            self._unwatch_write(worker)

    def _unwatch_write(self, worker: Worker) -> None:
        if worker.wants_write:
            assert self._selector is not None
            self._selector.unregister(worker.task_w)
            worker.wants_write = False

    def _select_timeout(self) -> float | None:
        deadlines = [w.kill_at for w in self._workers if w.kill_at is not None]
        if self._stop_deadline is not None:
            deadlines.append(self._stop_deadline)
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - time.monotonic()) + 0.001

    def _escalate(self) -> None:
        now = time.monotonic()
        with self._lock:
            for worker in self._workers:
                if worker.kill_at is not None and now >= worker.kill_at and not worker.dead:
                    try:
                        os.kill(worker.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    worker.kill_at = now + 3600  # do not signal it again

    # -- starting workers ------------------------------------------------------------------

    def _spawn(self) -> None:
        inherited: tuple[int, ...] | None = None
        if self._fork:  # a forked child inherits every fd: give back the parent's ones
            with self._lock:
                inherited = (
                    *(
                        fd
                        for w in self._workers
                        for fd in (w.task_w, w.task_r, w.result_r)
                        if not (fd == w.task_w and w.eof_sent)
                    ),
                    self._wake_r,
                    self._wake_w,
                    self._life_w,
                )
        config = WorkerConfig(self._init, self._max_tasks, self._async, (), LogSettings.capture())
        try:
            worker = launch(self._ctx, f"{self._name}-worker", self._life_r, config, inherited)
        except Exception as exc:
            self._start_failed(f"could not start a worker process: {exc!r}")
            return
        assert self._selector is not None
        self._selector.register(worker.result_r, selectors.EVENT_READ, ("result", worker))
        self._selector.register(worker.sentinel, selectors.EVENT_READ, ("exit", worker))
        with self._lock:
            self._workers.append(worker)

    def _start_failed(self, reason: str) -> None:
        with self._lock:
            self._start_failures += 1
            if self._start_failures >= _START_ATTEMPTS:
                self._break(
                    f"worker processes of this pool failed to start {self._start_failures} "
                    f"times in a row ({reason}); the pool is not usable any more",
                    locked=True,
                )

    def _break(self, message: str, locked: bool = False) -> None:
        if locked:
            if self._broken is None:
                self._broken = message
            return
        with self._lock:
            if self._broken is None:
                self._broken = message
        set_outcomes(self._fail_pending(message, lock=True))

    def _fail_pending(self, message: str, lock: bool = False) -> list[Settle]:
        if lock:
            with self._lock:
                return self._fail_pending(message)
        out: list[Settle] = []
        while self._pending:
            job = self._pending.popleft()
            self._futures.pop(job.future, None)
            out.append((job.future, False, WorkerCrashedError(message, task_index=job.call.index)))
        return out

    # -- results and deaths ------------------------------------------------------------------

    def _read(self, worker: Worker) -> None:
        """Read what the worker sent; settle the futures it finished."""
        settle: list[Settle] = []
        while True:
            try:
                data = os.read(worker.result_r, _READ_SIZE)
            except BlockingIOError:
                break
            except OSError:
                break
            if not data:
                break
            for frame in worker.frames.feed(data):
                self._on_frame(worker, frame, settle)
            if len(data) < _READ_SIZE:
                break
        set_outcomes(settle)

    def _on_frame(self, worker: Worker, frame: Frame, settle: list[Settle]) -> None:
        if frame.kind == LOG:  # before the outcome of the task that logged it
            _process_logs.handle_forwarded(frame.payload)
            return
        if frame.kind == READY:
            with self._lock:
                worker.ready = True
                self._start_failures = 0
            return
        if frame.kind == INIT_FAILED:
            text = frame.payload.decode("utf-8", "replace")
            self._break(f"the worker initializer raised, so the process pool is not usable:{text}")
            return
        now = time.monotonic()
        with self._lock:
            job = self._jobs.pop(frame.task_id, None)
            worker.completed += 1
            self._idle_deaths = 0
            if job is None:
                return  # stopped meanwhile (interrupted): its outcome is already set
            self._forget(job)  # the worker is free: the loop dispatches before it waits again
        job.call.ended_at = now
        settle.append((job.future, *decode(job.call, frame)))

    def _on_exit(self, worker: Worker) -> None:
        self._read(worker)  # a result sent just before dying still counts
        with self._lock:
            worker.dead = True
        consumed = worker.consumed()  # before its fds are closed
        expected = worker.killed or worker.eof_sent or worker.retiring
        self._reap(worker)
        code = worker.exitcode
        settle: list[Settle] = []
        with self._lock:
            blamed = False
            for job in sorted(worker.jobs.values(), key=lambda j: j.task_id, reverse=True):
                del worker.jobs[job.task_id]
                self._jobs.pop(job.task_id, None)
                job.worker = None
                if job.offset >= consumed:  # the worker never began reading it
                    job.call.started_at = None
                    self._pending.appendleft(job)
                    continue
                blamed = True
                self._futures.pop(job.future, None)
                settle.append((job.future, False, crash_error(job.call, worker.pid, code)))
            expected = expected and (code == 0 or not worker.retiring or worker.killed)
            if not worker.ready and not expected:
                self._start_failures += 1
                if self._start_failures >= _START_ATTEMPTS:
                    self._break(
                        f"worker processes of this pool exited during start-up "
                        f"{self._start_failures} times in a row (last exit code {code}); "
                        "the pool is not usable any more",
                        locked=True,
                    )
            elif not blamed and not expected:
                self._idle_deaths += 1
                if self._idle_deaths >= _IDLE_DEATHS:
                    self._break(
                        f"worker processes of this pool keep dying with no task running "
                        f"(last exit code {code}); the pool is not usable any more",
                        locked=True,
                    )
            if worker in self._workers:
                self._workers.remove(worker)
        set_outcomes(settle)

    def _reap(self, worker: Worker) -> None:
        selector = self._selector
        assert selector is not None
        for fd in (worker.result_r, worker.sentinel):
            try:
                selector.unregister(fd)
            except (KeyError, ValueError):
                pass
        self._unwatch_write(worker)
        worker.close()

    def _close_manager_fds(self) -> None:
        with self._lock:
            selector, self._selector = self._selector, None
            fds = (self._wake_r, self._wake_w, self._life_r, self._life_w)
            self._wake_r = self._wake_w = self._life_r = self._life_w = -1
        if selector is not None:
            selector.close()
        for fd in fds:
            if fd >= 0:
                os.close(fd)


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass


class _LivePools:
    """Pools with a manager thread: shut down at interpreter exit if the user did not."""

    def __init__(self) -> None:
        self._pools: weakref.WeakSet[PoolManager] = weakref.WeakSet()
        self._registered = False

    def add(self, pool: PoolManager) -> None:
        self._pools.add(pool)
        if not self._registered:
            self._registered = True
            atexit.register(self.shutdown_all)

    def shutdown_all(self) -> None:
        # As the stdlib pool does at exit: work that was submitted still runs to the end.
        for pool in list(self._pools):
            pool.shutdown(wait=True, cancel_futures=False)

    def forget_after_fork(self) -> None:
        """In a child made by ``os.fork()``: the parent's pools are not ours to use."""
        for pool in list(self._pools):
            pool._lock = threading.Lock()
            pool._broken = (
                "this process pool belongs to the parent process (it was inherited through "
                "os.fork()); create a new one in the child"
            )
        self._pools = weakref.WeakSet()
        self._registered = False


_LIVE: Final = _LivePools()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_LIVE.forget_after_fork)
