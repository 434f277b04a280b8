"""ProcessBackend: a self-healing pool of worker processes.

Unlike ``ProcessPoolExecutor``, whose whole pool breaks when one worker dies, a dead worker
here costs only the task it was running: the task gets ``WorkerCrashedError`` and a new
worker takes its place.

The pieces::

    _process.py           ProcessBackend: options, start method, pickling each call once
                          in the caller's thread (a pickling error is that task's
                          TaskSerializationError), then PoolManager.enqueue
    _process_manager.py   PoolManager: the manager thread; dispatch, the selector loop,
                          worker deaths (blame or requeue), the pool's health
    _process_workers.py   one worker process as the parent sees it: pipes, start, reap
    _process_outcomes.py  a worker's frame or death -> a future's result or exception
    _process_logs.py      log records from workers -> the parent's logging handlers
    _worker.py            the child side: the wire format and the worker's main loop

Start method: ``forkserver`` on Linux, ``spawn`` elsewhere. Never ``fork``: forking a
process that runs threads (the manager, the caller's own) can copy a held lock into the
child and deadlock it, and Python 3.12+ warns about it. ``mp_context`` may force ``fork``;
then a ``RuntimeWarning`` is given once and ``max_tasks_per_child`` is refused.
"""

from __future__ import annotations

import functools
import itertools
import multiprocessing
import sys
import warnings
from collections.abc import Callable
from concurrent.futures import Future
from multiprocessing.context import BaseContext
from typing import Any, ClassVar, Final

from unirun._choose import available_cpus
from unirun._errors import BackendUnavailableError, TaskSerializationError, TimeoutAction
from unirun._options import check_positive_int
from unirun._tasks import Call, close_coroutines

from ._base import BackendBase
from ._process_manager import PoolManager
from ._worker import HAVE_CLOUDPICKLE, dumps

__all__ = ["ProcessBackend"]

_counter = itertools.count()


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
        if self._ctx.get_start_method() == "forkserver":
            _preload_worker_module()
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
        self._async = async_concurrency
        self._manager = PoolManager(
            self._ctx,
            self._max_workers,
            init,
            max_tasks_per_child,
            async_concurrency,
            f"unirun-process-{next(_counter)}",
        )

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
        if not self._manager.enqueue(call, future, payload):
            raise RuntimeError(f"cannot schedule new futures after shutdown ({self!r})")
        return future

    def _interrupt(self, future: Future[Any], call: Call, hard: bool) -> TimeoutAction:
        return self._manager.interrupt(future, hard)

    def _shutdown_workers(self, wait: bool, cancel_futures: bool) -> None:
        self._manager.shutdown(wait, cancel_futures)


# -- helpers -----------------------------------------------------------------------------


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


def _preload_worker_module() -> None:
    """Have the forkserver import the worker's module once, before it forks any worker.

    Every worker, and every replacement after a crash, then starts with it loaded
    (about 20 ms less each). Only while the server is not running yet, and keeping the
    modules it already preloads (``__main__``, or the user's own list).
    """
    from multiprocessing import forkserver

    server = getattr(forkserver, "_forkserver", None)
    if server is None or getattr(server, "_forkserver_pid", None) is not None:
        return
    modules = list(getattr(server, "_preload_modules", ["__main__"]))
    if _WORKER_MODULE not in modules:
        server.set_forkserver_preload([*modules, _WORKER_MODULE])


_WORKER_MODULE: Final = "unirun._backends._worker"


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
