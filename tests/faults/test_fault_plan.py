"""#50 The fault-plan property: for any plan of per-task faults, the outcomes match the plan.

Hypothesis draws a list of actions, one per task, from those that apply to the backend;
``act(i, action)`` (module level, so it pickles) carries each out. Only the plan is random,
never the timing. Invariants checked for every plan: one outcome per input, in input
order, each the one the action calls for; the same executor then runs the next plan (it
stayed usable); nothing leaks (the autouse ``no_leaks`` fixture, over the whole test).
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import unirun
from tests.faults.plan_tasks import LockedError, act
from unirun import TaskSerializationError, TaskTimeoutError, WorkerCrashedError
from unirun._backends._base import BackendBase

#: What each mode can be asked to do. "hang" blocks until task_timeout stops it.
ACTIONS: dict[str, list[str]] = {
    "serial": ["ok", "raise", "exit", "unpicklable-result", "unpicklable-error"],
    "thread": ["ok", "raise", "exit", "unpicklable-result", "unpicklable-error", "hang"],
    "process": [
        "ok",
        "raise",
        "exit",
        "unpicklable-result",
        "unpicklable-error",
        "hang",
        "crash",
        "sigkill",
    ],
    "asyncio": ["ok", "raise", "exit", "unpicklable-result", "unpicklable-error", "hang"],
    "gevent": ["ok", "raise", "exit", "unpicklable-result", "unpicklable-error", "hang"],
    "dask": ["ok", "raise", "exit", "unpicklable-result", "unpicklable-error"],
}
#: What a timed-out task's TaskTimeoutError.action says, per mode.
HANG_ACTION = {
    "thread": "abandoned",
    "process": "killed",
    "asyncio": "cancelled",
    "gevent": "cancelled",
}
TASK_TIMEOUT = 0.5


class _Gate:
    """Thread-mode hangs block here until the example is over (then they are released)."""

    event = threading.Event()


def thread_hang() -> None:
    _Gate.event.wait()  # abandoned, then released after the example


async def async_hang() -> None:
    import asyncio

    await asyncio.sleep(60)


def gevent_hang() -> None:
    import gevent

    gevent.sleep(60)


def make_task(mode: str, i: int, action: str) -> Any:
    if action == "hang" and mode == "asyncio":
        return unirun.task(async_hang)
    if action == "hang" and mode == "gevent":
        return unirun.task(gevent_hang)
    if action == "hang" and mode == "thread":
        return unirun.task(thread_hang)
    return unirun.task(act, i, action)


def check(mode: str, i: int, action: str, outcome: object) -> None:
    """Assert that ``outcome`` is what ``action`` calls for on ``mode``."""
    remote = mode in ("process", "dask")
    if action == "ok":
        assert outcome == i * i
    elif action == "raise":
        assert isinstance(outcome, ValueError)
        assert str(outcome) == f"planned failure {i}"
    elif action == "exit":
        assert isinstance(outcome, SystemExit)
        assert outcome.code == i + 10
    elif action == "unpicklable-result":
        if remote:
            assert isinstance(outcome, TaskSerializationError)
        else:
            assert type(outcome) is type(threading.Lock())
    elif action == "unpicklable-error":
        if remote:
            assert isinstance(outcome, TaskSerializationError)
            assert "LockedError" in str(outcome)
            assert f"locked {i}" in str(outcome)
        else:
            assert isinstance(outcome, LockedError)
    elif action == "crash":
        assert isinstance(outcome, WorkerCrashedError)
        assert outcome.exitcode == 3
    elif action == "sigkill":
        assert isinstance(outcome, WorkerCrashedError)
        assert outcome.exitcode == -signal.SIGKILL
    elif action == "hang":
        assert isinstance(outcome, TaskTimeoutError)
        assert outcome.action == HANG_ACTION[mode]
    else:  # pragma: no cover
        raise AssertionError(action)


@pytest.fixture(scope="module", autouse=True)
def _forkserver_started() -> None:
    """Start the forkserver and resource tracker before the leak check's baseline: they
    live for the rest of the session (their pipes are not a leak of the first test)."""
    if sys.platform.startswith("linux"):
        from multiprocessing import forkserver, resource_tracker

        forkserver.ensure_running()
        resource_tracker.ensure_running()


def _plans(mode: str) -> st.SearchStrategy[list[str]]:
    return st.lists(st.sampled_from(ACTIONS[mode]), min_size=0, max_size=8)


@pytest.mark.timeout(300)
def test_outcomes_match_the_fault_plan(backend: BackendBase, mode: str) -> None:
    @settings(
        max_examples=15,
        deadline=None,
        database=None,
        # no shrinking: a plan that hangs would be re-run many times, each up to the bound
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(plan=_plans(mode))
    def run_plan(plan: list[str]) -> None:
        tasks = [make_task(mode, i, action) for i, action in enumerate(plan)]
        hangs = "hang" in plan
        _Gate.event = threading.Event()
        try:
            out: list[Any] = backend.run_all(
                tasks,
                return_exceptions=True,
                task_timeout=TASK_TIMEOUT if hangs else None,
                timeout=30,  # a bound on the example: a hang here fails it, loudly
            )
        finally:
            _Gate.event.set()
        assert len(out) == len(plan)
        for i, (action, outcome) in enumerate(zip(plan, out, strict=True)):
            check(mode, i, action, outcome)

    run_plan()
    assert backend.run_all([unirun.task(act, 3, "ok")]) == [9]  # still usable


@pytest.mark.parametrize(
    "mode",
    [
        "serial",
        "thread",
        "process",
        "asyncio",
        "gevent",
        "dask",
    ],
)
def test_system_exit_code_survives(backend: BackendBase) -> None:
    out: list[Any] = backend.run_all([unirun.task(act, 2, "exit")], return_exceptions=True)
    assert isinstance(out[0], SystemExit)
    assert out[0].code == 12


@pytest.mark.parametrize(
    "mode",
    ["process", "dask"],
)
def test_unpicklable_exception_keeps_its_message(backend: BackendBase) -> None:
    out: list[Any] = backend.run_all(
        [unirun.task(act, 4, "unpicklable-error")], return_exceptions=True
    )
    assert isinstance(out[0], TaskSerializationError)
    assert "locked 4" in str(out[0])
    assert "in act" in str(out[0].__cause__)  # the task's own frames
