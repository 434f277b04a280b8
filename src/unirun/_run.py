"""The front door: ``run_all``, ``map``, ``imap``, ``arun_all``, ``amap`` and ``executor``.

Each call resolves its mode and options once (explicit argument, else the innermost
``using()``, else the default), builds a :class:`~unirun._engine.Router` and hands the
tasks to the :class:`~unirun._engine.Engine`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple, TypeVar, overload

from ._backends._base import BackendBase
from ._engine import Engine, Router, calls_from
from ._executor import Executor
from ._options import RUN_OPTIONS, ambient, check_max_workers, check_run_options
from ._progress import make_progress
from ._registry import accepted_options, check_mode, factory_for
from ._slices import Singles, map_in_slices, slices_apply
from ._tasks import Call, Hint, Task, TaskLike, calls_for, calls_over
from ._warm import WARM

__all__ = ["amap", "arun_all", "executor", "imap", "map", "run_all"]

T = TypeVar("T")
logger = logging.getLogger("unirun")


class RunOptions(NamedTuple):
    """The options that shape one call (SPEC section 3).

    A named tuple rather than a dataclass: ``dataclasses`` imports ``inspect``, 4 ms of a
    cold ``import unirun``."""

    hint: Hint | None = None
    timeout: float | None = None
    task_timeout: float | None = None
    return_exceptions: bool = False
    retries: int = 0
    retry_crashes: bool = False
    progress: object = False
    max_in_flight: int | None = None
    chunksize: int | str = "auto"


class _WarmRouter(Router):
    """Routes everything to the warm default backend of one mode, made on first use."""

    def __init__(self, mode: str, options: dict[str, Any]) -> None:
        super().__init__(None, mode)
        self._options = options

    def route(self, call: Call) -> tuple[Executor, str]:
        if self._executor is None:
            self._executor, self.mode = WARM.get(self.mode, self._options)
        return self._executor, self.mode

    def check(self, calls: list[Call]) -> None:
        cls = factory_for(self.mode)
        if isinstance(cls, type) and issubclass(cls, BackendBase):
            cls._check_calls(calls)


def backend_options(
    mode: str, explicit: Mapping[str, Any], ambient_options: Mapping[str, Any]
) -> dict[str, Any]:
    """Options for a backend's constructor: explicit ones, plus the ambient ones it accepts."""
    merged = dict(explicit)
    if ambient_options:
        extra = {k: v for k, v in ambient_options.items() if k not in merged}
        if mode == "serial":
            # serial takes max_workers=1 only: an ambient pool size is not meant for it
            extra.pop("max_workers", None)
        merged.update(accepted_options(factory_for(mode), extra))
    return merged


def _plan(mode: object, options: dict[str, Any]) -> tuple[Router, RunOptions]:
    """Resolve the mode and options of one call against ``using()``'s defaults."""
    check_run_options(options)
    amb = ambient()
    if mode is None:
        mode = amb.get("mode", "auto")
    opts = _run_options(options, amb)
    explicit = {k: v for k, v in options.items() if k not in RUN_OPTIONS}
    amb_backend = {k: v for k, v in amb.items() if k not in RUN_OPTIONS and k != "mode"}
    if isinstance(mode, str):
        check_mode(mode)
        if mode == "auto":
            from ._auto import AutoRouter  # the picker loads on first use of auto mode

            return AutoRouter(lambda name: backend_options(name, explicit, amb_backend)), opts
        return _WarmRouter(mode, backend_options(mode, explicit, amb_backend)), opts
    if isinstance(mode, Executor):
        if explicit:
            raise TypeError(
                f"options {sorted(explicit)} configure a backend, but mode= is an executor "
                "that is already configured; pass them when you create it"
            )
        return Router(mode, str(getattr(mode, "mode", type(mode).__name__))), opts
    raise TypeError(f"mode must be a mode name or an Executor, got {mode!r}")


