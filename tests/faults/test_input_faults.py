"""Input faults on every backend (#27-#30): a generator that raises, empty and one-item
input, a 10-million-item lazy input, an endless input left early.

Written once against the ``backend`` fixture; the autouse ``no_leaks`` fixture checks that
nothing (threads, processes, file descriptors) is left behind.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import unirun
from tests.conftest import _children, _threads
from tests.helpers import add
from unirun._backends._base import BackendBase

N = 20


class InputBroke(LookupError):
    pass


def _tasks(raise_at: int, raised: list[BaseException]) -> Iterator[Any]:
    for i in range(N):
        if i == raise_at:
            exc = InputBroke(f"input broke at {i}")
            raised.append(exc)
            raise exc
        yield unirun.task(add, i, 1)


def _args(raise_at: int, raised: list[BaseException]) -> Iterator[int]:
    for i in range(N):
        if i == raise_at:
            exc = InputBroke(f"input broke at {i}")
            raised.append(exc)
            raise exc
        yield i


# -- #27 the input generator raises -----------------------------------------------------------


@pytest.mark.parametrize("raise_at", [0, 5, N - 1], ids=["first", "fifth", "last"])
@pytest.mark.parametrize("return_exceptions", [False, True], ids=["raise", "return"])
def test_input_generator_raising_propagates_unchanged(
    backend: BackendBase, raise_at: int, return_exceptions: bool
) -> None:
    """The generator's own exception object, not a task failure, whatever
    ``return_exceptions`` says; the backend stays usable."""
    raised: list[BaseException] = []
    with pytest.raises(InputBroke) as info:
        backend.run_all(_tasks(raise_at, raised), return_exceptions=return_exceptions)
    assert info.value is raised[0]
    assert not getattr(info.value, "__notes__", None), "the input's error is not a task's"
    assert backend.run_all([unirun.task(add, 1, 1)]) == [2]


@pytest.mark.parametrize("raise_at", [0, 5, N - 1], ids=["first", "fifth", "last"])
@pytest.mark.parametrize("ordered", [True, False], ids=["ordered", "unordered"])
def test_imap_input_raising_propagates_unchanged(
    backend: BackendBase, raise_at: int, ordered: bool
) -> None:
    raised: list[BaseException] = []
    got: list[int] = []
    with pytest.raises(InputBroke) as info:  # noqa: PT012 - the loop is the call under test
        for value in backend.imap(abs, _args(raise_at, raised), ordered=ordered):
            got.append(value)  # noqa: PERF402 - kept as it comes, to see what preceded the error
    assert info.value is raised[0]
    assert len(got) <= raise_at
    if ordered:
        assert got == list(range(len(got)))
    else:
        assert set(got) <= set(range(raise_at))
    assert list(backend.imap(abs, [-3])) == [3]


# -- #28 empty and one-item input --------------------------------------------------------------


def test_empty_input_starts_no_worker(backend: BackendBase) -> None:
    threads, children = _threads(), _children()
    assert backend.run_all([]) == []
    assert backend.run_all(iter([])) == []
    assert list(backend.imap(abs, [])) == []
    assert list(backend.imap(abs, iter([]), ordered=False)) == []
    assert unirun.map(abs, [], mode=backend) == []
    assert _threads() == threads
    assert _children() == children


def test_one_item_input(backend: BackendBase) -> None:
    assert backend.run_all([unirun.task(add, 2, 3)]) == [5]
    assert backend.run_all(iter([unirun.task(add, 2, 3)])) == [5]
    assert list(backend.imap(abs, [-4])) == [4]
    assert list(backend.imap(abs, iter([-4]), ordered=False)) == [4]
    assert unirun.map(abs, [-6], mode=backend) == [6]
    out: list[Any] = backend.run_all([unirun.task(int, "x")], return_exceptions=True)
    assert len(out) == 1
    assert isinstance(out[0], ValueError)


# -- #29 a 10-million-item lazy input -----------------------------------------------------------


class Counting:
    """A lazy input that counts how many items were pulled, and whether it was closed."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.pulled = 0
        self.closed = False

    def __iter__(self) -> Iterator[int]:
        try:
            for i in range(self.n):
                self.pulled += 1
                yield i
        finally:
            self.closed = True


