"""``run_all(mode="auto")``: measured routing, kept probe results, mixed batches."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import unirun
from tests.helpers import add, getpid
from unirun._errors import BackendUnavailableError
from unirun._registry import factory_for


def _importable(mode: str) -> bool:
    try:
        factory_for(mode)
    except (BackendUnavailableError, ModuleNotFoundError):
        return False
    return True


def needs(*modes: str) -> pytest.MarkDecorator:
    missing = [m for m in modes if not _importable(m)]
    return pytest.mark.skipif(bool(missing), reason=f"backend(s) {missing} not available")


def spin(n: int) -> int:
    total = 0
    for i in range(n):
        total += i
    return total


def spin_pid(n: int) -> int:
    spin(n)
    return os.getpid()


def nap(seconds: float, value: Any) -> Any:
    time.sleep(seconds)
    return value


async def fetch(value: int) -> int:
    await asyncio.sleep(0.01)
    return value


class Counter:
    """Counts calls per key, from any thread (in this process)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: dict[int, int] = {}

    def hit(self, key: int, seconds: float = 0.0) -> int:
        with self.lock:
            self.calls[key] = self.calls.get(key, 0) + 1
        if seconds:
            time.sleep(seconds)
        return key


@pytest.fixture
def unirun_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.INFO, logger="unirun"):
        yield caplog


def _decisions(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "from task" in r.getMessage()]


# -- measurement ---------------------------------------------------------------------------


def test_io_bound_batch_is_measured_and_stays_on_threads(
    unirun_log: pytest.LogCaptureFixture,
) -> None:
    counter = Counter()
    tasks = [functools.partial(counter.hit, i, 0.02) for i in range(12)]
    assert unirun.run_all(tasks) == list(range(12))
    assert counter.calls == dict.fromkeys(range(12), 1)  # the measured task ran once
    (decision,) = _decisions(unirun_log)
    assert "chose mode 'thread'" in decision
    assert "of it on the CPU" in decision
    assert "estimated for 11 more" in decision


def test_tiny_tasks_are_measured_a_few_times_then_run_serially(
    unirun_log: pytest.LogCaptureFixture,
) -> None:
    counter = Counter()
    tasks = [functools.partial(counter.hit, i) for i in range(2000)]
    assert unirun.run_all(tasks) == list(range(2000))
    assert counter.calls == dict.fromkeys(range(2000), 1)
    (decision,) = _decisions(unirun_log)
    assert "tasks on a thread" in decision  # several samples for short tasks
    assert "chose mode 'serial'" in decision or "chose mode 'thread'" in decision


def test_the_measured_result_is_delivered_even_when_it_is_an_error() -> None:
    counter = Counter()

    def task(i: int) -> int:
        counter.hit(i, 0.01)
        if i == 0:
            raise ValueError("first")
        return i

    out: list[Any] = unirun.run_all(
        [functools.partial(task, i) for i in range(5)], return_exceptions=True
    )
    assert isinstance(out[0], ValueError)
    assert "failed on mode 'thread'" in " ".join(getattr(out[0], "__notes__", []))
    assert out[1:] == [1, 2, 3, 4]
    assert counter.calls == dict.fromkeys(range(5), 1)


def test_a_failed_probe_is_retried_where_it_ran() -> None:
    attempts: list[int] = []

    def flaky(i: int) -> int:
        attempts.append(i)
        if i == 0 and attempts.count(0) == 1:
            raise RuntimeError("once")
        return i

    out = unirun.run_all([functools.partial(flaky, i) for i in range(4)], retries=1)
    assert out == [0, 1, 2, 3]
    assert attempts.count(0) == 2


def test_a_long_probe_does_not_hold_the_batch(unirun_log: pytest.LogCaptureFixture) -> None:
    tasks = [functools.partial(nap, 0.4, i) for i in range(6)]
    assert unirun.run_all(tasks) == list(range(6))
    (decision,) = _decisions(unirun_log)
    assert "still running" in decision  # decided from the running probe, not its end


