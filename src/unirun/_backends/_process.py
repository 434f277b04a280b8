"""ProcessBackend: a self-healing pool of worker processes.

Unlike ``ProcessPoolExecutor``, whose whole pool breaks when one worker dies, a dead worker
here costs only the task it was running: the task gets ``WorkerCrashedError`` and a new
worker takes its place.

Data flow::

    caller's thread   submit -> _submit: pickle (fn, args, kwargs) once -> _Job -> pending
                      (a pickling error is that task's TaskSerializationError)
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

Start method: ``forkserver`` on Linux, ``spawn`` elsewhere. Never ``fork``: forking a
process that runs threads (the manager, the caller's own) can copy a held lock into the
child and deadlock it, and Python 3.12+ warns about it. ``mp_context`` may force ``fork``;
then a ``RuntimeWarning`` is given once and ``max_tasks_per_child`` is refused.
"""

from __future__ import annotations

import array
import atexit
import functools
import itertools
import logging
import multiprocessing
import os
import pickle
import selectors
import signal
import sys
import threading
import time
import warnings
import weakref
from collections import deque
from collections.abc import Callable
from concurrent.futures import CancelledError, Future, InvalidStateError
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from typing import Any, ClassVar, Final

from unirun._choose import available_cpus
from unirun._errors import (
    BackendUnavailableError,
    SerializationPhase,
    TaskSerializationError,
    TimeoutAction,
    WorkerCrashedError,
)
from unirun._options import check_positive_int
from unirun._remote import RemoteTraceback, attach_remote_traceback
from unirun._tasks import Call, close_coroutines

from . import _process_logs
from ._base import BackendBase
from ._process_logs import LogSettings
from ._worker import (
    CANCEL,
    ERR,
    HAVE_CLOUDPICKLE,
    INIT_FAILED,
    LOG,
    OK,
    READY,
    RUN_ASYNC,
    RUN_SYNC,
    Frame,
    FrameReader,
    WorkerConfig,
    dumps,
    encode_frame,
    worker_main,
)

__all__ = ["ProcessBackend"]

logger = logging.getLogger("unirun")

#: Seconds between SIGTERM and SIGKILL when a worker must stop.
_GRACE: Final = 1.0
#: Workers that die before they are ready, in a row, before the pool gives up.
_START_ATTEMPTS: Final = 3
#: Workers that die with no task to blame, in a row, before the pool gives up.
_IDLE_DEATHS: Final = 5
_READ_SIZE: Final = 1 << 18
_counter = itertools.count()

_Settle = tuple["Future[Any]", bool, Any]


class _Job:
    """One submitted call, from ``_submit`` until its future is settled."""

    __slots__ = (
        "abandoned",
        "call",
        "future",
        "is_async",
        "offset",
        "payload",
        "running",
        "task_id",
        "worker",
    )

    def __init__(self, call: Call, future: Future[Any], payload: bytes, task_id: int) -> None:
        self.call = call
        self.future = future
        self.payload = payload
        self.task_id = task_id
        self.is_async = call.is_async
        self.worker: _Worker | None = None
        self.offset = 0  # where its frame starts in the worker's task pipe stream
        self.running = False  # future.set_running_or_notify_cancel() was called
        self.abandoned = False  # nobody waits for it any more


class _Worker:
    """One worker process and the parent's ends of its pipes."""

    __slots__ = (
        "completed",
        "dead",
        "dispatched",
        "eof_sent",
        "exitcode",
        "frames",
        "jobs",
        "kill_at",
        "killed",
        "out",
        "pid",
        "process",
        "queued",
        "ready",
        "result_r",
        "retiring",
        "sentinel",
        "task_r",
        "task_w",
        "wants_write",
        "written",
    )

    def __init__(self, process: Any, task_w: int, task_r: int, result_r: int) -> None:
        self.process = process
        self.pid: int = process.pid
        self.sentinel: int = process.sentinel
        self.task_w = task_w
        self.task_r = task_r  # the parent's copy of the worker's read end: see the docstring
        self.result_r = result_r
        self.frames = FrameReader()
        self.jobs: dict[int, _Job] = {}
        self.out: deque[memoryview] = deque()
        self.queued = 0  # bytes handed to ``out`` so far
        self.written = 0  # bytes the kernel accepted so far
        self.wants_write = False
        self.ready = False
        self.dispatched = 0
        self.completed = 0
        self.retiring = False  # max_tasks_per_child reached: gets no more tasks
        self.kill_at: float | None = None  # SIGTERM sent; SIGKILL at this time
        self.killed = False  # stopped on purpose (interrupt, shutdown)
        self.eof_sent = False
        self.dead = False
        self.exitcode: int | None = None


