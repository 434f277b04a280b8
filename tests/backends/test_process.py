"""What ProcessBackend does that the contract suite does not cover."""

from __future__ import annotations

import asyncio
import functools
import inspect
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

import unirun
from tests.helpers import add, async_add, boom, getpid, identity
from unirun import ProcessBackend
from unirun._choose import available_cpus

# -- task functions ---------------------------------------------------------------------------


def nesting_depth() -> int:
    from unirun import _warm

    return _warm.nesting_depth.get()


def nested_sum(n: int, mode: str) -> int:
    return sum(unirun.run_all([unirun.task(add, i, 0) for i in range(n)], mode=mode))


_initialized: list[str] = []


def remember(value: str) -> None:
    _initialized.append(value)


def initialized() -> list[str]:
    return list(_initialized)


async def barrier(directory: str, name: str, parties: int) -> int:
    """Return once ``parties`` tasks have arrived: proves they ran at the same time."""
    Path(directory, name).write_text(name)
    deadline = time.monotonic() + 20
    while len(os.listdir(directory)) < parties:
        if time.monotonic() > deadline:
            raise TimeoutError("the other tasks never arrived: they did not run concurrently")
        await asyncio.sleep(0.01)
    return os.getpid()


async def sleep_forever(path: str) -> None:
    Path(path).write_text("started")
    await asyncio.sleep(3600)


async def fetch(x: int) -> int:
    await asyncio.sleep(0)
    return x


@pytest.fixture
def pool() -> Iterator[ProcessBackend]:
    backend = ProcessBackend(max_workers=2)
    try:
        yield backend
    finally:
        backend.shutdown(wait=True, cancel_futures=True)


# -- construction ---------------------------------------------------------------------------


