"""Bad input fails fast, before anything runs, with a message that names the fix."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import unirun
from tests.helpers import add, identity
from unirun._backends._base import BackendBase


@pytest.mark.parametrize("bad", [None, 42, "f", [1, 2]], ids=repr)
def test_non_callable_task_names_its_index(backend: BackendBase, bad: object) -> None:
    with pytest.raises(TypeError, match=r"task 1 is not callable"):
        backend.run_all([unirun.task(identity, 0), bad])


@pytest.mark.parametrize(
    ("option", "value", "error", "match"),
    [
        ("timeout", -1, ValueError, "timeout must be >= 0"),
        ("task_timeout", -0.5, ValueError, "task_timeout must be >= 0"),
        ("timeout", "1", TypeError, "timeout must be a number"),
        ("hint", "gpu", ValueError, "hint must be 'cpu', 'io' or None"),
        ("retries", -1, ValueError, "retries must be >= 0"),
        ("retry_crashes", 1, TypeError, "retry_crashes must be True or False"),
        ("max_in_flight", 0, ValueError, "max_in_flight must be greater than 0"),
        ("chunksize", 0, ValueError, "chunksize must be greater than 0"),
        ("progress", 3, TypeError, "progress must be"),
    ],
)
def test_bad_options(
    backend: BackendBase, option: str, value: object, error: type[Exception], match: str
) -> None:
    ran: list[int] = []
    with pytest.raises(error, match=match):
        backend.run_all([lambda: ran.append(1)], **{option: value})
    assert ran == []


def test_unknown_run_option_on_a_backend(backend: BackendBase) -> None:
    with pytest.raises(TypeError, match="unexpected option"):
        backend.run_all([lambda: 1], max_wrokers=2)


@pytest.mark.parametrize(
    ("value", "error"),
    [(0, ValueError), (-1, ValueError), (1.5, TypeError), ("2", TypeError), (True, TypeError)],
    ids=repr,
)
def test_bad_max_workers(mode: str, value: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="max_workers"):
        unirun.executor(mode, max_workers=value)


def test_generator_error_propagates_unchanged(backend: BackendBase) -> None:
    def tasks() -> Iterator[Any]:
        for i in range(10):
            if i == 5:
                raise LookupError("input broke")
            yield unirun.task(add, i, 1)

    with pytest.raises(LookupError, match="input broke"):
        backend.run_all(tasks())
