"""One worker process as the parent sees it: its pipes, its jobs, starting and reaping it.

Each worker has three pipes::

    task pipe     parent (task_w, non-blocking) ==> worker      frames to run, CANCEL
    result pipe   worker ==> parent (result_r, non-blocking)    outcomes, READY, LOG
    lifeline      shared by every worker of a pool; the worker exits when it closes

The parent keeps a copy of the read end of each task pipe (``task_r``): the bytes still
unread there when a worker dies tell which queued task the worker never began
(``unread``, ``FIONREAD``).
"""

from __future__ import annotations

import array
import os
from collections import deque
from concurrent.futures import Future
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from typing import Any, Final

from unirun._tasks import Call

from ._worker import FrameReader, WorkerConfig, worker_main

__all__ = ["Job", "Worker", "launch", "unread"]


class Job:
    """One submitted call, from ``submit`` until its future is settled."""

    __slots__ = (
        "abandoned",
        "call",
        "future",
        "is_async",
        "offset",
        "payload",
        "running",
        "task_id",
        "worker",
    )

    def __init__(self, call: Call, future: Future[Any], payload: bytes, task_id: int) -> None:
        self.call = call
        self.future = future
        self.payload = payload
        self.task_id = task_id
        self.is_async = call.is_async
        self.worker: Worker | None = None
        self.offset = 0  # where its frame starts in the worker's task pipe stream
        self.running = False  # future.set_running_or_notify_cancel() was called
        self.abandoned = False  # nobody waits for it any more


class Worker:
    """One worker process and the parent's ends of its pipes."""

    __slots__ = (
        "completed",
        "dead",
        "dispatched",
        "eof_sent",
        "exitcode",
        "frames",
        "jobs",
        "kill_at",
        "killed",
        "out",
        "pid",
        "process",
        "queued",
        "ready",
        "result_r",
        "retiring",
        "sentinel",
        "task_r",
        "task_w",
        "wants_write",
        "written",
    )

    def __init__(self, process: Any, task_w: int, task_r: int, result_r: int) -> None:
        self.process = process
        self.pid: int = process.pid
        self.sentinel: int = process.sentinel
        self.task_w = task_w
        self.task_r = task_r  # the parent's copy of the worker's read end: see the docstring
        self.result_r = result_r
        self.frames = FrameReader()
        self.jobs: dict[int, Job] = {}
        self.out: deque[memoryview] = deque()
        self.queued = 0  # bytes handed to ``out`` so far
        self.written = 0  # bytes the kernel accepted so far
        self.wants_write = False
        self.ready = False
        self.dispatched = 0
        self.completed = 0
        self.retiring = False  # max_tasks_per_child reached: gets no more tasks
        self.kill_at: float | None = None  # SIGTERM sent; SIGKILL at this time
        self.killed = False  # stopped on purpose (interrupt, shutdown)
        self.eof_sent = False
        self.dead = False
        self.exitcode: int | None = None

    def consumed(self) -> int:
        """Bytes of the task pipe the worker read (before its fds are closed)."""
        return self.written - unread(self.task_r)

    def close(self) -> None:
        """Wait for the exited process, note its exit code, close the parent's fds."""
        self.process.join()
        self.exitcode = self.process.exitcode
        for fd in (self.result_r, self.task_r) + (() if self.eof_sent else (self.task_w,)):
            try:
                os.close(fd)
            except OSError:
                pass
        self.eof_sent = True
        self.process.close()


def launch(
    ctx: BaseContext,
    name: str,
    life_r: int,
    config: WorkerConfig,
    inherited: tuple[int, ...] | None,
) -> Worker:
    """Start one worker process.

    Args:
        ctx: The multiprocessing context.
        name: The process name.
        life_r: The read end of the pool's lifeline.
        config: What the worker needs besides its pipes.
        inherited: With ``fork``, the parent's fds the child inherits and must close (its
            own pipes' parent ends are added here); None otherwise.

    Raises:
        Exception: What ``Process.start`` raised; the new pipes are closed.
    """
    task_r, task_w = os.pipe()
    result_r, result_w = os.pipe()
    _widen(task_w)
    _widen(result_w)
    child_task = Connection(os.dup(task_r))
    child_result = Connection(result_w)
    child_life = Connection(os.dup(life_r))
    if inherited is not None:  # a forked child inherits every fd: give back the parent's ones
        config = config._replace(close_fds=(*inherited, task_w, task_r, result_r))
    process = ctx.Process(  # type: ignore[attr-defined]
        target=worker_main,
        args=(child_task, child_result, child_life, config),
        name=name,
        daemon=False,  # a task may start processes of its own (a nested run_all)
    )
    try:
        process.start()
    except Exception:
        for fd in (task_r, task_w, result_r):
            os.close(fd)
        raise
    finally:
        child_task.close()
        child_result.close()
        child_life.close()
    os.set_blocking(task_w, False)
    os.set_blocking(result_r, False)
    return Worker(process, task_w, task_r, result_r)


#: Pipe capacity asked for (Linux): a 4 MiB argument then crosses in 4 writes, not 64.
_PIPE_SIZE: Final = 1 << 20


def _widen(fd: int) -> None:
    """Grow a pipe's buffer to ``_PIPE_SIZE`` where the system allows it (Linux)."""
    try:
        import fcntl

        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)  # type: ignore[attr-defined,unused-ignore]
    except (ImportError, AttributeError, OSError):
        pass  # another OS, or above /proc/sys/fs/pipe-max-size: the default will do


def unread(fd: int) -> int:
    """Bytes written to a pipe and not read yet (``FIONREAD``)."""
    try:
        import fcntl
        import termios

        buf = array.array("i", [0])
        fcntl.ioctl(fd, termios.FIONREAD, buf, True)
        return buf[0]
    except (ImportError, OSError):
        return 0  # unknown: blame every task the worker had