class ProcessBackend(BackendBase):
    """Runs tasks in a pool of worker processes: for CPU-bound Python code.

    A worker that dies (segfault, ``os._exit``, OOM kill) fails only the task it was
    running, with ``WorkerCrashedError``; it is replaced and the other tasks run on.

    Tasks, their arguments, results and exceptions cross the process boundary by pickle
    (cloudpickle when installed, so lambdas and closures work: ``unirun[cloudpickle]``).
    Something that cannot cross fails that task only, with ``TaskSerializationError``.

    Args:
        max_workers: Most worker processes at once; default: the CPUs this process may
            use. Workers start on demand.
        mp_context: A ``multiprocessing`` context, or a start method name. Default
            ``forkserver`` on Linux, ``spawn`` elsewhere; ``fork`` is allowed but warned
            about (forking a multi-threaded process can deadlock the child).
        initializer: Called in each new worker before it takes tasks. If it raises, the
            pool is broken: pending and later tasks fail with ``WorkerCrashedError``
            quoting the initializer's traceback.
        initargs: Arguments for ``initializer``.
        max_tasks_per_child: Replace a worker after it ran this many tasks (Python 3.11+,
            not with ``fork``).
        async_concurrency: How many async tasks each worker runs at once on its own event
            loop; sync tasks still run one per worker.

    Raises:
        ValueError: A bad ``max_workers``, ``max_tasks_per_child`` or
            ``async_concurrency``; ``max_tasks_per_child`` on Python 3.10 or with ``fork``.
        BackendUnavailableError: gevent has monkey-patched threading (processes would
            hang), or the platform is Windows.
    """

    mode: ClassVar[str] = "process"
    capabilities: ClassVar[frozenset[str]] = frozenset(
        {"parallel", "processes", "interrupt", "coroutines"}
    )
    supports_chunking: ClassVar[bool] = True

    def __init__(
        self,
        max_workers: int | None = None,
        mp_context: BaseContext | str | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
        max_tasks_per_child: int | None = None,
        async_concurrency: int = 1,
    ) -> None:
        super().__init__(max_workers)
        _check_environment()
        check_positive_int("max_tasks_per_child", max_tasks_per_child)
        check_positive_int("async_concurrency", async_concurrency, allow_none=False)
        if initializer is not None and not callable(initializer):
            raise TypeError(f"initializer must be callable, got {initializer!r}")
        if max_tasks_per_child is not None and sys.version_info < (3, 11):
            raise ValueError(
                "max_tasks_per_child needs Python 3.11 or later (as in ProcessPoolExecutor); "
                f"this is Python {sys.version_info.major}.{sys.version_info.minor}"
            )
        self._ctx = _resolve_context(mp_context)
        self._fork = self._ctx.get_start_method() == "fork"
        if self._fork:
            if max_tasks_per_child is not None:
                raise ValueError(
                    "max_tasks_per_child cannot be used with the 'fork' start method: "
                    "replacing a worker would fork this multi-threaded process; use "
                    "mp_context='forkserver' or 'spawn'"
                )
            _warn_fork()
        init: bytes | None = None
        if initializer is not None:
            try:
                init = dumps((initializer, tuple(initargs)))
            except Exception as exc:
                raise TypeError(
                    f"the initializer {initializer!r} and its initargs cannot be sent to "
                    f"worker processes: {type(exc).__name__}: {exc}.{_pickle_hint()}"
                ) from exc
        self._init = init
        self._max_tasks = max_tasks_per_child
        self._async = async_concurrency
        self._name = f"unirun-process-{next(_counter)}"
        self._lock = threading.Lock()
        self._pending: deque[_Job] = deque()
        self._futures: dict[Future[Any], _Job] = {}
        self._jobs: dict[int, _Job] = {}  # task id -> job sent to a worker
        self._workers: list[_Worker] = []
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
    def async_concurrency(self) -> int:
        """How many async tasks each worker runs at once."""
        return self._async

    # -- BackendBase hooks -----------------------------------------------------------------

    def _default_workers(self) -> int:
        return available_cpus()

    def _default_window(self) -> int:
        return 2 * self._max_workers * self._async

    @classmethod
    def _check_calls(cls, calls: list[Call]) -> None:
        for call in calls:
            if call.coroutine:
                close_coroutines(calls)
                raise TypeError(_coroutine_message(call))

    def _submit(self, call: Call) -> Future[Any]:
        if call.coroutine:  # a lazy input is not checked up front
            close_coroutines([call])
            raise TypeError(_coroutine_message(call))
        future: Future[Any] = Future()
        try:
            payload = dumps((call.fn, call.args, call.kwargs))
        except KeyboardInterrupt:
            raise
        except BaseException as exc:
            error = TaskSerializationError(
                f"{call.describe()} cannot be sent to a worker process: "
                f"{type(exc).__name__}: {exc}.{_pickle_hint()}",
                phase="argument",
                task_index=call.index,
            )
            error.__cause__ = exc
            future.set_exception(error)
            return future
        with self._lock:
            if self._broken is not None:
                raise WorkerCrashedError(self._broken)
            if self._stopping:
                raise RuntimeError(f"cannot schedule new futures after shutdown ({self!r})")
            job = _Job(call, future, payload, next(self._ids))
            self._pending.append(job)
            self._futures[future] = job
            if self._thread is None:
                self._start_manager()
            self._wake()
        return future

    def _interrupt(self, future: Future[Any], call: Call, hard: bool) -> TimeoutAction:
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
        _settle([(future, False, error)])
        return action

    def _shutdown_workers(self, wait: bool, cancel_futures: bool) -> None:
        cancelled: list[_Job] = []
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
                _settle([(job.future, False, error)])
        if thread is not None and wait and thread is not threading.current_thread():
            thread.join()  # (from a done-callback, the manager itself: it cannot wait on itself)

    # -- the caller's side helpers (under self._lock) --------------------------------------------

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

    def _kill(self, worker: _Worker) -> None:
        worker.killed = True
        if worker.kill_at is None and not worker.dead:
            worker.kill_at = time.monotonic() + _GRACE
            try:
                os.kill(worker.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def _forget(self, job: _Job) -> None:
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
            settle: list[_Settle] = []
            with self._lock:
                self._wake_pending = False
                if self._broken is not None:
                    settle += self._fail_pending(self._broken)
                self._dispatch(settle)
                spawn = self._spawn_count()
                done = self._stop_workers()
                for worker in self._workers:
                    self._flush(worker)
            _settle(settle)
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

    def _dispatch(self, settle: list[_Settle]) -> None:
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
            frame = encode_frame(job.task_id, RUN_ASYNC if job.is_async else RUN_SYNC, job.payload)
            worker.out.append(memoryview(frame))
            worker.queued += len(frame)
            worker.jobs[job.task_id] = job
            self._jobs[job.task_id] = job
            worker.dispatched += 1
            if self._max_tasks is not None and worker.dispatched >= self._max_tasks:
                worker.retiring = True
            job.call.ended_at = None
            job.call.started_at = time.monotonic()

    def _pick(self, job: _Job) -> _Worker | None:
        best: _Worker | None = None
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

    def _flush(self, worker: _Worker) -> None:
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

    def _unwatch_write(self, worker: _Worker) -> None:
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
        task_r, task_w = os.pipe()
        result_r, result_w = os.pipe()
        child_task = Connection(os.dup(task_r))
        child_result = Connection(result_w)
        child_life = Connection(os.dup(self._life_r))
        close_fds: tuple[int, ...] = ()
        if self._fork:  # a forked child inherits every fd: give back the parent's ones
            with self._lock:
                inherited = [
                    fd
                    for w in self._workers
                    for fd in (w.task_w, w.task_r, w.result_r)
                    if not (fd == w.task_w and w.eof_sent)
                ]
                close_fds = (
                    *inherited,
                    task_w,
                    task_r,
                    result_r,
                    self._wake_r,
                    self._wake_w,
                    self._life_w,
                )
        config = WorkerConfig(
            self._init, self._max_tasks, self._async, close_fds, LogSettings.capture()
        )
        process = self._ctx.Process(  # type: ignore[attr-defined]
            target=worker_main,
            args=(child_task, child_result, child_life, config),
            name=f"{self._name}-worker",
            daemon=False,  # a task may start processes of its own (a nested run_all)
        )
        try:
            process.start()
        except Exception as exc:
            for fd in (task_r, task_w, result_r):
                os.close(fd)
            self._start_failed(f"could not start a worker process: {exc!r}")
            return
        finally:
            child_task.close()
            child_result.close()
            child_life.close()
        os.set_blocking(task_w, False)
        os.set_blocking(result_r, False)
        worker = _Worker(process, task_w, task_r, result_r)
        assert self._selector is not None
        self._selector.register(result_r, selectors.EVENT_READ, ("result", worker))
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
        _settle(self._fail_pending(message, lock=True))

    def _fail_pending(self, message: str, lock: bool = False) -> list[_Settle]:
        if lock:
            with self._lock:
                return self._fail_pending(message)
        out: list[_Settle] = []
        while self._pending:
            job = self._pending.popleft()
            self._futures.pop(job.future, None)
            out.append((job.future, False, WorkerCrashedError(message, task_index=job.call.index)))
        return out

    # -- results and deaths ------------------------------------------------------------------

    def _read(self, worker: _Worker) -> None:
        """Read what the worker sent; settle the futures it finished."""
        settle: list[_Settle] = []
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
        _settle(settle)

    def _on_frame(self, worker: _Worker, frame: Frame, settle: list[_Settle]) -> None:
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
        settle.append((job.future, *_decode(job.call, frame)))

    def _on_exit(self, worker: _Worker) -> None:
        self._read(worker)  # a result sent just before dying still counts
        with self._lock:
            worker.dead = True
        consumed = worker.written - _unread(worker.task_r)  # before its fds are closed
        expected = worker.killed or worker.eof_sent or worker.retiring
        self._reap(worker)
        code = worker.exitcode
        settle: list[_Settle] = []
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
                settle.append((job.future, False, _crash_error(job.call, worker, code)))
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
        _settle(settle)

    def _reap(self, worker: _Worker) -> None:
        selector = self._selector
        assert selector is not None
        for fd in (worker.result_r, worker.sentinel):
            try:
                selector.unregister(fd)
            except (KeyError, ValueError):
                pass
        self._unwatch_write(worker)
        worker.process.join()
        worker.exitcode = worker.process.exitcode
        for fd in (worker.result_r, worker.task_r) + (() if worker.eof_sent else (worker.task_w,)):
            try:
                os.close(fd)
            except OSError:
                pass
        worker.eof_sent = True
        worker.process.close()

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


# -- helpers -----------------------------------------------------------------------------


def _settle(outcomes: list[_Settle]) -> None:
    """Set futures' outcomes, outside any lock (done-callbacks run here)."""
    for future, ok, value in outcomes:
        try:
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)
        except InvalidStateError:  # cancelled or set meanwhile
            pass


