"""What is specific to SerialBackend: ``map`` runs slices in the caller's thread.

The contract suite covers results, order and errors; these pin down what the serial fast
path of ``unirun.map`` must keep from the general one.
"""

from __future__ import annotations

import contextvars
import threading
import time
from typing import Any

import pytest

import unirun
from unirun import SerialBackend

seen: list[int] = []
var: contextvars.ContextVar[int] = contextvars.ContextVar("var", default=0)


def record(x: int) -> int:
    seen.append(x)
    if x == 3:
        raise ValueError("three")
    return x


def interrupt(x: int) -> int:
    if x == 2:
        raise KeyboardInterrupt
    return x


def set_and_get(x: int) -> int:
    before = var.get()
    var.set(x)
    return before


def sleepy(x: int) -> int:
    time.sleep(0.05)
    return x


def thread_id(_: int) -> int:
    return threading.get_ident()


@pytest.fixture(autouse=True)
def _clear() -> None:
    seen.clear()


def test_map_stops_at_the_first_failure() -> None:
    with pytest.raises(ValueError, match="three") as info:
        unirun.map(record, range(100), mode="serial")
    assert seen == [0, 1, 2, 3]  # no task starts after the failure
    assert "task 3" in " ".join(getattr(info.value, "__notes__", []))


def test_map_return_exceptions_runs_every_task() -> None:
    out: list[Any] = unirun.map(record, range(6), mode=SerialBackend(), return_exceptions=True)
    assert seen == list(range(6))
    assert out[:3] == [0, 1, 2]
    assert out[4:] == [4, 5]
    assert isinstance(out[3], ValueError)


def test_keyboard_interrupt_in_a_map_task_stops_the_run() -> None:
    with pytest.raises(KeyboardInterrupt):
        unirun.map(interrupt, range(5), mode="serial", return_exceptions=True)


def test_each_task_has_a_context_of_its_own() -> None:
    assert unirun.map(set_and_get, range(1, 5), mode="serial") == [0, 0, 0, 0]
    assert var.get() == 0


def test_map_runs_in_the_callers_thread() -> None:
    assert set(unirun.map(thread_id, range(10), mode="serial")) == {threading.get_ident()}


def test_whole_call_timeout_is_checked_between_tasks() -> None:
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        unirun.map(sleepy, range(100), mode="serial", timeout=0.2)
    assert time.monotonic() - start < 2  # not the 5 s the whole input would take
