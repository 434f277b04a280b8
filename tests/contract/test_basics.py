"""Behaviour every backend shares: results, order, errors, options."""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from concurrent.futures import CancelledError, Future
from typing import Any

import pytest

import unirun
from tests.helpers import add, boom, identity, sleep_then
from unirun._backends._base import BackendBase


def test_is_an_executor(backend: BackendBase) -> None:
    import concurrent.futures

    assert isinstance(backend, unirun.Executor)
    assert isinstance(backend, concurrent.futures.Executor)
    assert backend.mode in unirun._registry.valid_modes()


def test_submit_returns_stdlib_future(backend: BackendBase) -> None:
    future = backend.submit(add, 2, 3)
    assert isinstance(future, Future)
    assert future.result(timeout=30) == 5


def test_submit_passes_fn_keyword_through(backend: BackendBase) -> None:
    assert backend.submit(identity, x=7).result(timeout=30) == 7


def test_run_all_keeps_input_order(backend: BackendBase) -> None:
    tasks = [unirun.task(sleep_then, (5 - i) * 0.01, i) for i in range(6)]
    assert backend.run_all(tasks) == list(range(6))


def test_run_all_of_partials_and_tasks(backend: BackendBase) -> None:
    tasks: list[Any] = [
        functools.partial(add, 1, 2),
        unirun.task(add, 3, y=4),
        unirun.Task(add, (5, 6)),
    ]
    assert backend.run_all(tasks) == [3, 7, 11]


def test_run_all_empty(backend: BackendBase) -> None:
    assert backend.run_all([]) == []


def test_run_all_from_generator(backend: BackendBase) -> None:
    tasks = (unirun.task(add, i, i) for i in range(20))
    assert backend.run_all(tasks) == [2 * i for i in range(20)]


def test_first_error_is_raised_unchanged_with_a_note(backend: BackendBase) -> None:
    tasks = [unirun.task(identity, 1), unirun.Task(boom, ("bad",), name="the-bad-one")]
    with pytest.raises(ValueError, match="bad") as info:
        backend.run_all(tasks)
    notes = getattr(info.value, "__notes__", [])
    assert any("task 1" in n and "the-bad-one" in n and backend.mode in n for n in notes)


def test_return_exceptions_keeps_every_slot(backend: BackendBase) -> None:
    tasks = [unirun.task(identity, 0), unirun.task(boom, "x"), unirun.task(identity, 2)]
    out = backend.run_all(tasks, return_exceptions=True)
    assert out[0] == 0
    assert out[2] == 2
    assert isinstance(out[1], ValueError)


def test_falsey_exception_is_still_an_error(backend: BackendBase) -> None:
    from tests.helpers import FalseyError, raise_falsey

    with pytest.raises(FalseyError):
        backend.run_all([unirun.task(raise_falsey)])


def test_map_on_backend(backend: BackendBase) -> None:
    assert list(backend.map(add, [1, 2, 3], [10, 20, 30])) == [11, 22, 33]


def test_imap_ordered_and_unordered(backend: BackendBase) -> None:
    assert list(backend.imap(add, range(10), range(10))) == [2 * i for i in range(10)]
    assert sorted(backend.imap(add, range(10), range(10), ordered=False)) == [
        2 * i for i in range(10)
    ]


def test_submit_after_shutdown_raises(backend: BackendBase) -> None:
    backend.shutdown()
    with pytest.raises(RuntimeError):
        backend.submit(add, 1, 2)


def test_shutdown_twice_is_harmless(backend: BackendBase) -> None:
    backend.shutdown()
    backend.shutdown()


def test_context_manager_shuts_down(mode: str) -> None:
    with unirun.executor(mode) as ex:
        assert ex.submit(add, 1, 1).result(timeout=30) == 2
    with pytest.raises(RuntimeError):
        ex.submit(add, 1, 2)


def test_retries_rerun_a_failing_task(backend: BackendBase, tmp_path: object) -> None:
    from tests.helpers import fail_times

    marker = f"{tmp_path}/count"
    assert backend.run_all([unirun.task(fail_times, marker, 2)], retries=2) == ["ok after 3"]


def test_retries_give_up(backend: BackendBase, tmp_path: object) -> None:
    from tests.helpers import fail_times

    marker = f"{tmp_path}/count"
    with pytest.raises(RuntimeError, match="attempt 2"):
        backend.run_all([unirun.task(fail_times, marker, 5)], retries=1)