@pytest.mark.parametrize("window", [8, None], ids=["max_in_flight=8", "default-window"])
def test_ten_million_items_stream_with_a_bounded_window(
    backend: BackendBase, window: int | None
) -> None:
    """Pulled ahead never passes the window, at every result.

    With the default window, process and dask chunk tiny tasks and widen the window to
    two chunks per worker (at most 4096 calls a chunk), so the bound there is that.
    """
    source = Counting(10_000_000)
    gen = iter(source)
    options: dict[str, Any] = {} if window is None else {"max_in_flight": window}
    bound = window
    if bound is None:
        bound = backend._default_window()
        if backend.supports_chunking:
            bound = max(bound, 2 * backend.max_workers * 4096)
    it = backend.imap(abs, gen, **options)
    worst = 0
    for consumed, value in enumerate(it, start=1):
        assert value == consumed - 1
        worst = max(worst, source.pulled - consumed)
        assert source.pulled - consumed <= bound, (source.pulled, consumed, bound)
        if consumed == 2_000:
            break
    it.close()  # type: ignore[attr-defined]  # imap returns a generator
    assert source.pulled < 2_000 + bound + 1
    assert worst <= bound


# -- #30 an endless input left early -------------------------------------------------------------


def record_start(path: str, i: int) -> int:
    """A task that appends its index to ``path`` when it starts (works across processes)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, f"{i}\n".encode())
    finally:
        os.close(fd)
    return i


def _started(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()] if path.exists() else []


@pytest.mark.parametrize("ordered", [True, False], ids=["ordered", "unordered"])
def test_endless_input_left_early_is_closed_and_work_stops(
    backend: BackendBase, tmp_path: Path, ordered: bool
) -> None:
    """``break`` after 3 results: queued tasks never start, and the tasks that ran are
    bounded by the window."""
    path = tmp_path / "started"
    window = 6
    it = backend.imap(
        record_start,
        itertools.repeat(str(path)),
        itertools.count(),
        ordered=ordered,
        max_in_flight=window,
    )
    got = [next(it) for _ in range(3)]
    it.close()  # type: ignore[attr-defined]
    if ordered:
        assert got == [0, 1, 2]
    at_close = _started(path)
    backend.shutdown(wait=True)  # whatever still runs has finished now
    after = _started(path)
    assert len(after) <= 3 + window, after
    # nothing queued started after close() returned: only tasks already running finish
    assert len(after) - len(at_close) <= backend.max_workers, (at_close, after)


def test_imap_left_early_closes_an_input_nobody_else_holds(backend: BackendBase) -> None:
    source = Counting(10_000_000)
    it = backend.imap(abs, iter(source), max_in_flight=4)
    assert [next(it) for _ in range(3)] == [0, 1, 2]
    it.close()  # type: ignore[attr-defined]
    assert source.closed  # dropped with the stream, so CPython finalises it at once


def test_imap_left_early_closes_its_input_generator(backend: BackendBase) -> None:
    """Closed by imap itself, as run_all closes its lazy input."""
    source = Counting(10_000_000)
    gen = iter(source)  # the caller keeps a reference, as `src = read(); imap(f, src)` does
    it = backend.imap(abs, gen, max_in_flight=4)
    assert [next(it) for _ in range(3)] == [0, 1, 2]
    it.close()  # type: ignore[attr-defined]
    assert source.closed


def test_run_all_left_early_closes_its_input(backend: BackendBase) -> None:
    """A lazy input of run_all is closed when the run stops early (first failure)."""
    source = Counting(10_000_000)

    def tasks() -> Iterator[Any]:
        for i in source:
            yield unirun.task(int, "x") if i == 2 else unirun.task(add, i, 0)

    with pytest.raises(ValueError, match="invalid literal"):
        backend.run_all(tasks(), max_in_flight=4)
    assert source.closed
    # bounded, not exact: tasks finished before the failure is seen free window slots
    assert source.pulled < 100
