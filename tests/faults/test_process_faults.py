"""Faults in process mode: worker deaths, hung tasks, pickling, Ctrl-C, interpreter exit.

Real crashes only (``os._exit``, SIGKILL, a segfault). Tests synchronise on files that a
task writes (its pid) before it blocks, never on sleeps.
"""

from __future__ import annotations

import dataclasses
import faulthandler
import os
import pickle
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

import unirun
from tests.faults.harness import run_script, wait_gone
from tests.helpers import add, identity
from unirun import ProcessBackend, TaskSerializationError, TaskTimeoutError, WorkerCrashedError

# -- task functions (module level: they pickle by reference) ------------------------------


def crash(code: int) -> None:
    os._exit(code)


def square_or_crash(i: int, bad: int) -> int:
    if i == bad:
        os._exit(3)
    return i * i


def segfault() -> None:
    faulthandler.disable()
    faulthandler._sigsegv()  # type: ignore[attr-defined]


def pid_then_block(path: str, ignore_sigterm: bool = False) -> None:
    if ignore_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    Path(path).write_text(str(os.getpid()))
    threading.Event().wait()


def note_pid_then_crash(path: str) -> None:
    with open(path, "a") as f:
        f.write(f"{os.getpid()}\n")
    os._exit(1)


def crash_with_data(data: str) -> None:
    os._exit(1)


def return_lock() -> Any:
    return threading.Lock()


def raise_(exc: BaseException) -> NoReturn:
    raise exc


def raise_keyboard_interrupt() -> NoReturn:
    raise KeyboardInterrupt("raised by the task itself")


def _raise_runtime(message: str) -> NoReturn:
    raise RuntimeError(message)


def _crash_now() -> None:
    faulthandler.disable()
    faulthandler._sigsegv()  # type: ignore[attr-defined]


class ErrorAtUnpickle:
    def __reduce__(self) -> tuple[Any, ...]:
        return _raise_runtime, ("message raised in child",)


class ExitAtUnpickle:
    def __reduce__(self) -> tuple[Any, ...]:
        return sys.exit, (5,)


class CrashAtUnpickle:
    def __reduce__(self) -> tuple[Any, ...]:
        return _crash_now, ()


class ErrorAtPickle:
    def __reduce__(self) -> tuple[Any, ...]:
        raise pickle.PicklingError("error at pickle")


class ExitAtPickle:
    def __reduce__(self) -> tuple[Any, ...]:
        sys.exit(6)


class CrashAtPickle:
    def __reduce__(self) -> tuple[Any, ...]:
        _crash_now()
        return (int, ())


class DieOnDel:
    """Kills the worker process when it is garbage-collected there (after the task)."""

    def __init__(self) -> None:
        self.parent = os.getpid()

    def __del__(self) -> None:
        if os.getpid() != self.parent:
            os._exit(0)


def touch(obj: object) -> str:
    return "done"


class FinickyError(Exception):
    def __init__(self, message: str, *, code: int) -> None:
        super().__init__(message)
        self.code = code


class LockedError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()


@dataclasses.dataclass(frozen=True)
class FrozenError(Exception):
    code: int

    def __str__(self) -> str:
        return f"frozen {self.code}"


def finicky() -> NoReturn:
    raise FinickyError("finicky message", code=1)


def locked() -> NoReturn:
    raise LockedError("locked message")


def frozen() -> NoReturn:
    raise FrozenError(7)


# -- plumbing -------------------------------------------------------------------------------


@pytest.fixture
def pool() -> Iterator[ProcessBackend]:
    backend = ProcessBackend(max_workers=2)
    try:
        yield backend
    finally:
        backend.shutdown(wait=True, cancel_futures=True)