def _decode(call: Call, frame: Frame) -> tuple[bool, Any]:
    """The outcome a worker sent for ``call``: ``(ok, value or exception)``."""
    try:
        if frame.kind == OK:
            return True, pickle.loads(frame.payload)
        if frame.kind == ERR:
            exc, tb = pickle.loads(frame.payload)
            return False, attach_remote_traceback(exc, tb)
        phase, type_name, text, tb = pickle.loads(frame.payload)
    except BaseException as exc:  # it pickled in the worker but does not unpickle here
        phase = "result" if frame.kind == OK else "exception"
        type_name, text, tb = type(exc).__name__, str(exc), ""
    return False, _serialization_error(call, phase, type_name, text, tb)


def _serialization_error(
    call: Call, phase: SerializationPhase, type_name: str, text: str, tb: str
) -> TaskSerializationError:
    what = call.describe()
    if phase == "argument-load":
        message = (
            f"{what} could not be unpickled in the worker process: {type_name}: {text}. "
            "Functions and classes must be importable there (not defined in the __main__ of "
            "an interactive session or a -c script, unless cloudpickle is installed)"
        )
    elif phase == "result":
        message = (
            f"{what} finished, but its result cannot be sent back from the worker process: "
            f"{type_name}: {text}"
        )
    else:
        message = (
            f"{what} raised {text}, and that exception cannot be sent back from the worker "
            "process; this error stands in for it (the worker's traceback is attached)"
        )
    error = TaskSerializationError(message, phase=phase, task_index=call.index)
    if tb:
        error.__cause__ = RemoteTraceback(tb)
    return error


