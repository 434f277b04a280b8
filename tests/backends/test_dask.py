"""What DaskBackend does differently: clusters, ownership, worker deaths, serialisation.

The shared contract runs on the session's LocalCluster (``dask_client`` in conftest);
here are the cases only a Dask cluster has: a scheduler and workers started with Dask's
own command line, a worker killed mid-batch, a client that unirun must leave open, and
what cannot cross the wire. Every test requests ``dask_client`` so that Dask's
process-wide helpers (its ``Dask-Offload`` thread) exist before the leak check counts.
"""

from __future__ import annotations

import inspect
import itertools
import math
import operator
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

distributed = pytest.importorskip("distributed")

import psutil  # noqa: E402

import unirun  # noqa: E402
from tests.helpers import add, identity, sleep_then  # noqa: E402
from unirun import DaskBackend, TaskSerializationError, WorkerCrashedError  # noqa: E402
from unirun._warm import WARM  # noqa: E402

pytestmark = pytest.mark.usefixtures("dask_client")


def _dask_cli() -> str:
    found = shutil.which("dask", path=str(Path(sys.executable).parent)) or shutil.which("dask")
    if found is None:
        pytest.skip("the 'dask' command is not installed")
    return found


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group (the nanny and its worker), SIGKILL it if it lingers."""
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    # the group may outlive its leader for a moment
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)


@pytest.fixture
def cli_cluster(tmp_path: Path) -> Iterator[str]:
    """``dask scheduler`` and two ``dask worker`` processes on 127.0.0.1, free ports."""
    dask = _dask_cli()
    scheduler_file = tmp_path / "scheduler.json"
    log = (tmp_path / "dask.log").open("wb")
    common: dict[str, Any] = {"stdout": log, "stderr": log, "start_new_session": True}
    processes = [
        subprocess.Popen(
            [
                dask,
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--no-dashboard",
                "--scheduler-file",
                str(scheduler_file),
            ],
            **common,
        )
    ]
    try:
        deadline = time.monotonic() + 30
        while not scheduler_file.exists() or not scheduler_file.stat().st_size:
            if time.monotonic() > deadline or processes[0].poll() is not None:
                pytest.fail(f"dask scheduler did not start: {(tmp_path / 'dask.log').read_text()}")
            time.sleep(0.05)
        time.sleep(0.1)  # the file is written in one go, but give it a moment
        worker = [dask, "worker", "--scheduler-file", str(scheduler_file)]
        worker += ["--host", "127.0.0.1", "--nthreads", "1", "--no-dashboard"]
        processes += [subprocess.Popen(worker, **common) for _ in range(2)]
        import json

        address = json.loads(scheduler_file.read_text())["address"]
        with distributed.Client(address, set_as_default=False, timeout=30) as probe:
            probe.wait_for_workers(2, timeout=30)
        yield address
    finally:
        for process in reversed(processes):
            _stop(process)
        log.close()


@pytest.mark.timeout(120)
def test_cli_cluster_through_address(cli_cluster: str) -> None:
    tasks = [unirun.task(math.factorial, n) for n in range(40)]
    expected = [math.factorial(n) for n in range(40)]
    with DaskBackend(address=cli_cluster) as backend:
        assert backend.max_workers == 2  # the cluster's threads
        assert backend.run_all(tasks) == expected
        assert list(backend.imap(operator.mul, range(30), range(30))) == [i * i for i in range(30)]
    # the module-level call keeps a warm backend for that address; shut it like at exit
    assert unirun.run_all(tasks, mode="dask", address=cli_cluster) == expected
    WARM.shutdown_all()


def _listening(process: psutil.Process) -> set[str]:
    hosts = set()
    for proc in [process, *process.children(recursive=True)]:
        try:
            conns = proc.net_connections(kind="inet")
        except psutil.Error:
            continue
        hosts |= {c.laddr.ip for c in conns if c.status == psutil.CONN_LISTEN}
    return hosts


def _connected(backend: DaskBackend) -> bool:
    return backend._client is not None


@pytest.mark.timeout(90)
def test_own_cluster_listens_on_loopback_only_and_closes() -> None:
    backend = DaskBackend(max_workers=2)
    assert not _connected(backend)  # nothing starts before the first task
    try:
        assert backend.run_all([unirun.task(add, i, 1) for i in range(10)]) == list(range(1, 11))
        client: Any = backend.client
        assert len(client.nthreads()) == 2
        assert _listening(psutil.Process()) <= {"127.0.0.1"}
    finally:
        backend.shutdown()
    assert client.status == "closed"


def test_given_client_is_left_open(dask_client: Any) -> None:
    with DaskBackend(client=dask_client) as backend:
        assert backend.run_all([unirun.task(add, 1, 2)]) == [3]
        assert backend.client is dask_client
    assert dask_client.status == "running"
    assert dask_client.submit(operator.add, 2, 2, pure=False).result(timeout=30) == 4
    with pytest.raises(RuntimeError):
        backend.submit(add, 1, 1)


def test_address_and_client_are_exclusive(dask_client: Any) -> None:
    with pytest.raises(ValueError, match="not both"):
        DaskBackend(address="tcp://127.0.0.1:1", client=dask_client)
    with pytest.raises(ValueError, match="local cluster"):
        DaskBackend(client=dask_client, memory_limit="1GB")


def _exit_worker(code: int) -> None:
    os._exit(code)


@pytest.mark.timeout(120)
def test_worker_killed_mid_batch_every_task_still_has_its_outcome() -> None:
    started = threading.Event()

    def progress(done: int, total: int | None) -> None:
        if done >= 2:
            started.set()

    with DaskBackend(max_workers=2) as backend:
        client: Any = backend.client
        victim = sorted(client.nthreads())[0]

        def kill() -> None:
            if started.wait(60):
                try:
                    client.run(_exit_worker, 1, workers=[victim], wait=False)
                except Exception:  # the worker may die before answering
                    pass

        killer = threading.Thread(target=kill)
        killer.start()
        try:
            out = backend.run_all(
                [unirun.task(sleep_then, 0.1, i) for i in range(30)],
                return_exceptions=True,
                progress=progress,
                timeout=100,
            )
        finally:
            started.set()
            killer.join()
    assert len(out) == 30
    for i, value in enumerate(out):
        # rescheduled by Dask: a result, or a clear crash error for that very task
        assert value == i or (isinstance(value, WorkerCrashedError) and value.task_index == i)


@pytest.mark.timeout(120)
def test_task_that_kills_its_worker_is_a_worker_crash() -> None:
    import dask

    # the scheduler reads allowed-failures when it starts: give up after one death
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        backend = DaskBackend(max_workers=2)
        assert backend.client is not None  # starts the cluster inside the config block
    with backend:
        out = backend.run_all(
            [unirun.Task(_exit_worker, (3,), name="suicidal"), unirun.task(add, 1, 1)],
            return_exceptions=True,
            timeout=100,
        )
        assert isinstance(out[0], WorkerCrashedError)
        assert "task 0 ('suicidal')" in str(out[0])
        assert isinstance(out[0].__cause__, distributed.KilledWorker)
        assert out[1] == 2
        # the nanny replaced the worker: the backend stays usable
        assert backend.run_all([unirun.task(add, 2, 2)], timeout=60) == [4]


def test_unpicklable_argument_fails_that_task_only(dask_client: Any) -> None:
    with DaskBackend(client=dask_client) as backend:
        out = backend.run_all(
            [unirun.task(identity, 1), unirun.task(identity, threading.Lock())],
            return_exceptions=True,
        )
        assert out[0] == 1
        assert isinstance(out[1], TaskSerializationError)
        assert out[1].phase == "argument"
        assert out[1].task_index == 1
        assert "task 1" in str(out[1])
        assert backend.run_all([unirun.task(add, 1, 1)]) == [2]  # still healthy


def _make_lock() -> Any:
    return threading.Lock()


def test_unpicklable_result_is_a_serialization_error(dask_client: Any) -> None:
    with DaskBackend(client=dask_client) as backend:
        out = backend.run_all(
            [unirun.task(_make_lock), unirun.task(add, 1, 1)], return_exceptions=True
        )
        assert isinstance(out[0], TaskSerializationError)
        assert out[0].phase == "result"
        assert out[1] == 2


def test_remote_exception_keeps_type_and_traceback(dask_client: Any) -> None:
    from tests.helpers import boom
    from unirun._remote import RemoteTraceback

    with (
        DaskBackend(client=dask_client) as backend,
        pytest.raises(ValueError, match="far away") as info,
    ):
        backend.run_all([unirun.task(boom, "far away")])
    assert isinstance(info.value.__cause__, RemoteTraceback)
    assert "boom" in str(info.value.__cause__)


def test_coroutine_object_is_refused_before_anything_runs(dask_client: Any) -> None:
    from tests.helpers import async_add

    coro = async_add(1, 2)
    with (
        DaskBackend(client=dask_client) as backend,
        pytest.raises(TypeError, match=r"unirun\.task\(fetch, url\)"),
    ):
        backend.run_all([unirun.task(add, 1, 1), coro])
    assert inspect.getcoroutinestate(coro) == "CORO_CLOSED"  # no "never awaited" warning


def test_imap_is_lazy_over_an_endless_input(dask_client: Any) -> None:
    with DaskBackend(client=dask_client) as backend:
        first = list(itertools.islice(backend.imap(add, itertools.count(), itertools.count()), 50))
    assert first == [2 * i for i in range(50)]


def test_tiny_tasks_are_chunked(dask_client: Any) -> None:
    from unirun._backends import _dask

    before = next(_dask._counter)  # numbers the Dask tasks this module submits
    with DaskBackend(client=dask_client) as backend:
        assert backend.run_all([unirun.task(add, i, 1) for i in range(2000)]) == [
            i + 1 for i in range(2000)
        ]
    submitted = next(_dask._counter) - before - 1
    assert submitted < 200  # far fewer Dask tasks than unirun tasks


def test_task_timeout_abandons_a_running_task(dask_client: Any) -> None:
    with DaskBackend(client=dask_client) as backend:
        out = backend.run_all(
            [unirun.task(sleep_then, 3, 0), unirun.task(identity, 1)],
            task_timeout=0.5,
            return_exceptions=True,
        )
    assert isinstance(out[0], unirun.TaskTimeoutError)
    assert out[0].action == "abandoned"  # Dask cannot stop a function that runs
    assert out[1] == 1
