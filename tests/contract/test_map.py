"""``unirun.map`` over many small tasks: the batched path must keep every contract."""

from __future__ import annotations

import time
from typing import Any

import pytest

import unirun
from tests.helpers import add, async_add, async_fail_on, fail_on, sleep_then
from unirun._backends._base import BackendBase

N = 3000


def test_map_many_small_tasks_in_order(backend: BackendBase) -> None:
    assert unirun.map(add, range(N), range(N), mode=backend) == [2 * i for i in range(N)]


def test_map_first_failure_names_its_task(backend: BackendBase) -> None:
    with pytest.raises(ValueError, match="bad input 1234") as info:
        unirun.map(fail_on, range(N), [1234] * N, mode=backend)
    notes = getattr(info.value, "__notes__", [])
    assert any("task 1234" in note and backend.mode in note for note in notes), notes


def test_map_return_exceptions_keeps_every_slot(backend: BackendBase) -> None:
    out: list[Any] = unirun.map(fail_on, range(N), [7] * N, mode=backend, return_exceptions=True)
    assert isinstance(out[7], ValueError)
    assert out[:7] == [2 * i for i in range(7)]
    assert out[8:] == [2 * i for i in range(8, N)]


@pytest.mark.parametrize("chunksize", [1, 50, "auto"])
def test_map_chunksize_values(backend: BackendBase, chunksize: int | str) -> None:
    out = unirun.map(add, range(200), range(200), mode=backend, chunksize=chunksize)
    assert out == [2 * i for i in range(200)]


@pytest.mark.needs("coroutines")
def test_map_of_an_async_function(backend: BackendBase) -> None:
    # on asyncio this is the lanes path; elsewhere each coroutine runs to completion
    assert unirun.map(async_add, range(N), range(N), mode=backend) == [2 * i for i in range(N)]
    out: list[Any] = unirun.map(
        async_fail_on, range(50), [7] * 50, mode=backend, return_exceptions=True
    )
    assert isinstance(out[7], ValueError)
    assert "task 7" in " ".join(getattr(out[7], "__notes__", []))
    assert out[:7] == [2 * i for i in range(7)]
    with pytest.raises(ValueError, match="bad input 7"):
        unirun.map(async_fail_on, range(50), [7] * 50, mode=backend)


def test_map_whole_call_timeout(backend: BackendBase) -> None:
    # the long call first, so that serial sees the deadline before the next one; the
    # executor runs the next call (lanes and slices stop taking input at the deadline)
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        unirun.map(sleep_then, [2] + [0.05] * 20, range(21), mode=backend, timeout=0.5)
    assert time.monotonic() - start < 10  # a liveness bound, far from the 3 s of work
    assert unirun.map(add, range(5), range(5), mode=backend) == [0, 2, 4, 6, 8]
