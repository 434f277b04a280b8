"""``unirun.shared`` on every backend: a task gets a ``Shared`` it can read, in any mode."""

from __future__ import annotations

import pytest

import unirun
from unirun._backends._base import BackendBase

DATA = bytes(range(256)) * 4096  # 1 MiB, every byte value


@pytest.fixture(autouse=True, scope="module")
def _resource_tracker() -> None:
    """Start the resource tracker before the leak check counts file descriptors.

    ``unirun.shared`` registers its segments there; the tracker (and the descriptor of its
    pipe) lives as long as the test process, like the forkserver.
    """
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()


def read(blob: unirun.Shared) -> tuple[str, int, bytes, bytes]:
    view = blob.view
    return type(blob).__name__, len(blob), bytes(view[:4]), bytes(view[-4:])


async def aread(blob: unirun.Shared) -> tuple[str, int, bytes, bytes]:
    return read(blob)


EXPECTED = ("Shared", len(DATA), DATA[:4], DATA[-4:])


def test_a_task_reads_a_shared_input(backend: BackendBase) -> None:
    with unirun.shared(DATA) as blob:
        assert backend.run_all([unirun.task(read, blob) for _ in range(4)]) == [EXPECTED] * 4
        assert bytes(blob[:4]) == DATA[:4]  # the owner's copy is untouched by the run


@pytest.mark.needs("coroutines")
def test_an_async_task_reads_a_shared_input(backend: BackendBase) -> None:
    with unirun.shared(DATA) as blob:
        assert backend.run_all([unirun.task(aread, blob) for _ in range(4)]) == [EXPECTED] * 4
