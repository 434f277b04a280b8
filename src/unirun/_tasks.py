"""What users pass as tasks, and the one shape unirun turns them into.

A task is a zero-argument callable, a :class:`Task`, an async callable or a coroutine
object. :func:`as_call` turns each into a :class:`Call`: the function, its arguments, its
position in the batch, its name and hint. Backends only ever see ``Call`` objects (the
process backend pickles ``fn``, ``args`` and ``kwargs`` only).
"""

from __future__ import annotations

import functools
import threading
import time
import types
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator, Mapping
from typing import (
    Any,
    Final,
    Generic,
    Literal,
    ParamSpec,
    TypeAlias,
    TypeGuard,
    TypeVar,
    cast,
    overload,
)

__all__ = ["Call", "Hint", "Task", "as_call", "cpu_bound", "io_bound", "task"]

T = TypeVar("T")
P = ParamSpec("P")
F = TypeVar("F", bound=Callable[..., Any])

Hint: TypeAlias = Literal["cpu", "io"]
HINTS: Final = ("cpu", "io")
_HINT_ATTR: Final = "__unirun_hint__"


class Task(Generic[T]):
    """A call to make later: ``fn(*args, **kwargs)``, with an optional hint and name.

    ``unirun.task(fn, *args, **kwargs)`` is the short form. A ``Task`` is itself a
    zero-argument callable, and pickles when its function and arguments do.

    Args:
        fn: The function to call (sync or async).
        args: Positional arguments.
        kwargs: Keyword arguments.
        hint: ``"cpu"`` or ``"io"``: what the task spends its time on. Stronger than the
            function's decorator and the call's ``hint=``.
        name: A readable name, used in error notes and logs.
    """

    __slots__ = ("args", "fn", "hint", "kwargs", "name")

    def __init__(
        self,
        fn: Callable[..., T] | Callable[..., Awaitable[T]],
        args: tuple[Any, ...] = (),
        kwargs: Mapping[str, Any] | None = None,
        hint: Hint | None = None,
        name: str | None = None,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"Task() needs a callable, got {fn!r}")
        check_hint(hint)
        self.fn = fn
        self.args = tuple(args)
        self.kwargs: dict[str, Any] = dict(kwargs or {})
        self.hint: Hint | None = hint
        self.name = name

    def __call__(self) -> Any:
        return self.fn(*self.args, **self.kwargs)

    def __repr__(self) -> str:
        parts = [_callable_name(self.fn)]
        parts += [repr(a) for a in self.args]
        parts += [f"{k}={v!r}" for k, v in self.kwargs.items()]
        extra = "".join(
            f", {k}={v!r}" for k, v in (("hint", self.hint), ("name", self.name)) if v is not None
        )
        return f"Task({', '.join(parts)}{extra})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Task):
            return NotImplemented
        return (self.fn, self.args, self.kwargs, self.hint, self.name) == (
            other.fn,
            other.args,
            other.kwargs,
            other.hint,
            other.name,
        )

    __hash__ = None  # type: ignore[assignment]

    def __reduce__(self) -> tuple[object, ...]:
        return (Task, (self.fn, self.args, self.kwargs, self.hint, self.name))