def test_a_generator_of_unhinted_tasks() -> None:
    counter = Counter()
    out = unirun.run_all(functools.partial(counter.hit, i) for i in range(50))
    assert out == list(range(50))
    assert counter.calls == dict.fromkeys(range(50), 1)


def test_imap_under_auto() -> None:
    assert list(unirun.imap(add, range(30), range(30))) == [2 * i for i in range(30)]


def test_a_lone_task_is_not_measured(unirun_log: pytest.LogCaptureFixture) -> None:
    assert unirun.run_all([functools.partial(add, 1, 2)]) == [3]
    assert not _decisions(unirun_log)


def test_backend_options_auto_cannot_pass_are_left_out() -> None:
    # tiny tasks may end up serial, which takes neither a prefix nor a pool size
    tasks = [functools.partial(add, i, 1) for i in range(500)]
    out = unirun.run_all(tasks, max_workers=3, thread_name_prefix="auto-opts")
    assert out == [i + 1 for i in range(500)]


@needs("process")
def test_cpu_bound_batch_is_measured_and_moves_to_processes(
    unirun_log: pytest.LogCaptureFixture,
) -> None:
    n = 3_000_000  # some tens of ms of pure Python
    pids = unirun.run_all([functools.partial(spin_pid, n) for _ in range(20)])
    (decision,) = _decisions(unirun_log)
    assert "chose mode 'process'" in decision, decision
    assert pids[0] == os.getpid()  # the measured task ran on a thread here, and was kept
    assert set(pids[1:]) - {os.getpid()}


# -- mixed batches -------------------------------------------------------------------------


def test_mixed_batch_of_hinted_tasks_keeps_order() -> None:
    tasks: list[Any] = []
    for i in range(10):
        tasks.append(unirun.Task(nap, (0.01, i), hint="io"))
        tasks.append(functools.partial(add, i, 100))  # unhinted: measured
    out = unirun.run_all(tasks)
    assert out == [x for i in range(10) for x in (i, i + 100)]


@needs("process", "asyncio")
def test_mixed_batch_runs_each_kind_on_its_backend_concurrently() -> None:
    tasks: list[Any] = []
    for i in range(4):
        tasks.append(unirun.Task(spin_pid, (200_000,), hint="cpu"))
        tasks.append(unirun.Task(nap, (0.05, i), hint="io"))
        tasks.append(unirun.task(fetch, i))
    choice = unirun.choose_backend(tasks[:3])
    assert choice.routes == ("process", "thread", "asyncio")
    for t in tasks:  # choose_backend consumed nothing: the tasks are reusable
        assert isinstance(t, unirun.Task)
    out = unirun.run_all(tasks)
    assert [out[i] != os.getpid() for i in range(0, 12, 3)] == [True] * 4
    assert [out[i] for i in range(1, 12, 3)] == list(range(4))
    assert [out[i] for i in range(2, 12, 3)] == list(range(4))


@needs("process")
def test_mixed_batch_error_names_the_mode_it_ran_on() -> None:
    tasks: list[Any] = [
        unirun.Task(nap, (0.01, 0), hint="io"),
        unirun.Task(divmod, (1, 0), hint="cpu"),
    ]
    with pytest.raises(ZeroDivisionError) as info:
        unirun.run_all(tasks)
    assert "task 1 failed on mode 'process'" in " ".join(getattr(info.value, "__notes__", []))


def test_mixed_batch_error_on_a_thread_names_thread() -> None:
    tasks: list[Any] = [
        unirun.Task(nap, (0.01, 0), hint="io"),
        unirun.Task(divmod, (1, 0), hint="io"),
    ]
    with pytest.raises(ZeroDivisionError) as info:
        unirun.run_all(tasks)
    assert "task 1 failed on mode 'thread'" in " ".join(getattr(info.value, "__notes__", []))


def test_pid_helper_is_importable() -> None:
    assert getpid() == os.getpid()


def test_payload_size_is_cheap_and_close_enough() -> None:
    from unirun._auto import payload_size

    blob = bytes(4 * 1024 * 1024)
    assert payload_size(((blob,), {})) >= len(blob)
    assert payload_size({"a": [blob, blob]}) >= 2 * len(blob)
    assert payload_size(3) < 100
