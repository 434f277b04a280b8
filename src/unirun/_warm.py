"""Warm default backends: what ``run_all(mode="process")`` reuses between calls.

One object owns them (:data:`WARM`); it creates each backend on first use, keyed by mode,
options and nesting depth, and shuts all of them down at interpreter exit. After a
``fork()`` the child drops the parent's backends instead of using their workers.

Nesting: a ``run_all`` inside a task must not queue behind the outer tasks that wait for it
(a starvation deadlock), so calls made from inside a unirun task get backends of their own
(depth 1); deeper calls run serially, which bounds the threads and processes one program
can start (loky and joblib bound nesting in the same spirit).
"""

from __future__ import annotations

import atexit
import contextvars
import os
import threading
from collections.abc import Hashable, Mapping
from typing import Any, Final

from ._executor import Executor
from ._registry import factory_for

__all__ = ["MAX_DEPTH", "WARM", "nesting_depth"]

#: Calls nested deeper than this run on the serial backend.
MAX_DEPTH: Final = 1

#: How many unirun tasks enclose the current code (0 in the application itself).
nesting_depth: contextvars.ContextVar[int] = contextvars.ContextVar("unirun_depth", default=0)


def _freeze(value: Any) -> Hashable:
    try:
        hash(value)
    except TypeError:
        return ("id", id(value))
    return value  # type: ignore[no-any-return]


class WarmBackends:
    """The default backends that module-level calls share."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._backends: dict[Hashable, Executor] = {}
        self._atexit_registered = False

    def get(self, mode: str, options: Mapping[str, Any]) -> tuple[Executor, str]:
        """The warm backend for ``mode`` and ``options``, and the mode it really is."""
        depth = nesting_depth.get()
        if depth > MAX_DEPTH and mode != "serial":
            mode, options = "serial", {}
        key = (mode, depth, tuple(sorted((k, _freeze(v)) for k, v in options.items())))
        with self._lock:
            backend = self._backends.get(key)
            if backend is None or getattr(backend, "_is_shutdown", False):
                backend = factory_for(mode)(**options)
                self._backends[key] = backend
                if not self._atexit_registered:
                    atexit.register(self.shutdown_all, wait=False)
                    self._atexit_registered = True
        return backend, mode

    def owns(self, backend: object) -> bool:
        """Whether ``backend`` is one of the warm default backends."""
        with self._lock:
            return any(b is backend for b in self._backends.values())

    def shutdown_all(self, wait: bool = True) -> None:
        """Shut every warm backend down, cancelling what has not started.

        At interpreter exit this does not wait: a task that still runs there was abandoned
        (Ctrl-C, a timeout) and may never return, and waiting for it would hang the exit.
        Daemon worker threads end with the interpreter; worker processes are told to stop
        and see their parent's pipe close.
        """
        with self._lock:
            backends = list(self._backends.values())
            self._backends.clear()
        for backend in backends:
            backend.shutdown(wait=wait, cancel_futures=True)

    def _forget_after_fork(self) -> None:
        # The child must not touch the parent's worker threads or processes.
        self._lock = threading.Lock()
        self._backends = {}


WARM: Final = WarmBackends()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=WARM._forget_after_fork)


def run_nested(call: Any) -> Any:
    """Run ``call`` one nesting level deeper (workers call this inside a copied context)."""
    token = nesting_depth.set(nesting_depth.get() + 1)
    try:
        return call.run()
    finally:
        nesting_depth.reset(token)
