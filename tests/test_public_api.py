"""The public surface: complete, sorted, and presented as living in ``unirun``."""

from __future__ import annotations

import inspect

import pytest

import unirun

SPEC_NAMES = {
    "run_all", "map", "imap", "arun_all", "amap", "executor", "Executor",
    "ThreadBackend", "ProcessBackend", "AsyncioBackend", "GeventBackend", "SerialBackend",
    "DaskBackend", "Task", "task", "cpu_bound", "io_bound", "choose_backend", "using",
    "register_backend", "UnirunError", "BackendUnavailableError", "TaskTimeoutError",
    "WorkerCrashedError",
}  # fmt: skip


def test_all_is_sorted_and_holds_the_spec_names() -> None:
    assert unirun.__all__ == sorted(unirun.__all__)
    assert set(unirun.__all__) >= SPEC_NAMES


@pytest.mark.parametrize("name", sorted(set(unirun.__all__) - {
    "AsyncioBackend", "DaskBackend", "GeventBackend", "ProcessBackend", "SerialBackend",
    "ThreadBackend",
}))  # fmt: skip
def test_public_objects_live_in_unirun(name: str) -> None:
    obj = getattr(unirun, name)
    assert obj.__module__ == "unirun"
    assert inspect.getdoc(obj), f"{name} has no docstring"


@pytest.mark.parametrize("name", ["SerialBackend", "ThreadBackend"])
def test_core_backends_are_importable_lazily(name: str) -> None:
    cls = getattr(unirun, name)
    assert inspect.isclass(cls)
    assert inspect.getdoc(cls)


def test_unknown_attribute() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        unirun.nope  # noqa: B018


def test_error_tree() -> None:
    import pickle
    from concurrent.futures.process import BrokenProcessPool

    assert issubclass(unirun.BackendUnavailableError, (unirun.UnirunError, ImportError))
    assert issubclass(unirun.TaskTimeoutError, unirun.UnirunError)
    assert issubclass(unirun.TaskTimeoutError, TimeoutError)
    assert issubclass(unirun.WorkerCrashedError, unirun.UnirunError)
    assert issubclass(unirun.WorkerCrashedError, BrokenProcessPool)
    assert issubclass(unirun.TaskSerializationError, pickle.PicklingError)


@pytest.mark.parametrize(
    "error",
    [
        unirun.TaskTimeoutError("t", action="killed", timeout=1.0, task_index=3),
        unirun.WorkerCrashedError("w", exitcode=-9, pid=123, task_index=2),
        unirun.BackendUnavailableError("b", backend="gevent", extra="unirun[gevent]"),
        unirun.TaskSerializationError("s", phase="result", task_index=1),
    ],
    ids=lambda e: type(e).__name__,
)
def test_errors_pickle_with_their_attributes(error: Exception) -> None:
    import pickle

    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert vars(copy) == vars(error)