def _crash_error(call: Call, worker: _Worker, code: int | None) -> WorkerCrashedError:
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        how = f"was killed by {name}"
        if -code == signal.SIGKILL:
            how += " (an out-of-memory kill sends SIGKILL: check the task's memory use)"
    else:
        how = f"exited with code {code}"
    return WorkerCrashedError(
        f"the worker process (pid {worker.pid}) running {call.describe()} {how}; the worker "
        "was replaced and the other tasks are not affected",
        exitcode=code,
        pid=worker.pid,
        task_index=call.index,
    )


def _unread(fd: int) -> int:
    """Bytes written to a pipe and not read yet (``FIONREAD``)."""
    try:
        import fcntl
        import termios

        buf = array.array("i", [0])
        fcntl.ioctl(fd, termios.FIONREAD, buf, True)
        return buf[0]
    except (ImportError, OSError):
        return 0  # unknown: blame every task the worker had


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass


def _coroutine_message(call: Call) -> str:
    return (
        f"{call.describe()} is a coroutine object, which cannot be sent to a worker process; "
        "pass the async function and its arguments instead, e.g. unirun.task(fetch, url)"
    )


def _pickle_hint() -> str:
    if not HAVE_CLOUDPICKLE:
        return (
            " Lambdas, closures and functions defined in __main__ need cloudpickle: "
            "pip install 'unirun[cloudpickle]'; or use mode='thread'"
        )
    return " Pass picklable functions and arguments, or use mode='thread'"


