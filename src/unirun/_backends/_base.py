"""The shared base of every built-in backend.

``BackendBase`` is a ``concurrent.futures.Executor`` that writes the public surface once
(``submit``, ``map``, ``shutdown``, ``run_all``, ``imap``, ``arun_all``, the context
manager) on top of a few hooks a backend fills in::

    submit(fn, *args)  ->  _submit(Call)           -> concurrent.futures.Future
    engine timeouts    ->  _interrupt(fut, call, hard) -> "killed" | "cancelled" | "abandoned"
    shutdown()         ->  _shutdown_workers(wait, cancel_futures)

Class attributes describe what a backend can do, for the engine and for the tests:
``mode``, ``capabilities``, ``supports_chunking`` and ``accepts_coroutine_objects``.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, Iterable, Iterator
from concurrent.futures import Executor as _StdExecutor
from concurrent.futures import Future
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, ParamSpec, TypeVar, final, overload

if TYPE_CHECKING:
    from typing_extensions import Self

from unirun._errors import TimeoutAction
from unirun._options import check_max_workers
from unirun._tasks import Call, Task, TaskLike

__all__ = ["BackendBase"]

T = TypeVar("T")
P = ParamSpec("P")


class BackendBase(_StdExecutor):
    """Base class of the built-in backends (private; the public type is ``Executor``).

    Subclasses set ``mode`` and implement ``_submit`` and ``_shutdown_workers``; they may
    override ``_interrupt`` when they can stop a running task.
    """

    #: The mode name (``"thread"``, ...).
    mode: ClassVar[str] = "base"
    #: What the backend can do; tests select on these with ``@pytest.mark.needs(...)``.
    #: Known values: ``"parallel"`` (tasks overlap), ``"coroutines"`` (async tasks),
    #: ``"coroutine-objects"``, ``"processes"`` (tasks run in other processes),
    #: ``"interrupt"`` (a running task can be stopped), ``"blocking-io"`` (stdlib blocking
    #: calls overlap across tasks).
    capabilities: ClassVar[frozenset[str]] = frozenset()
    #: Whether ``chunksize="auto"`` batches small tasks on this backend.
    supports_chunking: ClassVar[bool] = False

    #: Whether ``map`` of a sync function may run as ``max_workers`` lane tasks of this
    #: pool, each calling the function for the next argument tuple in turn (threads).
    lanes_in_pool: ClassVar[bool] = False

    def _finish_at_exit(self) -> None:
        """At interpreter exit, for a backend registered with ``_exit.AT_EXIT`` and never
        shut down: let the submitted tasks finish (``concurrent.futures`` semantics)."""
        if not self._is_shutdown:
            self.shutdown(wait=True)

    def _lanes(self, is_async: bool) -> Callable[..., Any] | None:
        """The job function that runs ``map`` of a (sync or async) function on this
        backend as ``max_workers`` lanes, each calling the function for the next argument
        tuple in turn, with no future per call; None for one task per call.

        Called as ``job(fn, arg_tuples, lanes, fail_fast)``, it returns the results by
        position and the failures as ``(position, exception, "")``.
        """
        return None

    def __init__(self, max_workers: int | None = None) -> None:
        check_max_workers(max_workers)
        self._max_workers = max_workers if max_workers is not None else self._default_workers()
        self._shutdown_lock = threading.Lock()
        self._is_shutdown = False

    # -- the hooks ---------------------------------------------------------------------

    def _default_workers(self) -> int:
        """The worker count used when ``max_workers`` is left out."""
        return 1

    def _submit(self, call: Call) -> Future[Any]:
        """Start ``call`` (or queue it) and return its future. Called under no lock."""
        raise NotImplementedError

    def _shutdown_workers(self, wait: bool, cancel_futures: bool) -> None:
        """Release the workers. Called once."""
        raise NotImplementedError

    def _interrupt(self, future: Future[Any], call: Call, hard: bool) -> TimeoutAction:
        """Stop ``call`` if the backend can; say what was done.

        ``hard`` is true for timeouts and Ctrl-C (the work must stop: kill processes),
        false for fail-fast (stop it if that is cheap). The default cancels a call that
        has not started and abandons one that has.
        """
        if future.cancel():
            return "cancelled"
        return "abandoned"

    def _default_window(self) -> int:
        """How many tasks the engine keeps submitted at once when ``max_in_flight`` is None.

        Deep enough that workers never wait for the caller's thread to hand out work
        (measured: a window of 8 costs thread mode 2x per tiny task against 128), small
        enough that a lazy input streams and queued work is cheap to cancel.
        """
        return max(4 * self._max_workers, 64)

    @classmethod
    def _check_calls(cls, calls: list[Call]) -> None:
        """Reject, before anything runs, calls this backend cannot take (``TypeError``).

        A class method, so a batch is checked before a warm backend is even created.
        """

    # -- the public surface ------------------------------------------------------------

    @property
    def max_workers(self) -> int:
        """How many tasks run at once (threads, processes, coroutines or greenlets)."""
        return self._max_workers

    @final
    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        """Schedule ``fn(*args, **kwargs)`` and return a ``concurrent.futures.Future``.

        Raises:
            RuntimeError: The backend was shut down.
        """
        if not callable(fn):
            raise TypeError(f"submit() needs a callable, got {fn!r}")
        call = Call(fn, args, kwargs)
        self._check_calls([call])
        return self._submit_call(call)

    def map(
        self,
        fn: Callable[..., T],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
    ) -> Iterator[T]:
        """``concurrent.futures`` semantics: submit all, yield results in order.

        ``chunksize`` is accepted for compatibility and must be >= 1; use
        :meth:`imap` or :func:`unirun.map` for batching and a bounded number in flight.
        """
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        return super().map(fn, *iterables, timeout=timeout)

    @final
    def _submit_call(self, call: Call) -> Future[Any]:
        if self._is_shutdown:
            raise RuntimeError(f"cannot schedule new futures after shutdown ({self!r})")
        return self._submit(call)

    @final
    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Release the workers; stdlib semantics.

        Args:
            wait: Block until running and queued tasks are done.
            cancel_futures: Cancel the tasks that have not started.
        """
        with self._shutdown_lock:
            first = not self._is_shutdown
            self._is_shutdown = True
        if first:
            self._shutdown_workers(wait, cancel_futures)

    @overload
    def run_all(self, tasks: Iterable[Task[T]], **options: Any) -> list[T]: ...
    @overload
    def run_all(
        self, tasks: Iterable[Callable[[], Awaitable[T]]] | Iterable[Awaitable[T]], **options: Any
    ) -> list[T]: ...
    @overload
    def run_all(self, tasks: Iterable[Callable[[], T]], **options: Any) -> list[T]: ...
    @overload
    def run_all(self, tasks: Iterable[Any], **options: Any) -> list[Any]: ...
    @final
    def run_all(self, tasks: Iterable[Any], **options: Any) -> list[Any]:
        """Run every task on this backend and return results in input order.

        Takes the options of :func:`unirun.run_all` (``timeout``, ``task_timeout``,
        ``return_exceptions``, ``retries``, ``retry_crashes``, ``hint``, ``progress``,
        ``max_in_flight``).
        """
        from unirun._run import run_on

        return run_on(self, tasks, options)

    @final
    def imap(
        self,
        fn: Callable[..., T],
        *iterables: Iterable[Any],
        ordered: bool = True,
        **options: Any,
    ) -> Iterator[T]:
        """Lazily yield ``fn(*args)`` for zipped iterables, with a bounded number in flight."""
        from unirun._run import imap_on

        return imap_on(self, fn, iterables, ordered, options)

    @final
    async def arun_all(self, tasks: Iterable[TaskLike[T]], **options: Any) -> list[T]:
        """The awaitable form of :meth:`run_all`, for callers inside asyncio or trio."""
        from unirun._run import arun_on

        return await arun_on(self, tasks, options)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        self.shutdown(wait=True)

    def __repr__(self) -> str:
        state = "shut down" if self._is_shutdown else "running"
        return f"<{type(self).__name__} mode={self.mode!r} max_workers={self._max_workers} {state}>"