def test_progress_callback_sees_every_task(backend: BackendBase) -> None:
    seen: list[tuple[int, int | None]] = []
    backend.run_all(
        [unirun.task(identity, i) for i in range(5)], progress=lambda d, t: seen.append((d, t))
    )
    assert seen[-1] == (5, 5)
    assert [d for d, _ in seen] == [1, 2, 3, 4, 5]


def test_progress_callback_errors_are_ignored(
    backend: BackendBase, caplog: pytest.LogCaptureFixture
) -> None:
    def bad(done: int, total: int | None) -> None:
        raise RuntimeError("callback broke")

    assert backend.run_all([unirun.task(identity, 1)], progress=bad) == [1]
    assert "progress callback" in caplog.text


@pytest.mark.needs("coroutines")
def test_async_callables_run(backend: BackendBase) -> None:
    from tests.helpers import async_add

    assert backend.run_all([unirun.task(async_add, 1, 2), functools.partial(async_add, 3, 4)]) == [
        3,
        7,
    ]


@pytest.mark.needs("coroutine-objects")
def test_coroutine_objects_run(backend: BackendBase) -> None:
    from tests.helpers import async_add

    assert backend.run_all([async_add(1, 1), async_add(2, 2)]) == [2, 4]


def test_whole_call_timeout(backend: BackendBase) -> None:
    # the long task comes first, so that even a backend that cannot interrupt it (serial)
    # notices the deadline before the next task
    tasks = [unirun.task(sleep_then, 2, 9)] + [unirun.task(sleep_then, 0.05, i) for i in range(4)]
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        backend.run_all(tasks, timeout=0.5, return_exceptions=True)
    assert time.monotonic() - start < 10


def test_task_timeout_marks_the_slot(backend: BackendBase) -> None:
    out = backend.run_all(
        [unirun.task(sleep_then, 2, 0), unirun.task(identity, 1)],
        task_timeout=0.3,
        return_exceptions=True,
    )
    assert isinstance(out[0], unirun.TaskTimeoutError)
    assert out[0].action in ("killed", "cancelled", "abandoned", "overran")
    assert out[1] == 1


def test_cancel_futures_on_shutdown(mode: str) -> None:
    ex = unirun.executor(mode, max_workers=1)
    gate = threading.Event()
    try:
        futures = [ex.submit(sleep_then, 0.2, i) for i in range(5)]
    finally:
        ex.shutdown(wait=True, cancel_futures=True)
        gate.set()
    states = [f.cancelled() or f.done() for f in futures]
    assert all(states)
    for f in futures:
        if not f.cancelled():
            assert f.result() in range(5)
        else:
            with pytest.raises(CancelledError):
                f.result()


def test_system_exit_in_task_is_that_tasks_outcome(backend: BackendBase) -> None:
    from tests.helpers import do_exit

    out = backend.run_all(
        [unirun.task(do_exit, 3), unirun.task(identity, 1)], return_exceptions=True
    )
    assert isinstance(out[0], SystemExit)
    assert out[1] == 1


def test_run_all_inside_a_running_event_loop(backend: BackendBase) -> None:
    async def main() -> list[int]:
        return backend.run_all([unirun.task(add, 1, 1)])

    assert asyncio.run(main()) == [2]


def test_no_references_kept_after_delivery(backend: BackendBase) -> None:
    """FAULTS #48: nothing holds an argument or a result once it is delivered."""
    import gc
    import weakref

    from tests.helpers import Payload, make_payload

    arg = Payload()
    arg_ref = weakref.ref(arg)
    out = backend.run_all([unirun.task(make_payload, arg)])
    result_ref = weakref.ref(out[0])
    del out, arg
    gc.collect()
    assert arg_ref() is None
    assert result_ref() is None


def test_one_executor_from_many_threads(backend: BackendBase) -> None:
    """FAULTS #46: ten threads share one executor; each call gets its own outcomes."""
    errors: list[BaseException] = []
    results: dict[int, list[int]] = {}

    def call(k: int) -> None:
        try:
            results[k] = backend.run_all([unirun.task(add, k * 100, i) for i in range(10)])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=call, args=(k,)) for k in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors
    assert results == {k: [k * 100 + i for i in range(10)] for k in range(10)}