def wait_for_pid(path: Path, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            text = path.read_text()
        except FileNotFoundError:
            text = ""
        if text:
            return int(text)
        time.sleep(0.01)
    raise AssertionError(f"no pid written to {path} within {timeout}s")


# -- 2.1 worker deaths ------------------------------------------------------------------------


def test_os_exit_fails_only_that_task(pool: ProcessBackend) -> None:
    out: list[Any] = pool.run_all(
        [unirun.task(square_or_crash, i, 7) for i in range(20)], return_exceptions=True
    )
    assert [o for i, o in enumerate(out) if i != 7] == [i * i for i in range(20) if i != 7]
    error = out[7]
    assert isinstance(error, WorkerCrashedError)
    assert error.exitcode == 3
    assert error.task_index == 7
    assert error.pid is not None
    assert error.pid > 0
    assert "task 7" in str(error)
    assert "exited with code 3" in str(error)
    # the pool healed
    assert pool.run_all([unirun.task(add, 1, 2)] * 4) == [3] * 4


@pytest.mark.parametrize("retry_crashes", [False, True])
def test_poison_task_with_retries(
    pool: ProcessBackend, tmp_path: Path, retry_crashes: bool
) -> None:
    """#6, as SPEC reads it: ``retries`` is for tasks that raised; a crash is retried only
    when asked for, each attempt on a fresh worker, with no respawn loop."""
    attempts_file = tmp_path / "attempts"
    tasks: list[unirun.Task[Any]] = [unirun.task(add, i, 1) for i in range(6)]
    tasks.insert(3, unirun.task(note_pid_then_crash, str(attempts_file)))
    start = time.monotonic()
    out: list[Any] = pool.run_all(
        tasks, retries=2, retry_crashes=retry_crashes, return_exceptions=True, chunksize=1
    )
    assert time.monotonic() - start < 30
    assert out[:3] + out[4:] == [i + 1 for i in range(6)]  # the others finished
    pids = attempts_file.read_text().split()
    error = out[3]
    assert isinstance(error, WorkerCrashedError)
    assert error.task_index == 3
    if retry_crashes:
        assert len(pids) == 3
        assert len(set(pids)) == 3, "each attempt must run on a fresh worker"
        assert error.attempts == 3
        assert "attempted on 3 workers, all died" in " ".join(getattr(error, "__notes__", []))
    else:
        assert len(pids) == 1
        assert error.attempts == 1
    assert pool.run_all([unirun.task(add, 1, 2)] * 2) == [3, 3]


def test_sigkill_from_outside(pool: ProcessBackend, tmp_path: Path) -> None:
    marker = tmp_path / "pid"
    future = pool.submit(pid_then_block, str(marker))
    pid = wait_for_pid(marker)
    os.kill(pid, signal.SIGKILL)
    error = future.exception(timeout=30)
    assert isinstance(error, WorkerCrashedError)
    assert error.exitcode == -signal.SIGKILL
    assert error.pid == pid
    assert "SIGKILL" in str(error)
    assert "memory" in str(error)
    assert pool.submit(add, 2, 2).result(timeout=30) == 4


def test_segfault(pool: ProcessBackend) -> None:
    out = pool.run_all([unirun.task(segfault), unirun.task(add, 1, 1)], return_exceptions=True)
    assert isinstance(out[0], WorkerCrashedError)
    assert out[0].exitcode == -signal.SIGSEGV
    assert "SIGSEGV" in str(out[0])
    assert out[1] == 2


@pytest.mark.parametrize(
    ("fn", "args", "expected", "match"),
    [
        (identity, (ErrorAtUnpickle(),), TaskSerializationError, "message raised in child"),
        (identity, (ExitAtUnpickle(),), TaskSerializationError, "SystemExit"),
        (identity, (CrashAtUnpickle(),), WorkerCrashedError, "SIGSEGV"),
        (ErrorAtPickle, (), TaskSerializationError, "error at pickle"),
        (ExitAtPickle, (), TaskSerializationError, "SystemExit"),
        (CrashAtPickle, (), WorkerCrashedError, "SIGSEGV"),
        (ErrorAtUnpickle, (), TaskSerializationError, "message raised in child"),
        (ExitAtUnpickle, (), TaskSerializationError, "SystemExit"),
    ],
    ids=[
        "error-at-unpickle-arg",
        "exit-at-unpickle-arg",
        "crash-at-unpickle-arg",
        "error-at-pickle-result",
        "exit-at-pickle-result",
        "crash-at-pickle-result",
        "error-at-unpickle-result",
        "exit-at-unpickle-result",
    ],
)
def test_crashes_around_pickling(
    pool: ProcessBackend, fn: Any, args: tuple[Any, ...], expected: type, match: str
) -> None:
    future = pool.submit(fn, *args)
    with pytest.raises(expected, match=match):
        future.result(timeout=30)
    assert pool.submit(add, 1, 2).result(timeout=30) == 3


def test_crash_while_sending_a_large_argument(pool: ProcessBackend) -> None:
    data = "a" * (4 * 2**20 + 1)
    start = time.monotonic()
    out = pool.run_all(
        [unirun.task(crash_with_data, data) for _ in range(6)], return_exceptions=True
    )
    assert all(isinstance(o, WorkerCrashedError) for o in out), out
    assert time.monotonic() - start < 30
    assert pool.submit(add, 1, 2).result(timeout=30) == 3


def test_death_after_the_result_keeps_the_result(tmp_path: Path) -> None:
    with ProcessBackend(max_workers=1) as backend:
        out = backend.run_all(
            [unirun.task(touch, DieOnDel()), unirun.task(add, 1, 2), unirun.task(add, 2, 2)],
            return_exceptions=True,
        )
    assert out == ["done", 3, 4]


def test_failing_initializer_fails_fast() -> None:
    backend = ProcessBackend(max_workers=2, initializer=raise_, initargs=(ValueError("bad init"),))
    try:
        start = time.monotonic()
        with pytest.raises(WorkerCrashedError, match="bad init"):
            backend.run_all([unirun.task(add, i, i) for i in range(10)])
        assert time.monotonic() - start < 30
        with pytest.raises(WorkerCrashedError, match="initializer"):
            backend.submit(add, 1, 1)
    finally:
        backend.shutdown(wait=True)


def test_failing_initializer_does_not_respawn_forever(tmp_path: Path) -> None:
    backend = ProcessBackend(max_workers=2, initializer=crash, initargs=(4,))
    try:
        with pytest.raises(WorkerCrashedError, match="start-up"):
            backend.run_all([unirun.task(add, i, i) for i in range(10)])
    finally:
        backend.shutdown(wait=True)


def test_system_exit_and_keyboard_interrupt_in_a_task(pool: ProcessBackend) -> None:
    from tests.helpers import do_exit, getpid

    pid = pool.submit(getpid).result(timeout=30)
    exc = pool.submit(do_exit, 2).exception(timeout=30)
    assert isinstance(exc, SystemExit)
    assert exc.code == 2
    kbd = pool.submit(raise_keyboard_interrupt).exception(timeout=30)
    assert isinstance(kbd, KeyboardInterrupt)
    # the worker survived both
    assert pool.submit(getpid).result(timeout=30) in {pid} | _worker_pids(pool)


def _worker_pids(pool: ProcessBackend) -> set[int]:
    return pool._manager.worker_pids()


# -- 2.2 hung tasks and timeouts -----------------------------------------------------------------


@pytest.mark.parametrize("ignore_sigterm", [False, True], ids=["plain", "ignores-sigterm"])
def test_task_timeout_kills_the_worker(
    pool: ProcessBackend, tmp_path: Path, ignore_sigterm: bool
) -> None:
    marker = tmp_path / "pid"
    start = time.monotonic()
    out = pool.run_all(
        [unirun.task(pid_then_block, str(marker), ignore_sigterm), unirun.task(add, 1, 1)],
        task_timeout=0.5,
        return_exceptions=True,
    )
    assert isinstance(out[0], TaskTimeoutError)
    assert out[0].action == "killed"
    assert out[1] == 2
    assert time.monotonic() - start < 15
    assert wait_gone(int(marker.read_text()))
    assert pool.submit(add, 3, 3).result(timeout=30) == 6


def test_whole_call_timeout_kills_stuck_workers(pool: ProcessBackend, tmp_path: Path) -> None:
    paths = [tmp_path / f"pid{i}" for i in range(2)]
    tasks: list[unirun.Task[Any]] = [unirun.task(pid_then_block, str(p)) for p in paths]
    tasks += [unirun.task(add, i, 0) for i in range(4)]
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        pool.run_all(tasks, timeout=1.5, return_exceptions=True)
    assert time.monotonic() - start < 10
    for path in paths:
        if path.exists():
            assert wait_gone(wait_for_pid(path))
    assert pool.submit(add, 3, 3).result(timeout=30) == 6


def boom_when(path: str) -> NoReturn:
    while not Path(path).exists() or not Path(path).read_text():
        time.sleep(0.01)
    raise ValueError("boom")


def test_fail_fast_abandons_and_shutdown_stops_the_rest(tmp_path: Path) -> None:
    marker = tmp_path / "pid"
    backend = ProcessBackend(max_workers=2)
    try:
        with pytest.raises(ValueError, match="boom"):
            backend.run_all(
                [unirun.task(pid_then_block, str(marker)), unirun.task(boom_when, str(marker))]
            )
        pid = int(marker.read_text())
        assert pid in _worker_pids(backend)  # abandoned: still running, nobody waits
    finally:
        start = time.monotonic()
        backend.shutdown(wait=True)  # kills the worker that runs only abandoned work
    assert time.monotonic() - start < 15
    assert wait_gone(pid)


# -- 2.3 serialisation -------------------------------------------------------------------------


def test_unpicklable_argument_names_the_task(pool: ProcessBackend) -> None:
    tasks = [unirun.task(identity, 1), unirun.Task(identity, (threading.Lock(),), name="locky")]
    out = pool.run_all(tasks, return_exceptions=True)
    assert out[0] == 1
    error = out[1]
    assert isinstance(error, TaskSerializationError)
    assert error.phase == "argument"
    assert error.task_index == 1
    assert "task 1" in str(error)
    assert "locky" in str(error)
    assert "lock" in str(error)
    assert isinstance(error.__cause__, TypeError)


def test_many_bad_then_many_good_arguments(pool: ProcessBackend) -> None:
    bad = [pool.submit(identity, threading.Lock()) for _ in range(100)]
    good = [pool.submit(add, i, 1) for i in range(100)]
    for future in bad:
        assert isinstance(future.exception(timeout=30), TaskSerializationError)
    assert [f.result(timeout=30) for f in good] == [i + 1 for i in range(100)]


def test_unpicklable_result(pool: ProcessBackend) -> None:
    pid = pool.submit(os.getpid).result(timeout=30)
    error = pool.submit(return_lock).exception(timeout=30)
    assert isinstance(error, TaskSerializationError)
    assert error.phase == "result"
    assert "lock" in str(error)
    assert pool.submit(os.getpid).result(timeout=30) in {pid} | _worker_pids(pool)


@pytest.mark.parametrize(
    ("fn", "type_name", "message"),
    [
        (finicky, "FinickyError", "finicky message"),
        (locked, "LockedError", "locked message"),
        (frozen, "FrozenError", "frozen 7"),
    ],
)
def test_unpicklable_exception_gets_a_stand_in(
    pool: ProcessBackend, fn: Any, type_name: str, message: str
) -> None:
    error = pool.submit(fn).exception(timeout=30)
    assert isinstance(error, TaskSerializationError)
    assert error.phase == "exception"
    assert type_name in str(error)
    assert message in str(error)
    assert type_name in str(error.__cause__)  # the remote traceback text
    assert pool.submit(add, 1, 2).result(timeout=30) == 3


def test_argument_that_fails_to_load_in_the_worker(pool: ProcessBackend) -> None:
    out = pool.run_all([unirun.task(identity, ErrorAtUnpickle())], return_exceptions=True)
    error = out[0]
    assert isinstance(error, TaskSerializationError)
    assert error.phase == "argument-load"
    assert "RuntimeError" in str(error)
    assert "message raised in child" in str(error)
    assert "message raised in child" in str(error.__cause__)


def test_lambda_without_cloudpickle_names_the_extra() -> None:
    code = """
    import sys
    sys.modules["cloudpickle"] = None  # as if it were not installed
    import unirun
    out = unirun.run_all([lambda: 1], mode="process", return_exceptions=True)
    print(type(out[0]).__name__, out[0].phase)
    print(str(out[0]))
    """
    done = run_script(code, timeout=60)
    assert done.returncode == 0, done.stderr
    first, text = done.stdout.splitlines()[:2]
    assert first == "TaskSerializationError argument"
    assert "unirun[cloudpickle]" in text
    assert "mode='thread'" in text


# -- 2.4 environment, signals, shutdown ------------------------------------------------------

CTRL_C = """
import os, threading, time, tempfile, pathlib, unirun
from tests.faults.test_process_faults import pid_then_block
d = pathlib.Path(tempfile.mkdtemp())
paths = [d / f"p{i}" for i in range(2)]
def announce():
    while not all(p.exists() and p.read_text() for p in paths):
        time.sleep(0.01)
    print("READY", *[p.read_text() for p in paths], flush=True)
threading.Thread(target=announce, daemon=True).start()
unirun.run_all([unirun.task(pid_then_block, str(p)) for p in paths] + [unirun.task(int)] * 4,
               mode="process", max_workers=2)
"""


def test_ctrl_c_stops_workers() -> None:
    done = run_script(CTRL_C, signal_after_ready=signal.SIGINT, timeout=30)
    assert done.returncode == -signal.SIGINT, done.stderr
    assert done.stderr.count("KeyboardInterrupt") == 1, done.stderr
    assert done.stderr.count("Traceback") == 1, done.stderr
    assert done.elapsed < 5
    pids = [int(p) for p in done.stdout.split("READY", 1)[1].split()]
    for pid in pids:
        assert wait_gone(pid, timeout=5), pid


def test_parent_killed_workers_exit() -> None:
    code = """
    import os, signal, time, tempfile, pathlib, unirun
    from tests.faults.test_process_faults import pid_then_block
    d = pathlib.Path(tempfile.mkdtemp())
    paths = [d / f"p{i}" for i in range(2)]
    ex = unirun.ProcessBackend(max_workers=2)
    futures = [ex.submit(pid_then_block, str(p)) for p in paths]
    while not all(p.exists() and p.read_text() for p in paths):
        time.sleep(0.01)
    print("PIDS", *[p.read_text() for p in paths], flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    """
    done = run_script(code, timeout=30)
    assert done.returncode == -signal.SIGKILL, done.stderr
    pids = [int(p) for p in done.stdout.split("PIDS", 1)[1].split()]
    for pid in pids:
        assert wait_gone(pid, timeout=5), pid


def test_interpreter_exit_with_a_backend_never_shut_down() -> None:
    code = """
    import unirun
    from tests.helpers import sleep_then
    ex = unirun.ProcessBackend(max_workers=1)
    futures = [ex.submit(sleep_then, 0.3, i) for i in range(3)]
    print(futures[0].result(timeout=30))
    """
    done = run_script(code, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0"
    assert done.stderr == ""


def test_interpreter_exit_with_a_warm_backend_is_quiet() -> None:
    code = """
    import unirun
    print(unirun.run_all([lambda: 1, lambda: 2], mode="process"))
    """
    done = run_script(code, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[1, 2]"
    assert done.stderr == ""


def test_never_forks_a_threaded_parent() -> None:
    gate = threading.Event()
    thread = threading.Thread(target=gate.wait)
    thread.start()
    try:
        with ProcessBackend(max_workers=1) as backend:
            assert backend.submit(add, 1, 1).result(timeout=30) == 2
            if sys.platform.startswith("linux"):
                assert backend._ctx.get_start_method() == "forkserver"
            else:
                assert backend._ctx.get_start_method() == "spawn"
    finally:
        gate.set()
        thread.join()


def test_forced_fork_still_works() -> None:
    code = """
    import warnings, unirun
    from tests.helpers import add, getpid
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        backend = unirun.ProcessBackend(max_workers=2, mp_context="fork")
    with backend:
        out = backend.run_all([unirun.task(add, i, 1) for i in range(6)])
        pids = {backend.submit(getpid).result(timeout=30) for _ in range(4)}
    print(out, len(caught), caught[0].category.__name__)
    """
    done = run_script(code, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[1, 2, 3, 4, 5, 6] 1 RuntimeWarning"


def test_a_pool_inherited_through_fork_refuses_work() -> None:
    code = """
    import os, unirun
    from tests.helpers import add
    with unirun.ProcessBackend(max_workers=1) as backend:
        assert backend.submit(add, 1, 1).result(timeout=30) == 2
        pid = os.fork()
        if pid == 0:
            try:
                backend.submit(add, 1, 1)
            except unirun.WorkerCrashedError as exc:
                print("child:", "os.fork" in str(exc), flush=True)
            os._exit(0)
        os.waitpid(pid, 0)
        print("parent:", backend.submit(add, 2, 2).result(timeout=30))
    """
    done = run_script(code, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["child:", "True", "parent:", "4"]


def test_gevent_patched_process_refuses() -> None:
    pytest.importorskip("gevent")
    code = """
    from gevent import monkey
    monkey.patch_all()
    import unirun
    try:
        unirun.run_all([int], mode="process")
    except unirun.BackendUnavailableError as exc:
        print("refused:", exc)
    """
    done = run_script(code, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("refused:")
    assert "gevent" in done.stdout


def test_one_executor_from_ten_threads_with_a_crash(pool: ProcessBackend) -> None:
    results: dict[int, list[Any]] = {}

    def call(k: int) -> None:
        bad = 3 if k == 0 else -1
        results[k] = pool.run_all(
            [unirun.task(square_or_crash, i, bad) for i in range(10)], return_exceptions=True
        )

    threads = [threading.Thread(target=call, args=(k,)) for k in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(results) == list(range(10))
    for k, out in results.items():
        for i, value in enumerate(out):
            if k == 0 and i == 3:
                assert isinstance(value, WorkerCrashedError)
            else:
                assert value == i * i, (k, i, value)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="max_tasks_per_child needs 3.11")
@pytest.mark.parametrize(("workers", "per_child", "tasks"), [(1, 2, 6), (2, 2, 8)])
def test_worker_recycling_with_a_backlog(workers: int, per_child: int, tasks: int) -> None:
    from tests.helpers import getpid

    with ProcessBackend(max_workers=workers, max_tasks_per_child=per_child) as backend:
        futures = [backend.submit(getpid) for _ in range(tasks)]
        pids = [f.result(timeout=30) for f in futures]
    counts = {pid: pids.count(pid) for pid in pids}
    assert max(counts.values()) <= per_child
    assert len(counts) >= tasks // per_child


@pytest.mark.skipif(sys.version_info < (3, 11), reason="max_tasks_per_child needs 3.11")
def test_shutdown_without_wait_mid_recycle() -> None:
    backend = ProcessBackend(max_workers=1, max_tasks_per_child=1)
    futures = [backend.submit(add, i, i) for i in range(6)]
    backend.shutdown(wait=False)
    assert [f.result(timeout=30) for f in futures] == [2 * i for i in range(6)]
