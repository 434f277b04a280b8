"""unirun's own errors.

The tree::

    Exception
     └── UnirunError
          ├── BackendUnavailableError   (also ImportError)
          ├── TaskTimeoutError          (also TimeoutError)
          ├── WorkerCrashedError        (also concurrent.futures.process.BrokenProcessPool)
          └── TaskSerializationError    (also pickle.PicklingError)

Each subclass also inherits what callers already catch, so ``except TimeoutError`` or
``except BrokenProcessPool`` keeps working when a stdlib executor is swapped for unirun.
A task's own exception is never wrapped in one of these: it reaches the caller unchanged.
"""

from __future__ import annotations

import pickle
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from concurrent.futures.process import BrokenProcessPool

__all__ = [
    "BackendUnavailableError",
    "TaskSerializationError",
    "TaskTimeoutError",
    "UnirunError",
    "WorkerCrashedError",
]

TimeoutAction = Literal["killed", "cancelled", "abandoned", "overran"]
SerializationPhase = Literal["argument", "argument-load", "result", "exception"]


class UnirunError(Exception):
    """Base class of unirun's own errors."""


class BackendUnavailableError(UnirunError, ImportError):
    """A backend cannot be used here: its package is missing, or the environment is unsafe.

    Attributes:
        backend: The mode name that was asked for.
        extra: The extra that installs what is missing (``"unirun[gevent]"``), if any.
    """

    def __init__(self, message: str, *, backend: str, extra: str | None = None) -> None:
        super().__init__(message)
        self.backend = backend
        self.extra = extra

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_unavailable, (str(self), self.backend, self.extra))


def _rebuild_unavailable(message: str, backend: str, extra: str | None) -> BackendUnavailableError:
    return BackendUnavailableError(message, backend=backend, extra=extra)


class TaskTimeoutError(UnirunError, TimeoutError):
    """A task ran longer than ``task_timeout``.

    Attributes:
        action: What unirun did about it: ``"killed"`` (its worker process was killed and
            replaced), ``"cancelled"`` (the coroutine or greenlet was cancelled, or the task
            never started), ``"abandoned"`` (a thread cannot be stopped: it runs on and its
            result is discarded) or ``"overran"`` (a backend that cannot interrupt, such as
            ``SerialBackend``, noticed only when the task returned).
        timeout: The limit that was passed, in seconds.
        task_index: The task's position in the batch, when known.
    """

    def __init__(
        self,
        message: str,
        *,
        action: TimeoutAction,
        timeout: float | None = None,
        task_index: int | None = None,
    ) -> None:
        super().__init__(message)
        self.action: TimeoutAction = action
        self.timeout = timeout
        self.task_index = task_index

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_timeout, (str(self), self.action, self.timeout, self.task_index))


def _rebuild_timeout(
    message: str, action: TimeoutAction, timeout: float | None, task_index: int | None
) -> TaskTimeoutError:
    return TaskTimeoutError(message, action=action, timeout=timeout, task_index=task_index)


def _define_worker_crashed() -> type[UnirunError]:
    # ``BrokenProcessPool`` lives in ``concurrent.futures.process``, which imports
    # ``multiprocessing``: a third of a cold ``import unirun``. The class is therefore
    # created on first use (PEP 562 ``__getattr__`` below and in ``unirun``).
    from concurrent.futures.process import BrokenProcessPool

    class WorkerCrashedError(UnirunError, BrokenProcessPool):
        """The worker process running a task died (segfault, ``os._exit``, OOM kill, ...).

        The backend replaces the worker; other tasks are not affected.

        A crash is not retried by ``retries`` unless the call asks for it with
        ``retry_crashes=True``.

        Attributes:
            exitcode: The worker's exit code; negative when a signal killed it (``-9``).
            pid: The worker's process id, when known.
            task_index: The task's position in the batch, when known.
            attempts: How many workers the task was tried on, each of which died (more
                than 1 only with ``retry_crashes=True``).
        """

        def __init__(
            self,
            message: str,
            *,
            exitcode: int | None = None,
            pid: int | None = None,
            task_index: int | None = None,
            attempts: int = 1,
        ) -> None:
            super().__init__(message)
            self.exitcode = exitcode
            self.pid = pid
            self.task_index = task_index
            self.attempts = attempts

        def __reduce__(self) -> tuple[object, ...]:
            return (
                _rebuild_crashed,
                (str(self), self.exitcode, self.pid, self.task_index, self.attempts),
            )

    WorkerCrashedError.__module__ = "unirun"
    WorkerCrashedError.__qualname__ = "WorkerCrashedError"
    return WorkerCrashedError


if TYPE_CHECKING:

    class WorkerCrashedError(UnirunError, BrokenProcessPool):
        exitcode: int | None
        pid: int | None
        task_index: int | None
        attempts: int

        def __init__(
            self,
            message: str,
            *,
            exitcode: int | None = None,
            pid: int | None = None,
            task_index: int | None = None,
            attempts: int = 1,
        ) -> None: ...


def __getattr__(name: str) -> Any:
    if name == "WorkerCrashedError":
        cls = _define_worker_crashed()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _rebuild_crashed(
    message: str,
    exitcode: int | None,
    pid: int | None,
    task_index: int | None,
    attempts: int = 1,
) -> WorkerCrashedError:
    cls: Any = globals().get("WorkerCrashedError") or __getattr__("WorkerCrashedError")
    return cls(  # type: ignore[no-any-return]
        message, exitcode=exitcode, pid=pid, task_index=task_index, attempts=attempts
    )


def is_worker_crash(exc: BaseException) -> bool:
    """Whether ``exc`` is a :class:`WorkerCrashedError`, without defining the class."""
    cls = globals().get("WorkerCrashedError")
    return cls is not None and isinstance(exc, cls)


class TaskSerializationError(UnirunError, pickle.PicklingError):
    """A task, its arguments, its result or its exception could not cross a process boundary.

    Attributes:
        phase: ``"argument"`` (pickling the call in the parent), ``"argument-load"``
            (unpickling it in the worker), ``"result"`` (pickling the return value in the
            worker) or ``"exception"`` (pickling the raised exception in the worker).
        task_index: The task's position in the batch, when known.
    """

    def __init__(
        self, message: str, *, phase: SerializationPhase, task_index: int | None = None
    ) -> None:
        super().__init__(message)
        self.phase: SerializationPhase = phase
        self.task_index = task_index

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_serialization, (str(self), self.phase, self.task_index))


def _rebuild_serialization(
    message: str, phase: SerializationPhase, task_index: int | None
) -> TaskSerializationError:
    return TaskSerializationError(message, phase=phase, task_index=task_index)
