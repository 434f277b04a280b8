"""SerialBackend: one task at a time, in the caller's thread, for debugging with pdb."""

from __future__ import annotations

import contextvars
from concurrent.futures import Future
from typing import Any, ClassVar

from unirun._tasks import Call
from unirun._warm import run_nested

from ._base import BackendBase

__all__ = ["SerialBackend"]


class SerialBackend(BackendBase):
    """Runs each task to completion inside ``submit``, in the caller's thread.

    Use it to debug with ``pdb`` or to get plain tracebacks. It cannot interrupt a task:
    ``timeout`` and ``task_timeout`` are checked between tasks, and a task that overran
    gets ``TaskTimeoutError(action="overran")`` when it returns. Async tasks run on a
    private event loop (in a helper thread when the caller's thread already runs one).

    ``KeyboardInterrupt`` is not captured as a task's outcome: in the caller's thread a
    task's own ``KeyboardInterrupt`` and the user's Ctrl-C cannot be told apart, and
    Ctrl-C must stop the run.

    Args:
        max_workers: ``None`` or ``1``; anything else is a ``ValueError``.
    """

    mode: ClassVar[str] = "serial"
    capabilities: ClassVar[frozenset[str]] = frozenset({"coroutines", "coroutine-objects"})

    def __init__(self, max_workers: int | None = None) -> None:
        super().__init__(max_workers)
        if max_workers not in (None, 1):
            raise ValueError(
                f"SerialBackend runs one task at a time: max_workers must be None or 1, "
                f"got {max_workers!r}; use mode='thread' or 'process' for more"
            )

    def _default_window(self) -> int:
        return 1

    def _submit(self, call: Call) -> Future[Any]:
        future: Future[Any] = Future()
        future.set_running_or_notify_cancel()
        try:
            result = contextvars.copy_context().run(run_nested, call)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:
            future.set_exception(exc)
        else:
            future.set_result(result)
        return future

    def _shutdown_workers(self, wait: bool, cancel_futures: bool) -> None:
        return None