def _backend_plan(backend: BackendBase, options: dict[str, Any]) -> tuple[Router, RunOptions]:
    unknown = set(options) - RUN_OPTIONS
    if unknown:
        raise TypeError(
            f"unexpected option(s) {sorted(unknown)}; a backend's run_all() takes "
            f"{', '.join(sorted(RUN_OPTIONS))}"
        )
    check_run_options(options)
    return Router(backend, backend.mode), _run_options(options, ambient())


def _run_options(options: Mapping[str, Any], amb: Mapping[str, Any]) -> RunOptions:
    """The run options of one call: explicit ones, else ``using()``'s, else the defaults."""
    merged = {k: v for k, v in amb.items() if k in RUN_OPTIONS}
    merged.update((k, v) for k, v in options.items() if k in RUN_OPTIONS)
    return RunOptions(**merged)


def make_engine(
    router: Router,
    source: Iterator[Call],
    total: int | None,
    opts: RunOptions,
    progress: Callable[[int, int | None], object] | None,
) -> Engine:
    return Engine(
        source,
        router,
        total=total,
        timeout=opts.timeout,
        task_timeout=opts.task_timeout,
        retries=opts.retries,
        retry_crashes=opts.retry_crashes,
        max_in_flight=opts.max_in_flight,
        chunksize=opts.chunksize,
        progress=progress,
    )


def _collect(
    router: Router,
    tasks: Iterable[Any],
    opts: RunOptions,
    on_engine: Callable[[Engine], None] | None = None,
) -> list[Any]:
    source, total, calls = calls_from(tasks, opts.hint)
    if calls is not None:
        if not calls:
            return []
        router.check(calls)
    progress, close_progress = make_progress(opts.progress, total)
    engine = make_engine(router, source, total, opts, progress)
    if on_engine is not None:
        on_engine(engine)
    # indexes are consecutive from the first call's (0, or a re-run slice's start)
    base = calls[0].index or 0 if calls else 0
    results: dict[int, Any] = {}
    outcomes = engine.outcomes()
    try:
        for index, ok, value in outcomes:
            if not ok and not opts.return_exceptions:
                raise value
            results[index] = value
    finally:
        outcomes.close()
        close_progress()
    return [results[base + i] for i in range(len(results))]


def _stream(
    router: Router, source: Iterator[Call], opts: RunOptions, ordered: bool
) -> Iterator[Any]:
    progress, close_progress = make_progress(opts.progress, None)
    engine = make_engine(router, source, None, opts, progress)
    outcomes = engine.outcomes()
    waiting: dict[int, tuple[bool, Any]] = {}
    next_index = 0
    try:
        for index, ok, value in outcomes:
            if not ok and not opts.return_exceptions:
                raise value
            if not ordered:
                yield value
                continue
            waiting[index] = (ok, value)
            engine.held = len(waiting)
            while next_index in waiting:
                _, value = waiting.pop(next_index)
                engine.held = len(waiting)
                next_index += 1
                yield value
    finally:
        outcomes.close()
        close_progress()


# -- public functions -------------------------------------------------------------------


