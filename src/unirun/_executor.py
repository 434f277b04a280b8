"""The ``Executor`` protocol: exactly the surface ``concurrent.futures`` executors have.

Nothing is added to the stdlib surface, so a ``ThreadPoolExecutor``, loky's executor or
Dask's ``ClientExecutor`` is an ``Executor`` too and can be passed as ``mode=``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, ParamSpec, Protocol, TypeVar, runtime_checkable

if TYPE_CHECKING:
    from concurrent.futures import Future

    from typing_extensions import Self

__all__ = ["Executor"]

T = TypeVar("T")
P = ParamSpec("P")


@runtime_checkable
class Executor(Protocol):
    """What every backend implements: the stdlib executor surface.

    ``isinstance(obj, unirun.Executor)`` is true for any object with these methods.
    """

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        """Schedule ``fn(*args, **kwargs)`` and return a future for its result."""
        ...

    def map(
        self,
        fn: Callable[..., T],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
    ) -> Iterator[T]:
        """Like the builtin ``map``, run concurrently (``concurrent.futures`` semantics)."""
        ...

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Release the workers; with ``cancel_futures``, cancel what has not started."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> bool | None: ...
