"""#37 KeyboardInterrupt raised inside a task, on every backend; #38 SIGTERM to the parent
while process workers run; #9 a thread initializer that raises."""

from __future__ import annotations

import signal
import time
from concurrent.futures.thread import BrokenThreadPool
from typing import Any, NoReturn

import psutil
import pytest

import unirun
from tests.faults.harness import run_script
from tests.helpers import add
from unirun._backends._base import BackendBase


def raise_keyboard_interrupt() -> NoReturn:
    raise KeyboardInterrupt("raised by the task itself")


@pytest.mark.parametrize("mode", ["thread", "process", "asyncio", "gevent", "dask"])
def test_keyboard_interrupt_raised_by_a_task_is_its_outcome(backend: BackendBase) -> None:
    """Not Ctrl-C: that task's outcome, bare; the others finish; the executor goes on."""
    out: list[Any] = backend.run_all(
        [unirun.task(raise_keyboard_interrupt), unirun.task(add, 1, 2)], return_exceptions=True
    )
    assert type(out[0]) is KeyboardInterrupt
    assert out[1] == 3
    with pytest.raises(KeyboardInterrupt):  # raised unchanged, never wrapped
        backend.run_all([unirun.task(raise_keyboard_interrupt)])
    assert backend.run_all([unirun.task(add, 2, 2)]) == [4]


def test_keyboard_interrupt_raised_by_a_serial_task_stops_the_run() -> None:
    """Serial runs tasks in the caller's thread, where a task's KeyboardInterrupt and a
    Ctrl-C cannot be told apart: it stops the run (documented), bare."""
    ran: list[int] = []
    with unirun.SerialBackend() as ex, pytest.raises(KeyboardInterrupt):
        ex.run_all(
            [unirun.task(raise_keyboard_interrupt), lambda: ran.append(1)],
            return_exceptions=True,
        )
    assert ran == []


SIGTERM = """
import os, signal, threading, time, tempfile, pathlib, unirun
from tests.faults.test_process_faults import pid_then_block
d = pathlib.Path(tempfile.mkdtemp())
paths = [d / f"p{i}" for i in range(2)]
def terminate():
    while not all(p.exists() and p.read_text() for p in paths):
        time.sleep(0.01)
    print("PIDS", *[p.read_text() for p in paths], flush=True)
    os.kill(os.getpid(), signal.SIGTERM)  # the parent only, as a service manager does
threading.Thread(target=terminate, daemon=True).start()
unirun.run_all([unirun.task(pid_then_block, str(p)) for p in paths], mode="process",
               max_workers=2)
"""


def test_sigterm_to_the_parent_leaves_no_worker() -> None:
    """Python's default SIGTERM ends the parent at once (no ``finally``, no atexit: unirun
    installs no handler, as a library should not); the workers notice and exit."""
    done = run_script(SIGTERM, timeout=30)
    assert done.returncode == -signal.SIGTERM, done.stderr
    pids = [int(p) for p in done.stdout.split("PIDS", 1)[1].split()]
    deadline = time.monotonic() + 5
    alive = pids
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if _alive(p)]
        time.sleep(0.02)
    assert not alive, f"workers {alive} outlived a SIGTERMed parent"


def _alive(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def _failing_initializer() -> None:
    raise RuntimeError("bad init")


def test_thread_initializer_that_raises_breaks_the_pool_promptly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ex = unirun.ThreadBackend(max_workers=2, initializer=_failing_initializer)
    try:
        start = time.monotonic()
        # the initializer fails in the worker threads while the run submits: each task
        # still gets one outcome, BrokenThreadPool (in its slot, or raised by the submit
        # that found the pool broken, as process mode's run fails fast)
        out: list[Any]
        try:
            out = ex.run_all([unirun.task(add, i, i) for i in range(6)], return_exceptions=True)
        except BrokenThreadPool as exc:
            out = [exc] * 6
        assert len(out) == 6
        assert all(isinstance(o, BrokenThreadPool) for o in out), out
        assert all("initializer" in str(o) for o in out), out
        assert time.monotonic() - start < 10
        with pytest.raises(BrokenThreadPool):
            ex.submit(add, 1, 1)
    finally:
        ex.shutdown(wait=True)
    assert "bad init" in caplog.text  # the initializer's traceback is logged
