"""Checking options, and the ambient defaults of ``unirun.using()``.

Every check raises before anything runs, with a message that names the value and the fix.
"""

from __future__ import annotations

import contextvars
import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import MappingProxyType
from typing import Any, Final

__all__ = [
    "RUN_OPTIONS",
    "ambient",
    "check_max_workers",
    "check_run_options",
    "check_timeout",
    "using",
]

#: Options that shape a call (the rest configure the backend that runs it).
RUN_OPTIONS: Final = frozenset(
    {
        "hint",
        "timeout",
        "task_timeout",
        "return_exceptions",
        "retries",
        "retry_crashes",
        "progress",
        "max_in_flight",
        "chunksize",
    }
)


def check_positive_int(name: str, value: object, *, allow_none: bool = True) -> None:
    """Raise unless ``value`` is an int >= 1 (``bool`` is refused though it is an int)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int >= 1 or None, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be greater than 0, got {value!r}")


def check_max_workers(value: object) -> None:
    """``max_workers`` is None or an int >= 1."""
    check_positive_int("max_workers", value)


def check_timeout(name: str, value: object) -> None:
    """A timeout is None or a finite number >= 0 (seconds)."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds or None, got {value!r}")
    if math.isnan(value) or value < 0:
        raise ValueError(f"{name} must be >= 0 seconds, got {value!r}")


_ambient: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "unirun_ambient", default=MappingProxyType({})
)


def ambient() -> Mapping[str, Any]:
    """The defaults set by the innermost ``using()`` (``"mode"`` and options)."""
    return _ambient.get()


@contextmanager
def using(mode: object = None, **options: Any) -> Iterator[None]:
    """Set the default mode and options for calls that leave them out.

    Inside the block, ``run_all``, ``map``, ``imap``, ``arun_all``, ``amap`` and
    ``executor`` take ``mode`` and any option they are not given from here. An explicit
    argument always wins, ``mode="auto"`` included. Blocks nest (inner values override
    outer ones). The defaults live in a context variable, so tasks that unirun starts
    inside the block (thread tasks, async tasks) see them too.

    Args:
        mode: A mode name or an ``Executor`` instance; None keeps the outer default.
        **options: Any option of ``run_all`` or of the backend's constructor
            (``max_workers``, ``address``, ...). Backend options are passed only to
            backends whose constructor accepts them.

    Example:
        >>> import unirun
        >>> with unirun.using("thread", max_workers=4):
        ...     unirun.run_all([lambda: 1])
        [1]
    """
    if mode is not None and not isinstance(mode, str):
        from ._executor import Executor

        if not isinstance(mode, Executor):
            raise TypeError(f"using() takes a mode name or an Executor, got {mode!r}")
    if isinstance(mode, str):
        from ._registry import check_mode

        check_mode(mode)
    check_run_options(options)
    merged = dict(_ambient.get())
    if mode is not None:
        merged["mode"] = mode
    merged.update(options)
    token = _ambient.set(merged)
    try:
        yield
    finally:
        _ambient.reset(token)


def check_run_options(options: Mapping[str, Any]) -> None:
    """Raise for a bad value of any run option present in ``options``."""
    from ._tasks import check_hint

    if "hint" in options:
        check_hint(options["hint"])
    for name in ("timeout", "task_timeout"):
        if name in options:
            check_timeout(name, options[name])
    if "max_workers" in options:
        check_max_workers(options["max_workers"])
    if "max_in_flight" in options:
        check_positive_int("max_in_flight", options["max_in_flight"])
    if "retries" in options:
        retries = options["retries"]
        if isinstance(retries, bool) or not isinstance(retries, int):
            raise TypeError(f"retries must be an int >= 0, got {retries!r}")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries!r}")
    if "retry_crashes" in options and not isinstance(options["retry_crashes"], bool):
        raise TypeError(f"retry_crashes must be True or False, got {options['retry_crashes']!r}")
    if "chunksize" in options:
        chunksize = options["chunksize"]
        if chunksize != "auto":
            check_positive_int("chunksize", chunksize, allow_none=False)
