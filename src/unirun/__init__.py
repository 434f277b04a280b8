"""unirun: process, thread, coroutine or greenlet, as a parameter.

>>> import unirun
>>> unirun.run_all([lambda: 1, lambda: 2], mode="thread")
[1, 2]

Everything public is importable from here; the backends' classes are imported on first use
(PEP 562), so ``import unirun`` loads neither gevent nor dask and starts nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._errors import BackendUnavailableError as BackendUnavailableError
from ._errors import TaskSerializationError as TaskSerializationError
from ._errors import TaskTimeoutError as TaskTimeoutError
from ._errors import UnirunError as UnirunError
from ._executor import Executor as Executor
from ._options import using as using
from ._registry import BACKEND_CLASSES as _BACKEND_CLASSES
from ._registry import register_backend as register_backend
from ._tasks import Task as Task
from ._tasks import cpu_bound as cpu_bound
from ._tasks import io_bound as io_bound
from ._tasks import task as task

if TYPE_CHECKING:
    from ._backends._asyncio import AsyncioBackend as AsyncioBackend
    from ._backends._dask import DaskBackend as DaskBackend
    from ._backends._gevent import GeventBackend as GeventBackend
    from ._backends._process import ProcessBackend as ProcessBackend
    from ._backends._serial import SerialBackend as SerialBackend
    from ._backends._thread import ThreadBackend as ThreadBackend
    from ._choose import Choice as Choice
    from ._choose import choose_backend as choose_backend
    from ._errors import WorkerCrashedError as WorkerCrashedError
    from ._run import amap as amap
    from ._run import arun_all as arun_all
    from ._run import executor as executor
    from ._run import imap as imap
    from ._run import map as map
    from ._run import run_all as run_all
    from ._shared import Shared as Shared
    from ._shared import shared as shared

__version__ = "0.1.0.dev0"

__all__ = [
    "AsyncioBackend",
    "BackendUnavailableError",
    "Choice",
    "DaskBackend",
    "Executor",
    "GeventBackend",
    "ProcessBackend",
    "SerialBackend",
    "Shared",
    "Task",
    "TaskSerializationError",
    "TaskTimeoutError",
    "ThreadBackend",
    "UnirunError",
    "WorkerCrashedError",
    "amap",
    "arun_all",
    "choose_backend",
    "cpu_bound",
    "executor",
    "imap",
    "io_bound",
    "map",
    "register_backend",
    "run_all",
    "shared",
    "task",
    "using",
]


#: Public names loaded on first use, by module: the front door (the engine is half of a
#: cold ``import unirun``, and a worker process, which imports the package too, never
#: needs it), the picker of auto mode, and shared memory (it imports multiprocessing).
_LAZY: dict[str, str] = {
    **dict.fromkeys(("amap", "arun_all", "executor", "imap", "map", "run_all"), "_run"),
    **dict.fromkeys(("Choice", "choose_backend"), "_choose"),
    **dict.fromkeys(("Shared", "shared"), "_shared"),
}


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is not None:
        import importlib

        module = importlib.import_module(f".{module_name}", __name__)
        for public, home in _LAZY.items():
            if home == module_name:
                value: Any = getattr(module, public)
                value.__module__ = "unirun"
                globals()[public] = value
        return globals()[name]
    if name == "WorkerCrashedError":  # made on first use: it imports multiprocessing
        from . import _errors

        cls: Any = _errors.WorkerCrashedError
        globals()[name] = cls
        return cls
    mode = _BACKEND_CLASSES.get(name)
    if mode is None:
        raise AttributeError(f"module 'unirun' has no attribute {name!r}")
    from ._registry import backend_class

    backend = backend_class(mode)
    globals()[name] = backend
    return backend


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def _set_public_module() -> None:
    for name in __all__:
        obj = globals().get(name)
        if obj is not None and getattr(obj, "__module__", "").startswith("unirun."):
            try:
                obj.__module__ = "unirun"
            except (AttributeError, TypeError):
                pass


_set_public_module()