@overload
def run_all(
    tasks: Iterable[Task[T]], mode: str | Executor | None = None, **options: Any
) -> list[T]: ...
@overload
def run_all(
    tasks: Iterable[Callable[[], Awaitable[T]]] | Iterable[Awaitable[T]],
    mode: str | Executor | None = None,
    **options: Any,
) -> list[T]: ...
@overload
def run_all(
    tasks: Iterable[Callable[[], T]], mode: str | Executor | None = None, **options: Any
) -> list[T]: ...
@overload
def run_all(
    tasks: Iterable[Any], mode: str | Executor | None = None, **options: Any
) -> list[Any]: ...
def run_all(tasks: Iterable[Any], mode: str | Executor | None = None, **options: Any) -> list[Any]:
    """Run every task and return their results in input order.

    Args:
        tasks: Zero-argument callables, :class:`~unirun.Task` objects, async callables or
            coroutine objects; a list or any iterable (a generator is consumed lazily).
        mode: A mode name (``"auto"``, ``"serial"``, ``"thread"``, ``"process"``,
            ``"asyncio"``, ``"gevent"``, ``"dask"`` or a registered one) or any
            ``Executor``, which is used and left running. Left out: the mode of the
            innermost ``unirun.using()``, else ``"auto"``.
        **options: ``hint``, ``max_workers``, ``timeout``, ``task_timeout``,
            ``return_exceptions``, ``retries``, ``retry_crashes``, ``progress``,
            ``max_in_flight``, ``chunksize``; any other keyword configures the backend
            (``address=`` for dask). ``retries`` gives a task that raised that many extra
            attempts; a task whose worker process died is retried too only with
            ``retry_crashes=True`` (a task that always kills its worker would otherwise
            cost a worker per attempt); a timed-out task is never retried.

    Returns:
        One result per task, in input order; with ``return_exceptions=True`` a failed
        task's slot holds its exception.

    Raises:
        Exception: The first task error, unchanged, with a note naming the task and mode.
        TimeoutError: ``timeout`` passed.
        ValueError: An unknown mode or a bad option value.
        TypeError: A task that is not callable (naming its index).
    """
    router, opts = _plan(mode, options)
    return _collect(router, tasks, opts)


@overload
def map(
    fn: Callable[..., Awaitable[T]],
    *iterables: Iterable[Any],
    mode: str | Executor | None = None,
    **options: Any,
) -> list[T]: ...
@overload
def map(
    fn: Callable[..., T],
    *iterables: Iterable[Any],
    mode: str | Executor | None = None,
    **options: Any,
) -> list[T]: ...
def map(
    fn: Callable[..., Any],
    *iterables: Iterable[Any],
    mode: str | Executor | None = None,
    **options: Any,
) -> list[Any]:
    """``run_all`` of ``fn(*args)`` for each tuple of the zipped ``iterables``.

    Takes the options of :func:`run_all`; ``chunksize`` (an int or ``"auto"``, the
    default) batches small tasks on the process and dask modes.
    """
    if not callable(fn):
        raise TypeError(f"map() needs a callable, got {fn!r}")
    router, opts = _plan(mode, options)
    # one iterable: its items, made into argument tuples only where they are needed
    args: Sequence[tuple[Any, ...]] = (
        Singles(list(iterables[0])) if len(iterables) == 1 else list(zip(*iterables))  # noqa: B905 - map() stops at the shortest, as builtins do
    )
    if not args:
        return []
    first = next(calls_over(fn, args[:1]))
    backend = slices_apply(router, first, opts)
    if backend is not None:

        def general(part: list[Call], part_opts: RunOptions) -> list[Any]:
            return _collect(router, part, part_opts)

        return map_in_slices(router, backend, fn, args, opts, general)
    calls = list(calls_over(fn, args))
    del args
    router.check(calls)
    return _collect(router, calls, opts)


@overload
def imap(
    fn: Callable[..., Awaitable[T]],
    *iterables: Iterable[Any],
    mode: str | Executor | None = None,
    ordered: bool = True,
    **options: Any,
) -> Iterator[T]: ...
@overload
def imap(
    fn: Callable[..., T],
    *iterables: Iterable[Any],
    mode: str | Executor | None = None,
    ordered: bool = True,
    **options: Any,
) -> Iterator[T]: ...
def imap(
    fn: Callable[..., Any],
    *iterables: Iterable[Any],
    mode: str | Executor | None = None,
    ordered: bool = True,
    **options: Any,
) -> Iterator[Any]:
    """Lazily yield ``fn(*args)`` for the zipped ``iterables``, a bounded number in flight.

    The input is consumed as results are taken, keeping at most ``max_in_flight`` tasks
    pulled ahead, so an endless generator streams in constant memory. Closing the iterator
    (or leaving a ``for`` loop early) cancels what is queued and stops what runs.

    Args:
        fn: The function to call.
        *iterables: Its arguments, zipped.
        mode: As for :func:`run_all`.
        ordered: Yield in input order (True) or as tasks finish (False).
        **options: As for :func:`run_all`.

    Raises:
        Exception: A task's error, as soon as it is seen (not at its turn in the order).
    """
    if not callable(fn):
        raise TypeError(f"imap() needs a callable, got {fn!r}")
    router, opts = _plan(mode, options)
    source = calls_for(fn, iterables)
    return _stream(router, source, opts, ordered)


