"""Log records from process workers reach the parent's ``logging`` handlers."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable, Iterator

import pytest

import unirun
from tests.faults.harness import run_script
from tests.helpers import add
from unirun import ProcessBackend, WorkerCrashedError
from unirun._backends import _process_logs

LOGGER = "tests.worker"

# -- task functions (module level: they pickle by reference) ------------------------------


def log(level: int, message: str, *args: object) -> int:
    logging.getLogger(LOGGER).log(level, message, *args)
    return os.getpid()


async def alog(message: str) -> None:
    await asyncio.sleep(0)
    logging.getLogger(LOGGER).warning(message)


def log_exception(message: str, *args: object) -> None:
    try:
        raise ValueError("the reason")
    except ValueError:
        logging.getLogger(LOGGER).exception(message, *args)


def log_then_exit(message: str) -> None:
    logging.getLogger(LOGGER).error(message)
    os._exit(3)


def log_unpicklable_extra() -> None:
    logging.getLogger(LOGGER).warning("with a lock", extra={"lock": threading.Lock()})


def log_from_a_thread(message: str) -> None:
    thread = threading.Thread(target=logging.getLogger(LOGGER).warning, args=(message,))
    thread.start()
    thread.join()


def logging_state() -> tuple[list[str], int, bool]:
    root = logging.getLogger()
    debug = logging.getLogger(LOGGER).isEnabledFor(logging.DEBUG)
    return [type(h).__name__ for h in root.handlers], root.level, debug


class _KeptHandler(logging.NullHandler):
    pass


def add_kept_handler() -> None:
    logging.getLogger().addHandler(_KeptHandler())


# -- fixtures -----------------------------------------------------------------------------


@pytest.fixture
def pool() -> Iterator[ProcessBackend]:
    backend = ProcessBackend(max_workers=1)
    try:
        yield backend
    finally:
        backend.shutdown(wait=True, cancel_futures=True)


def _records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER]


# -- tests --------------------------------------------------------------------------------


def test_a_warning_reaches_caplog(pool: ProcessBackend, caplog: pytest.LogCaptureFixture) -> None:
    pid = pool.submit(log, logging.WARNING, "value %s of %d%%", "x", 3).result(timeout=30)
    # handled before the task's result is set: frames arrive in order
    [record] = _records(caplog)
    assert record.levelno == logging.WARNING
    assert record.getMessage() == "value x of 3%"
    assert record.args is None
    assert record.process == pid != os.getpid()
    assert f"{LOGGER}:" in caplog.text


def test_exception_text_is_forwarded(
    pool: ProcessBackend, caplog: pytest.LogCaptureFixture
) -> None:
    pool.submit(log_exception, "failed %s", "hard").result(timeout=30)
    [record] = _records(caplog)
    assert record.levelno == logging.ERROR
    assert record.getMessage() == "failed hard"
    assert record.exc_info is None
    assert record.exc_text is not None
    assert "Traceback" in record.exc_text
    assert "ValueError: the reason" in record.exc_text
    assert "ValueError: the reason" in caplog.text  # the parent's formatter prints it


def test_the_parents_levels_decide_what_is_sent(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)  # before the worker starts
    with ProcessBackend(max_workers=1) as pool:
        pool.submit(log, logging.INFO, "info %d", 1).result(timeout=30)
        pool.submit(log, logging.DEBUG, "debug %d", 2).result(timeout=30)
        assert pool.submit(logging_state).result(timeout=30)[2] is False
    assert [r.getMessage() for r in _records(caplog)] == ["info 1"]


def test_a_record_logged_just_before_a_crash_is_delivered(
    pool: ProcessBackend, caplog: pytest.LogCaptureFixture
) -> None:
    error = pool.submit(log_then_exit, "last words").exception(timeout=30)
    assert isinstance(error, WorkerCrashedError)
    assert error.exitcode == 3
    assert [r.getMessage() for r in _records(caplog)] == ["last words"]


def test_an_unpicklable_extra_is_sent_as_its_repr(
    pool: ProcessBackend, caplog: pytest.LogCaptureFixture
) -> None:
    pool.submit(log_unpicklable_extra).result(timeout=30)
    [record] = _records(caplog)
    assert record.getMessage() == "with a lock"
    assert isinstance(record.__dict__["lock"], str)
    assert "lock" in record.__dict__["lock"]


def test_records_from_a_tasks_own_threads(
    pool: ProcessBackend, caplog: pytest.LogCaptureFixture
) -> None:
    pool.submit(log_from_a_thread, "from a thread").result(timeout=30)
    assert [r.getMessage() for r in _records(caplog)] == ["from a thread"]


def test_async_tasks_in_a_worker_loop(caplog: pytest.LogCaptureFixture) -> None:
    with ProcessBackend(max_workers=1, async_concurrency=2) as pool:
        pool.run_all([unirun.task(alog, f"async {i}") for i in range(2)])
        pool.submit(log, logging.WARNING, "sync").result(timeout=30)
    assert sorted(r.getMessage() for r in _records(caplog)) == ["async 0", "async 1", "sync"]


def test_nothing_is_sent_when_nothing_is_logged(
    pool: ProcessBackend, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    forwarded: list[bytes] = []
    handle: Callable[[bytes], None] = _process_logs.handle_forwarded

    def counting(payload: bytes) -> None:
        forwarded.append(payload)
        handle(payload)

    monkeypatch.setattr(_process_logs, "handle_forwarded", counting)
    handlers, level, debug = pool.submit(logging_state).result(timeout=30)
    # one handler, behind the parent's level: a filtered-out call stops at the level check
    assert handlers == ["ForwardHandler"]
    assert level == logging.getLogger().level
    assert debug is logging.getLogger(LOGGER).isEnabledFor(logging.DEBUG) is False
    assert pool.run_all([unirun.task(add, i, 1) for i in range(20)]) == list(range(1, 21))
    pool.submit(log, logging.DEBUG, "below the level").result(timeout=30)
    assert forwarded == []
    pool.submit(log, logging.WARNING, "one").result(timeout=30)
    assert len(forwarded) == 1
    assert [r.getMessage() for r in _records(caplog)] == ["one"]


def test_handlers_added_by_the_initializer_are_kept() -> None:
    with ProcessBackend(max_workers=1, initializer=add_kept_handler) as pool:
        handlers, _, _ = pool.submit(logging_state).result(timeout=30)
    assert handlers == ["_KeptHandler", "ForwardHandler"]


def test_each_record_is_handled_once_under_fork() -> None:
    # A forked worker inherits the parent's handlers; they must not write a second copy.
    code = """
    import logging, os, sys, warnings
    import unirun
    from tests.backends.test_process_logs import log
    logging.basicConfig(stream=sys.stdout, format="%(process)d %(name)s %(message)s")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        backend = unirun.ProcessBackend(max_workers=1, mp_context="fork")
    with backend:
        pid = backend.submit(log, logging.WARNING, "hello %s", "parent").result(timeout=30)
    print("worker", pid, os.getpid())
    """
    done = run_script(code, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    _, worker, parent = lines[-1].split()
    assert worker != parent
    assert lines[:-1] == [f"{worker} {LOGGER} hello parent"]
