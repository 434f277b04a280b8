"""L6, smaller: many per-task timeouts in a row on one executor.

50 process tasks killed (each worker killed and replaced), 50 thread tasks abandoned (then
released: the count of abandoned threads must come back to 0), 50 coroutines and 50
greenlets cancelled. Ordinary tasks in between must still get their results, and nothing
may be left behind (the autouse ``no_leaks`` fixture).
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import psutil
import pytest

import unirun
from tests.helpers import add
from unirun import AsyncioBackend, ProcessBackend, TaskTimeoutError, ThreadBackend

N = 50
TASK_TIMEOUT = 0.3
#: A bound on a whole storm: 25 pairs of 0.3 s timeouts are 7.5 s of waiting, plus kills and
#: replacements (about 10 s for processes on this 2-core box); 4x slack for a busy machine.
STORM_BOUND = 40
#: Threads need no process start-up: half of it.
THREAD_STORM_BOUND = 20


def block_forever() -> None:
    threading.Event().wait()


@pytest.fixture(scope="module", autouse=True)
def _forkserver_started() -> None:
    """The forkserver and resource tracker live for the session: start them before the
    leak check's baseline."""
    if sys.platform.startswith("linux"):
        from multiprocessing import forkserver, resource_tracker

        forkserver.ensure_running()
        resource_tracker.ensure_running()


def _interleaved(stuck: Any) -> Iterator[Any]:
    for i in range(N):
        yield stuck
        yield unirun.task(add, i, 1)


def _check_storm(out: list[Any], action: str) -> None:
    assert len(out) == 2 * N
    stuck, ok = out[0::2], out[1::2]
    assert ok == [i + 1 for i in range(N)]
    for error in stuck:
        assert isinstance(error, TaskTimeoutError), error
        assert error.action == action


@pytest.mark.timeout(240)
def test_fifty_process_timeouts_kill_and_replace_workers() -> None:
    me = psutil.Process()
    with ProcessBackend(max_workers=2) as ex:
        start = time.monotonic()
        out = ex.run_all(
            _interleaved(unirun.task(block_forever)),
            task_timeout=TASK_TIMEOUT,
            return_exceptions=True,
        )
        elapsed = time.monotonic() - start
        _check_storm(out, "killed")
        assert elapsed < STORM_BOUND
        assert ex.run_all([unirun.task(add, 1, 1)] * 4) == [2] * 4
        # no killed worker lingers: at most the pool's own workers are alive (zombies aside)
        deadline = time.monotonic() + 5
        while True:
            workers = [
                c
                for c in me.children(recursive=True)
                if c.status() != psutil.STATUS_ZOMBIE
                and "forkserver" not in " ".join(c.cmdline())
                and "resource_tracker" not in " ".join(c.cmdline())
            ]
            if len(workers) <= 2 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert len(workers) <= 2, workers


@pytest.mark.timeout(120)
def test_fifty_thread_timeouts_are_abandoned_then_released() -> None:
    gate = threading.Event()
    with ThreadBackend(max_workers=2) as ex:
        start = time.monotonic()
        try:
            out = ex.run_all(
                _interleaved(unirun.task(gate.wait)),
                task_timeout=TASK_TIMEOUT,
                timeout=THREAD_STORM_BOUND,  # the bound: a stall fails here, not at the backstop
                return_exceptions=True,
            )
        except TimeoutError:
            gate.set()  # let the abandoned threads end before the leak check
            raise
        elapsed = time.monotonic() - start
        _check_storm(out, "abandoned")
        assert elapsed < THREAD_STORM_BOUND
        assert len(ex._abandoned) == N  # every stuck thread still runs, counted apart
        assert ex.run_all([unirun.task(add, 2, 2)] * 4) == [4] * 4  # replacements serve
        gate.set()
        deadline = time.monotonic() + 10
        while ex._abandoned and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(ex._abandoned) == 0
        assert ex._serving <= 2


async def wait_long(finished: list[int], i: int) -> None:
    import asyncio

    try:
        await asyncio.sleep(60)
    finally:
        finished.append(i)


@pytest.mark.timeout(120)
def test_fifty_coroutine_timeouts_are_cancelled() -> None:
    cleaned: list[int] = []
    with AsyncioBackend(max_workers=4) as ex:
        out = ex.run_all(
            _interleaved_async(cleaned), task_timeout=TASK_TIMEOUT, return_exceptions=True
        )
        _check_storm(out, "cancelled")
    # every finally block ran, by the end of shutdown (the outcome is delivered as the
    # cancellation is asked for, not once the coroutine has unwound)
    assert sorted(cleaned) == list(range(N))


def _interleaved_async(cleaned: list[int]) -> Iterator[Any]:
    for i in range(N):
        yield unirun.task(wait_long, cleaned, i)
        yield unirun.task(add, i, 1)


def gevent_wait_long() -> None:
    import gevent

    gevent.sleep(60)


@pytest.mark.timeout(120)
def test_fifty_greenlet_timeouts_are_cancelled() -> None:
    pytest.importorskip("gevent")
    from unirun import GeventBackend

    with GeventBackend(max_workers=4) as ex:
        out = ex.run_all(
            _interleaved(unirun.task(gevent_wait_long)),
            task_timeout=TASK_TIMEOUT,
            return_exceptions=True,
        )
        _check_storm(out, "cancelled")


async def block_the_loop() -> str:
    time.sleep(1.0)  # not awaited: the event loop itself is blocked
    return "done"


async def quick() -> str:
    import asyncio

    await asyncio.sleep(0.01)
    return "sibling"


def test_coroutine_blocking_the_loop_is_reported(caplog: pytest.LogCaptureFixture) -> None:
    """FAULTS #15: the timeout cannot land while the loop is blocked; the slot says so
    ("abandoned": it ran on, its result discarded), a warning names the task and how long
    it blocked the loop, and the sibling still gets its result."""
    import warnings

    start = time.monotonic()
    with (
        caplog.at_level(logging.WARNING, logger="unirun"),
        AsyncioBackend(max_workers=4) as ex,
        warnings.catch_warnings(record=True) as caught,
    ):
        warnings.simplefilter("always")
        out: list[Any] = ex.run_all(
            [unirun.task(block_the_loop), unirun.task(quick)],
            task_timeout=TASK_TIMEOUT,
            return_exceptions=True,
        )
    elapsed = time.monotonic() - start
    said = caplog.text + " ".join(str(w.message) for w in caught)
    assert "block" in said, "nothing says the coroutine blocked the event loop"
    assert re.search(r"block_the_loop\b.* blocked the event loop of .* for 1\.\d s", said), said
    assert out[1] == "sibling"
    assert isinstance(out[0], TaskTimeoutError)
    assert out[0].action == "abandoned"
    assert elapsed < 4
