"""Module-level task functions for the tests (importable, so they pickle by reference)."""

from __future__ import annotations

import os
import sys
import time
from typing import Any


def add(x: int, y: int) -> int:
    return x + y


def identity(x: Any) -> Any:
    return x


def boom(message: str = "boom") -> None:
    raise ValueError(message)


def sleep_then(seconds: float, value: Any) -> Any:
    time.sleep(seconds)
    return value


async def async_add(x: int, y: int) -> int:
    import asyncio

    await asyncio.sleep(0)
    return x + y


async def async_fail_on(x: int, bad: int) -> int:
    import asyncio

    await asyncio.sleep(0)
    if x == bad:
        raise ValueError(f"bad input {x}")
    return 2 * x


class FalseyError(Exception):
    def __bool__(self) -> bool:
        return False


def raise_falsey() -> None:
    raise FalseyError("falsey")


def do_exit(code: int) -> None:
    sys.exit(code)


def fail_times(path: str, failures: int) -> str:
    """Fail ``failures`` times (counted in a file, so it works across processes)."""
    try:
        with open(path) as f:
            count = int(f.read())
    except FileNotFoundError:
        count = 0
    count += 1
    with open(path, "w") as f:
        f.write(str(count))
    if count <= failures:
        raise RuntimeError(f"attempt {count}")
    return f"ok after {count}"


def getpid() -> int:
    return os.getpid()


# -- process mode ------------------------------------------------------------------------


_LINUX = sys.platform.startswith("linux")


def start_process_helpers() -> None:
    """Start multiprocessing's forkserver (and its resource tracker) once per test session.

    They live as long as the test process and hold two file descriptors; starting them
    before any test's leak check counts keeps the first process-mode test from being
    blamed for them ("after the forkserver/resource-tracker warm-up", FAULTS.md).
    """
    import multiprocessing

    # not in worker processes, which import this module to run its functions
    main = multiprocessing.parent_process() is None
    if main and multiprocessing.current_process().name == "MainProcess" and _LINUX:
        from multiprocessing import forkserver

        forkserver.ensure_running()


start_process_helpers()  # at import: the contract modules import this file at collection


def fail_on(x: int, bad: int) -> int:
    """``x * 2``, except ``ValueError`` for ``x == bad``."""
    if x == bad:
        raise ValueError(f"bad input {x}")
    return x * 2


def die_on(x: int, bad: int) -> int:
    """``x * 2``, except that the worker process dies for ``x == bad``."""
    if x == bad:
        os._exit(7)
    return x * 2


class Payload:
    """A plain object, to watch with a weakref."""


def make_payload(arg: object) -> Payload:
    return Payload()
