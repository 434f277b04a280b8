"""``unirun.map`` over many small tasks: the batched path must keep every contract."""

from __future__ import annotations

from typing import Any

import pytest

import unirun
from tests.helpers import add, fail_on
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