def test_defaults() -> None:
    backend = ProcessBackend()
    try:
        assert backend.mode == "process"
        assert backend.max_workers == available_cpus()
        assert backend.async_concurrency == 1
        assert {"parallel", "processes", "interrupt", "coroutines"} <= backend.capabilities
        assert "coroutine-objects" not in backend.capabilities
        assert backend.supports_chunking
        expected = "forkserver" if sys.platform.startswith("linux") else "spawn"
        assert backend._ctx.get_start_method() == expected
    finally:
        backend.shutdown()


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"max_workers": 0}, ValueError, "max_workers"),
        ({"async_concurrency": 0}, ValueError, "async_concurrency"),
        ({"max_tasks_per_child": 0}, ValueError, "max_tasks_per_child"),
        ({"initializer": 3}, TypeError, "initializer"),
        ({"mp_context": 3}, TypeError, "mp_context"),
    ],
)
def test_bad_options(options: dict[str, object], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        ProcessBackend(**options)  # type: ignore[arg-type]


@pytest.mark.skipif(sys.version_info >= (3, 11), reason="only Python 3.10 refuses it")
def test_max_tasks_per_child_needs_python_311() -> None:
    with pytest.raises(ValueError, match=r"3\.11"):
        ProcessBackend(max_tasks_per_child=2)


def test_fork_is_warned_about_once_and_refuses_recycling() -> None:
    from unirun._backends import _process

    _process._warn_fork.cache_clear()
    with pytest.warns(RuntimeWarning, match="fork"):
        ProcessBackend(max_workers=1, mp_context="fork").shutdown()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ProcessBackend(max_workers=1, mp_context="fork").shutdown()  # once only
    with pytest.raises(ValueError, match="max_tasks_per_child"):
        ProcessBackend(max_tasks_per_child=1, mp_context="fork")


def test_spawn_context_by_name() -> None:
    with ProcessBackend(max_workers=1, mp_context="spawn") as backend:
        assert backend.submit(add, 2, 3).result(timeout=60) == 5


def test_no_worker_starts_before_work() -> None:
    backend = ProcessBackend(max_workers=2)
    assert backend.run_all([]) == []
    assert not backend._manager.started
    assert not backend._manager.worker_pids()
    backend.shutdown()


# -- tasks ------------------------------------------------------------------------------------


def run_python(cwd: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """Run a fresh interpreter in ``cwd`` (its forkserver preloads no pytest); it must
    succeed."""
    done = subprocess.run(
        [sys.executable, *argv], capture_output=True, text=True, timeout=60, check=False, cwd=cwd
    )
    assert done.returncode == 0, done.stderr
    return done


def test_a_worker_loads_only_what_it_needs(tmp_path: Path) -> None:
    # start-up cost: a worker for sync tasks never imports asyncio, cloudpickle or the
    # engine. In a fresh interpreter: under pytest, forkserver preloads pytest's __main__.
    light = "import sys\ndef loaded():\n    return sorted(sys.modules)\n"
    (tmp_path / "light.py").write_text(light)
    script = (
        "import unirun, light\n"
        "if __name__ == '__main__':\n"
        "    print(' '.join(unirun.run_all([light.loaded], mode='process')[0]))\n"
    )
    done = run_python(tmp_path, "-c", script)
    modules = set(done.stdout.split())
    assert "unirun._backends._worker" in modules
    assert not {"asyncio", "cloudpickle", "unirun._engine", "unirun._run"} & modules


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forkserver is Linux's default")
def test_forkserver_preloads_the_worker_module_and_keeps_the_users_list(tmp_path: Path) -> None:
    script = (
        "import multiprocessing as mp, sys\n"
        "from multiprocessing import forkserver\n"
        "import unirun\n"
        "if __name__ == '__main__':\n"
        "    mp.set_forkserver_preload(['json'])\n"
        "    with unirun.ProcessBackend(1) as pool:\n"
        "        assert pool.submit(abs, -1).result() == 1\n"
        "    print(forkserver._forkserver._preload_modules)\n"
    )
    done = run_python(tmp_path, "-c", script)
    assert done.stdout.strip() == "['json', 'unirun._backends._worker']"


MAIN_SCRIPT = """
import unirun

class Box:
    def __init__(self, data):
        self.data = data

def size(box):
    return len(box.data)

if __name__ == "__main__":
    def guarded(data):  # not importable from a worker: __main__ runs as __mp_main__
        return len(data)

    big = b"x" * (4 << 20)
    print(unirun.run_all([unirun.task(size, Box(big)), unirun.task(guarded, big)],
                         mode="process", max_workers=1))
"""


@pytest.mark.parametrize("how", ["file", "-c"])
def test_functions_and_classes_of_main_reach_the_worker(tmp_path: Path, how: str) -> None:
    pytest.importorskip("cloudpickle")
    script = tmp_path / "main.py"
    script.write_text(MAIN_SCRIPT)
    argv = [str(script)] if how == "file" else ["-c", MAIN_SCRIPT]
    done = run_python(tmp_path, *argv)
    assert done.stdout.split() == ["[4194304,", "4194304]"]


def test_lambdas_and_closures_with_cloudpickle(pool: ProcessBackend) -> None:
    pytest.importorskip("cloudpickle")
    k = 10
    assert pool.run_all([lambda: 1, lambda: k + 1]) == [1, 11]


def test_module_function_runs_in_another_process(pool: ProcessBackend) -> None:
    assert pool.submit(getpid).result(timeout=30) != os.getpid()


def test_remote_traceback_is_the_cause(pool: ProcessBackend) -> None:
    error = pool.submit(boom, "far away").exception(timeout=30)
    assert isinstance(error, ValueError)
    assert str(error) == "far away"
    assert error.__cause__ is not None
    assert "in boom" in str(error.__cause__)


def test_coroutine_objects_are_refused_before_anything_runs(pool: ProcessBackend) -> None:
    coros = [fetch(1), fetch(2)]
    with pytest.raises(TypeError, match=r"unirun\.task\(fetch, url\)") as info:
        pool.run_all([unirun.task(add, 1, 1), *coros])
    assert "task 1" in str(info.value)
    assert not pool._manager.started  # nothing started
    assert all(inspect.getcoroutinestate(c) == "CORO_CLOSED" for c in coros)  # no warning


def test_coroutine_objects_from_a_generator_are_refused(pool: ProcessBackend) -> None:
    with pytest.raises(TypeError, match="coroutine object"):
        pool.run_all(fetch(i) for i in range(3))


def test_async_callables_run_on_a_private_loop(pool: ProcessBackend) -> None:
    assert pool.run_all([unirun.task(async_add, 1, 2), functools.partial(fetch, 5)]) == [3, 5]


def test_async_concurrency_runs_async_tasks_together(tmp_path: Path) -> None:
    with ProcessBackend(max_workers=1, async_concurrency=4) as backend:
        pids = backend.run_all([unirun.task(barrier, str(tmp_path), f"t{i}", 4) for i in range(4)])
        assert len(set(pids)) == 1
        # sync tasks still run, one at a time per worker
        assert backend.run_all([unirun.task(add, i, 1) for i in range(5)]) == [1, 2, 3, 4, 5]


def test_async_concurrency_timeout_cancels_only_that_task(tmp_path: Path) -> None:
    marker = tmp_path / "started"
    with ProcessBackend(max_workers=1, async_concurrency=2) as backend:
        out = backend.run_all(
            [unirun.task(sleep_forever, str(marker)), unirun.task(fetch, 7)],
            task_timeout=0.5,
            return_exceptions=True,
        )
        assert isinstance(out[0], unirun.TaskTimeoutError)
        assert out[0].action == "cancelled"
        assert out[1] == 7
        assert backend.submit(add, 1, 1).result(timeout=30) == 2


def test_initializer_runs_in_each_worker() -> None:
    with ProcessBackend(max_workers=2, initializer=remember, initargs=("ready",)) as backend:
        assert backend.run_all([initialized] * 4) == [["ready"]] * 4


def test_workers_see_nesting_depth_one(pool: ProcessBackend) -> None:
    assert pool.submit(nesting_depth).result(timeout=30) == 1


@pytest.mark.parametrize("inner", ["thread", "process"])
def test_nested_run_all_inside_a_process_task(pool: ProcessBackend, inner: str) -> None:
    assert pool.run_all([unirun.task(nested_sum, 4, inner)] * 2) == [6, 6]


def test_many_tiny_tasks_are_chunked(pool: ProcessBackend) -> None:
    out = unirun.map(add, range(3000), range(3000), mode=pool)
    assert out == [2 * i for i in range(3000)]


def test_a_failing_chunk_member_fails_alone(pool: ProcessBackend) -> None:
    tasks = [unirun.task(identity, i) for i in range(200)]
    tasks[150] = unirun.task(boom, "one")
    out = pool.run_all(tasks, return_exceptions=True)
    assert isinstance(out[150], ValueError)
    assert [o for i, o in enumerate(out) if i != 150] == [i for i in range(200) if i != 150]


def test_large_arguments_and_results(pool: ProcessBackend) -> None:
    data = b"x" * (8 * 2**20)
    assert pool.submit(identity, data).result(timeout=60) == data


def test_imap_streams(pool: ProcessBackend) -> None:
    assert list(pool.imap(add, range(50), range(50))) == [2 * i for i in range(50)]


def test_shutdown_without_wait_finishes_the_work() -> None:
    backend = ProcessBackend(max_workers=2)
    futures = [backend.submit(add, i, i) for i in range(10)]
    backend.shutdown(wait=False)
    assert [f.result(timeout=30) for f in futures] == [2 * i for i in range(10)]
    with pytest.raises(RuntimeError):
        backend.submit(add, 1, 1)


def test_shutdown_cancels_queued_work() -> None:
    from tests.helpers import sleep_then

    backend = ProcessBackend(max_workers=1)
    futures = [backend.submit(sleep_then, 0.2, i) for i in range(6)]
    backend.shutdown(wait=True, cancel_futures=True)
    assert any(f.cancelled() for f in futures)
    for f in futures:
        assert f.cancelled() or f.result(timeout=0) in range(6)


def test_run_all_with_mode_process_reuses_workers() -> None:
    first = unirun.run_all([getpid], mode="process", max_workers=1)
    second = unirun.run_all([getpid], mode="process", max_workers=1)
    assert first == second


def test_run_inside_an_event_loop(pool: ProcessBackend) -> None:
    async def main() -> list[int]:
        return await pool.arun_all([unirun.task(add, 1, 2)])

    assert asyncio.run(main()) == [3]


def test_map_crash_in_a_batch_fails_only_its_task() -> None:
    """``map`` sends small tasks in slices; a slice whose worker died is re-run task by
    task, so only the task that kills its worker gets ``WorkerCrashedError``."""
    from typing import Any

    from tests.helpers import die_on

    with unirun.ProcessBackend(max_workers=2) as backend:
        out: list[Any] = unirun.map(
            die_on, range(400), [123] * 400, mode=backend, return_exceptions=True
        )
    assert isinstance(out[123], unirun.WorkerCrashedError)
    assert [x for i, x in enumerate(out) if i != 123] == [2 * i for i in range(400) if i != 123]