@overload
def task(fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> Task[T]: ...
@overload
def task(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Task[T]: ...
def task(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Task[Any]:
    """Make a :class:`Task` that calls ``fn(*args, **kwargs)``.

    ``fn`` is positional-only, so ``task(f, fn=1)`` passes ``fn=1`` on to ``f``. Use the
    ``Task`` constructor for a hint or a name.
    """
    return Task(fn, args, kwargs)


def _set_hint(fn: F, hint: Hint) -> F:
    try:
        setattr(fn, _HINT_ATTR, hint)
    except (AttributeError, TypeError):
        raise TypeError(
            f"cannot attach a hint to {fn!r}; wrap the call in unirun.Task(fn, hint={hint!r})"
        ) from None
    return fn


def cpu_bound(fn: F) -> F:
    """Mark ``fn`` as CPU-bound: auto mode sends it to processes.

    The function is returned unchanged (only an attribute is added), so calling it directly
    behaves as before and it still pickles by reference.
    """
    return _set_hint(fn, "cpu")


def io_bound(fn: F) -> F:
    """Mark ``fn`` as I/O-bound: auto mode sends it to threads (or greenlets when patched)."""
    return _set_hint(fn, "io")


def check_hint(hint: object) -> None:
    """Raise ``ValueError`` unless ``hint`` is ``None``, ``"cpu"`` or ``"io"``."""
    if hint is not None and hint not in HINTS:
        raise ValueError(f"hint must be 'cpu', 'io' or None, got {hint!r}")


def function_hint(fn: Callable[..., Any]) -> Hint | None:
    """The hint a decorator attached to ``fn`` (looking through ``functools.partial``)."""
    while True:
        hint = getattr(fn, _HINT_ATTR, None)
        if hint is not None:
            return cast(Hint, hint)
        if isinstance(fn, functools.partial):
            fn = fn.func
        elif isinstance(fn, Task):
            fn = fn.fn
        else:
            return None


def _is_coroutine(obj: object) -> TypeGuard[types.CoroutineType[Any, Any, Any]]:
    """``inspect.iscoroutine`` without importing ``inspect`` (3 ms of ``import unirun``)."""
    return isinstance(obj, types.CoroutineType)


def is_async_callable(fn: object) -> bool:
    """True when calling ``fn`` returns an awaitable coroutine (async def, partial of one)."""
    import inspect  # cached after the first call; not paid by ``import unirun``

    while isinstance(fn, (functools.partial, Task)):
        fn = fn.func if isinstance(fn, functools.partial) else fn.fn
    if inspect.iscoroutinefunction(fn):
        return True
    if inspect.isfunction(fn) or inspect.ismethod(fn):
        return False
    # an instance whose class defines ``async def __call__``
    return inspect.iscoroutinefunction(type(fn).__dict__.get("__call__"))


def _callable_name(fn: object) -> str:
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    if isinstance(fn, functools.partial):
        return f"partial({_callable_name(fn.func)})"
    return str(name) if name else repr(fn)


def _return_awaitable(coro: Coroutine[Any, Any, T]) -> Coroutine[Any, Any, T]:
    return coro


class Call:
    """One task, normalised: what backends run.

    ``started_at`` and ``ended_at`` (``time.monotonic()``) are set by whoever actually
    starts and finishes the call (a worker thread, the process manager), so that
    ``task_timeout`` counts from the start of the work rather than from submission.
    """

    __slots__ = (
        "args",
        "coroutine",
        "ended_at",
        "fn",
        "hint",
        "index",
        "is_async",
        "kwargs",
        "name",
        "started_at",
    )

    def __init__(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        index: int | None = None,
        name: str | None = None,
        hint: Hint | None = None,
        is_async: bool | None = None,
        coroutine: bool = False,
    ) -> None:
        self.fn = fn
        self.args = args
        self.kwargs = kwargs if kwargs is not None else {}
        self.index = index
        self.name = name
        self.hint = hint
        self.is_async = is_async_callable(fn) if is_async is None else is_async
        self.coroutine = coroutine  # made from a coroutine *object*: cannot cross processes
        self.started_at: float | None = None
        self.ended_at: float | None = None

    def run(self) -> Any:
        """Run the call here, recording its start and end; coroutines run to completion."""
        self.started_at = time.monotonic()
        try:
            return invoke(self.fn, self.args, self.kwargs)
        finally:
            self.ended_at = time.monotonic()

    def describe(self) -> str:
        """``task 3`` or ``task 3 ('name')``: how errors name this call."""
        text = f"task {self.index}" if self.index is not None else "the task"
        if self.name:
            text += f" ({self.name!r})"
        return text

    def __repr__(self) -> str:
        return f"<Call {self.describe()}: {_callable_name(self.fn)}>"


def as_call(obj: object, index: int, hint: Hint | None = None) -> Call:
    """Turn one user task into a :class:`Call`, or raise ``TypeError`` naming its index."""
    if isinstance(obj, Call):  # already normalised by calls_for() (map, imap)
        if obj.hint is None:
            obj.hint = hint
        return obj
    if isinstance(obj, Task):
        fn = obj.fn
        return Call(
            fn,
            obj.args,
            obj.kwargs,
            index=index,
            name=obj.name,
            hint=obj.hint or function_hint(fn) or hint,
        )
    if _is_coroutine(obj):
        return Call(
            _return_awaitable,
            (obj,),
            index=index,
            name=getattr(obj, "__qualname__", None),
            hint=hint,
            is_async=True,
            coroutine=True,
        )
    if callable(obj):
        return Call(obj, index=index, hint=function_hint(obj) or hint)
    raise TypeError(
        f"task {index} is not callable: {obj!r}. Pass a function taking no arguments, "
        "unirun.task(fn, *args), a Task, an async function or a coroutine object."
    )


def calls_for(fn: Callable[..., Any], iterables: tuple[Iterable[Any], ...]) -> Iterator[Call]:
    """``Call``s of ``fn(*args)`` for the zipped ``iterables`` (``map``, ``imap``).

    What the function is (async or not, its hint) is worked out once, not per task. When
    the calls stop early (``imap`` left early, a failure), input generators are closed, as
    ``run_all`` closes a lazy input of tasks.
    """
    iterators = [iter(it) for it in iterables]
    try:
        yield from calls_over(fn, zip(*iterators))  # noqa: B905 - stops at the shortest
    finally:
        for iterator in iterators:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()


def calls_over(fn: Callable[..., Any], arg_tuples: Iterable[tuple[Any, ...]]) -> Iterator[Call]:
    """``Call``s of ``fn(*args)`` for each tuple, inspecting ``fn`` once."""
    is_async = is_async_callable(fn)
    hint = function_hint(fn)
    for index, args in enumerate(arg_tuples):
        yield Call(fn, args, index=index, hint=hint, is_async=is_async)


def close_coroutines(items: Iterable[object]) -> None:
    """Close coroutine objects that will never run, so Python does not warn 'never awaited'.

    ``items`` may hold ``Call``s and raw user tasks alike.
    """
    for item in items:
        if _is_coroutine(item):
            item.close()
        elif isinstance(item, Call) and item.coroutine:
            for arg in item.args:
                if _is_coroutine(arg):
                    arg.close()


_local = threading.local()


def invoke(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
    """Call ``fn(*args, **kwargs)``; if that gives a coroutine, run it to completion here.

    Used by every backend that runs sync code: an async task there runs on a private event
    loop. In a thread that already runs a loop, the coroutine runs in a helper thread
    instead, because a thread cannot run two loops.
    """
    result = fn(*args, **kwargs)
    if _is_coroutine(result):
        return run_coroutine(result)
    return result


def run_coroutine(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion on a private event loop, from sync code."""
    import asyncio  # imported on first use: it is most of a cold `import unirun`

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    # This thread already runs a loop (a Jupyter cell): use a short-lived helper thread.
    box: list[Any] = []

    def target() -> None:
        try:
            box.append((True, asyncio.run(coro)))
        except BaseException as exc:
            box.append((False, exc))

    helper = threading.Thread(target=target, name="unirun-private-loop")
    helper.start()
    helper.join()
    ok, value = box[0]
    if ok:
        return cast(T, value)
    raise value


TaskLike: TypeAlias = Callable[[], Awaitable[T]] | Callable[[], T] | Task[T] | Awaitable[T]
