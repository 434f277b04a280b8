"""What is specific to ThreadBackend: ``map`` runs as lane tasks of the pool.

``max_workers`` lanes share the input; each calls the function for the next argument in
turn, so there is one future per lane instead of one per call. The contract suite covers
results, order and errors; these pin down what the lanes must keep from the per-task path.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

import unirun
from unirun import ThreadBackend


class _Seen:
    lock = threading.Lock()
    running = 0
    most = 0
    started: ClassVar[list[int]] = []
    release = threading.Event()


def task(i: int) -> int:
    with _Seen.lock:
        _Seen.started.append(i)
        _Seen.running += 1
        _Seen.most = max(_Seen.most, _Seen.running)
    try:
        time.sleep(0.001)
        if i == 50:
            raise ValueError("fifty")
        if i == 60:
            raise KeyboardInterrupt
        if i == 80:
            _Seen.release.wait(10)
        return i * 2
    finally:
        with _Seen.lock:
            _Seen.running -= 1


@pytest.fixture
def pool() -> Iterator[ThreadBackend]:
    _Seen.running = _Seen.most = 0
    _Seen.started.clear()
    _Seen.release = threading.Event()
    backend = ThreadBackend(max_workers=3)
    try:
        yield backend
    finally:
        _Seen.release.set()
        backend.shutdown(wait=True)


def test_map_keeps_order_and_bounds_concurrency(pool: ThreadBackend) -> None:
    assert unirun.map(task, range(40), mode=pool) == [i * 2 for i in range(40)]
    assert _Seen.most <= 3
    assert sorted(_Seen.started) == list(range(40))


def test_map_return_exceptions(pool: ThreadBackend) -> None:
    out: list[Any] = unirun.map(task, range(45, 65), mode=pool, return_exceptions=True)
    assert isinstance(out[5], ValueError)
    assert "task 5" in " ".join(getattr(out[5], "__notes__", []))
    assert isinstance(out[15], KeyboardInterrupt)  # the task's own: its outcome
    assert [o for i, o in enumerate(out) if i not in (5, 15)] == [
        (45 + i) * 2 for i in range(20) if i not in (5, 15)
    ]


def test_map_fails_fast_without_waiting_for_a_blocked_lane(pool: ThreadBackend) -> None:
    start = time.monotonic()
    with pytest.raises(ValueError, match="fifty") as info:
        unirun.map(task, [80, *range(48, 53), *range(100, 400)], mode=pool)
    assert time.monotonic() - start < 5  # task 80 still blocks its lane
    assert "task 3" in " ".join(getattr(info.value, "__notes__", []))
    taken = len(_Seen.started)
    _Seen.release.set()
    time.sleep(0.1)
    assert len(_Seen.started) == taken  # the lanes took no more input
    assert len(_Seen.started) < 50


def test_map_whole_call_timeout_stops_the_lanes(pool: ThreadBackend) -> None:
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        unirun.map(task, [80, *range(100, 100_000)], mode=pool, timeout=0.3)
    assert time.monotonic() - start < 5
    taken = len(_Seen.started)
    time.sleep(0.1)
    assert len(_Seen.started) <= taken + 2  # at most the calls then running finish
    _Seen.release.set()


def test_map_tasks_see_the_callers_context() -> None:
    with unirun.using("thread", max_workers=2):
        assert unirun.map(current_mode, range(5)) == ["thread"] * 5


def current_mode(_: int) -> object:
    from unirun._options import ambient

    return ambient().get("mode")