def _resolve_context(mp_context: BaseContext | str | None) -> BaseContext:
    if mp_context is None:
        method = "forkserver" if sys.platform.startswith("linux") else "spawn"
        return multiprocessing.get_context(method)
    if isinstance(mp_context, str):
        return multiprocessing.get_context(mp_context)
    if not isinstance(mp_context, BaseContext):
        raise TypeError(
            f"mp_context must be a multiprocessing context or a start method name, "
            f"got {mp_context!r}"
        )
    return mp_context


def _check_environment() -> None:
    if sys.platform == "win32":
        raise BackendUnavailableError(
            "ProcessBackend needs a POSIX system (Linux, macOS) for now; use mode='thread' "
            "or mode='dask' on Windows",
            backend="process",
        )
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None:
        try:
            patched = bool(monkey.is_module_patched("threading"))
        except Exception:
            patched = False
        if patched:
            raise BackendUnavailableError(
                "mode 'process' cannot run in a process where gevent has monkey-patched "
                "threading: multiprocessing hangs there (gevent issue #936). Use "
                "mode='gevent', or start the process pool before patching",
                backend="process",
            )


@functools.lru_cache(maxsize=1)
def _warn_fork() -> None:
    warnings.warn(
        "ProcessBackend with the 'fork' start method: forking a process that runs threads "
        "can deadlock the child (a lock held by another thread is copied locked). Prefer "
        "mp_context='forkserver' (Linux) or 'spawn'",
        RuntimeWarning,
        stacklevel=4,
    )


class _LiveBackends:
    """Backends with a manager thread: shut down at interpreter exit if the user did not."""

    def __init__(self) -> None:
        self._backends: weakref.WeakSet[ProcessBackend] = weakref.WeakSet()
        self._registered = False

    def add(self, backend: ProcessBackend) -> None:
        self._backends.add(backend)
        if not self._registered:
            self._registered = True
            atexit.register(self.shutdown_all)

    def shutdown_all(self) -> None:
        for backend in list(self._backends):
            backend.shutdown(wait=True, cancel_futures=True)

    def forget_after_fork(self) -> None:
        """In a child made by ``os.fork()``: the parent's pools are not ours to use."""
        for backend in list(self._backends):
            backend._lock = threading.Lock()
            backend._broken = (
                "this process pool belongs to the parent process (it was inherited through "
                "os.fork()); create a new one in the child"
            )
        self._backends = weakref.WeakSet()
        self._registered = False


_LIVE: Final = _LiveBackends()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_LIVE.forget_after_fork)
