"""Interpreter exit: finish the work of backends nobody shut down.

``concurrent.futures`` pools finish the tasks already submitted when the interpreter exits
without ``shutdown()``; ``ThreadBackend`` and ``ProcessBackend`` do the same, and so do the
backends registered here (dask, asyncio, gevent). The hook runs in
``threading._shutdown()``, as the stdlib pools' own: before ``atexit`` callbacks (Dask's
would close its cluster under running tasks) and while daemon threads, which run event
loops and private gevent hubs, still run (later, finalization freezes them mid-task).

Not when Ctrl-C ended the program: then it exits at once, whatever still runs.
"""

from __future__ import annotations

import logging
import sys
import threading
import weakref
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from ._base import BackendBase

__all__ = ["AT_EXIT", "ended_by_ctrl_c", "register_exit_hook"]

logger = logging.getLogger("unirun")


def ended_by_ctrl_c() -> bool:
    """Whether an uncaught ``KeyboardInterrupt`` ends the program (at exit)."""
    last = getattr(sys, "last_exc", None) or getattr(sys, "last_value", None)
    return isinstance(last, KeyboardInterrupt)


def register_exit_hook(hook: object) -> bool:
    """Run ``hook()`` in ``threading._shutdown()``; False when the interpreter already
    exits (too late to register)."""
    try:
        getattr(threading, "_register_atexit")(hook)  # noqa: B009 - private, as the stdlib's
    except RuntimeError:
        return False
    return True


class FinishAtExit:
    """Backends to shut down with ``wait=True`` at exit, unless already shut down.

    Each is asked through ``_finish_at_exit()``, which may decline (a warm default
    backend, shut down without waiting by ``unirun._warm`` instead).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._backends: weakref.WeakSet[BackendBase] = weakref.WeakSet()
        self._registered = False

    def add(self, backend: BackendBase) -> None:
        with self._lock:
            self._backends.add(backend)
            if self._registered:
                return
            self._registered = True
        register_exit_hook(self.finish_all)

    def finish_all(self) -> None:
        if ended_by_ctrl_c():
            return
        with self._lock:
            backends = list(self._backends)
        for backend in backends:
            try:
                backend._finish_at_exit()
            except Exception:  # one backend must not keep the others open
                logger.debug("unirun: could not shut %r down at exit", backend, exc_info=True)


AT_EXIT: Final = FinishAtExit()
