"""The fault plan's task, in a module of its own: a worker process that runs it imports
only this (not pytest and Hypothesis, whose import under load can outlast the plan's
task_timeout and turn an instant task into a timeout)."""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any


class LockedError(Exception):
    """An exception that cannot be pickled (it holds a lock)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()


def act(i: int, action: str) -> Any:
    if action == "ok":
        return i * i
    if action == "raise":
        raise ValueError(f"planned failure {i}")
    if action == "exit":
        sys.exit(i + 10)
    if action == "unpicklable-result":
        return threading.Lock()
    if action == "unpicklable-error":
        raise LockedError(f"locked {i}")
    if action == "crash":
        os._exit(3)
    if action == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    if action == "hang":
        threading.Event().wait()  # in a worker process, which is killed
    raise AssertionError(action)