async def arun_all(
    tasks: Iterable[TaskLike[T]], mode: str | Executor | None = None, **options: Any
) -> list[T]:
    """The awaitable form of :func:`run_all`, for code inside asyncio or trio.

    Async tasks bound for the ``asyncio`` mode run as tasks of the caller's own loop (at
    most ``max_workers`` at once); other tasks run on their backends, driven from a helper
    thread, so the loop never blocks. Options mean what they mean for :func:`run_all`.
    Cancelling the awaiting task cancels the batch, and nothing started outlives the call.
    """
    router, opts = _plan(mode, options)
    return await _acollect(router, tasks, opts)


@overload
async def amap(
    fn: Callable[..., Awaitable[T]],
    *iterables: Iterable[Any],
    mode: str | Executor | None = None,
    **options: Any,
) -> list[T]: ...
@overload
async def amap(
    fn: Callable[..., T],
    *iterables: Iterable[Any],
    mode: str | Executor | None = None,
    **options: Any,
) -> list[T]: ...
async def amap(
    fn: Callable[..., Any],
    *iterables: Iterable[Any],
    mode: str | Executor | None = None,
    **options: Any,
) -> list[Any]:
    """The awaitable form of :func:`map`."""
    if not callable(fn):
        raise TypeError(f"amap() needs a callable, got {fn!r}")
    router, opts = _plan(mode, options)
    calls = list(calls_for(fn, iterables))
    return await _acollect(router, calls, opts)


async def _acollect(router: Router, tasks: Iterable[Any], opts: RunOptions) -> list[Any]:
    from ._arun import acollect  # the native async path: see its module docstring

    return await acollect(router, tasks, opts)


def executor(mode: str | None = None, **options: Any) -> Executor:
    """Make a new backend by mode name; shut it down, or use it in ``with``.

    Args:
        mode: A mode name; ``"auto"`` (with ``hint=``) picks as ``choose_backend`` does,
            ``ThreadBackend`` without a hint. Left out: ``using()``'s mode, else auto.
        **options: The backend's constructor keywords (``max_workers``, ...), and
            ``hint`` for auto.

    Returns:
        A new ``Executor``. When the ambient mode of ``using()`` is an executor instance,
        that instance is returned as is (the caller does not own it).
    """
    amb = ambient()
    hint = options.pop("hint", amb.get("hint"))
    if "max_workers" in options:
        check_max_workers(options["max_workers"])
    chosen: object = mode if mode is not None else amb.get("mode", "auto")
    if isinstance(chosen, Executor) and not isinstance(chosen, str):
        return chosen
    name = check_mode(chosen)
    if name == "auto":
        from ._choose import choose_backend

        name = choose_backend(hint=hint).mode
    amb_backend = {k: v for k, v in amb.items() if k not in RUN_OPTIONS and k != "mode"}
    return factory_for(name)(**backend_options(name, options, amb_backend))


# -- what the backends' own run_all / imap / arun_all call -------------------------------


def run_on(backend: BackendBase, tasks: Iterable[Any], options: dict[str, Any]) -> list[Any]:
    router, opts = _backend_plan(backend, options)
    return _collect(router, tasks, opts)


def imap_on(
    backend: BackendBase,
    fn: Callable[..., Any],
    iterables: tuple[Iterable[Any], ...],
    ordered: bool,
    options: dict[str, Any],
) -> Iterator[Any]:
    router, opts = _backend_plan(backend, options)
    source = calls_for(fn, iterables)
    return _stream(router, source, opts, ordered)


async def arun_on(backend: BackendBase, tasks: Iterable[Any], options: dict[str, Any]) -> list[Any]:
    router, opts = _backend_plan(backend, options)
    return await _acollect(router, tasks, opts)
