"""CPython 3.13's ``test_concurrent_futures``, run against ThreadBackend and ProcessBackend.

Issue 2: the two backends behave like the stdlib executors they replace, as CPython's own
suite checks them. This module imports the suite's test mixins (installed with Python's
``test`` package) and builds unittest ``TestCase`` classes whose ``executor_type`` is a
unirun backend; pytest runs them as it runs any unittest class. ProcessBackend runs with the
``forkserver`` context (``ProcessPoolForkserverMixin``): unirun never forks a threaded parent.

Only Python 3.13 runs it: the mixins and the exclusions below are written against 3.13's copy
of the suite, so on another version, or without the ``test`` package, the module is skipped.

Nothing is left out in bulk. A test is excluded by name, in the ``*_EXCLUDED`` tables, with
its reason, and pytest reports it as skipped with that reason; ``test_exclusions_are_named``
fails when an excluded name is not a test of its class (a typo, or CPython renamed it). The
reasons are of three kinds:

* it reads a private attribute unirun does not have (``_threads``, ``_processes``,
  ``_executor_manager_thread``, ``_call_queue``, ``_mp_context``) or patches a stdlib
  internal. ``_max_workers`` and ``_broken`` are read as the stdlib means them: every
  backend keeps ``_max_workers`` (public as ``max_workers``), and both pools keep ``_broken``
  (``None`` until the pool breaks), so the tests that read only those run;
* it exercises the stdlib classes by name, not ``executor_type``;
* it asserts stdlib behaviour unirun changes on purpose (SPEC section 4; see each reason).

Four tests start a child interpreter whose script imports the executor from
``concurrent.futures`` by name. They run *retargeted*: CPython's own test, with only that
import line changed to ``from unirun import ...`` (``_retarget`` checks the line is there).
"""

from __future__ import annotations

import ast
import concurrent.futures.process
import contextlib
import importlib
import inspect
import logging
import sys
import textwrap
import unittest
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from unittest import mock

import pytest


def _why_not_runnable() -> str | None:
    running = sys.version_info[:3]  # not narrowed by mypy, which checks for 3.10
    if running[:2] != (3, 13):
        found = ".".join(map(str, running))
        return f"CPython's test_concurrent_futures checks are written for Python 3.13, not {found}"
    try:
        importlib.import_module("test.test_concurrent_futures.util")
    except (ImportError, unittest.SkipTest) as exc:
        return f"CPython's test package is not importable (test.test_concurrent_futures): {exc}"
    return None


_NOT_RUNNABLE = _why_not_runnable()
if _NOT_RUNNABLE is not None:
    pytest.skip(_NOT_RUNNABLE, allow_module_level=True)

from unirun import ProcessBackend, ThreadBackend  # noqa: E402
from unirun._remote import RemoteTraceback  # noqa: E402

# CPython's test modules have no types: held as Any. Concrete TestCase classes are only
# reached through these modules, never imported here, so pytest does not collect (and run
# against the stdlib) CPython's own classes.
_util: Any = importlib.import_module("test.test_concurrent_futures.util")
_executor: Any = importlib.import_module("test.test_concurrent_futures.executor")
_wait: Any = importlib.import_module("test.test_concurrent_futures.test_wait")
_as_completed: Any = importlib.import_module("test.test_concurrent_futures.test_as_completed")
_shutdown: Any = importlib.import_module("test.test_concurrent_futures.test_shutdown")
_thread_pool: Any = importlib.import_module("test.test_concurrent_futures.test_thread_pool")
_process_pool: Any = importlib.import_module("test.test_concurrent_futures.test_process_pool")
_deadlock: Any = importlib.import_module("test.test_concurrent_futures.test_deadlock")
_init: Any = importlib.import_module("test.test_concurrent_futures.test_init")

if sys.platform.startswith("linux"):
    # The forkserver and its resource tracker live as long as this process and hold file
    # descriptors: start them at collection, before any test's leak check counts.
    from multiprocessing import forkserver

    forkserver.ensure_running()


# -- building the classes ---------------------------------------------------------------------

_THREADS = "reads executor._threads, the stdlib pool's private set of worker threads"
_PROCESSES = "reads executor._processes, the stdlib pool's private dict of worker processes"
_STDLIB_BY_NAME = "constructs futures.{cls} by name: it tests the stdlib class, not executor_type"


def _excluded(reason: str) -> Callable[[unittest.TestCase], None]:
    @unittest.skip(f"excluded: {reason}")
    def test(self: unittest.TestCase) -> None:  # pragma: no cover - never runs
        raise AssertionError("an excluded test ran")

    return test


def _retarget(test: Callable[..., Any], old: str, new: str) -> Callable[..., Any]:
    """CPython's ``test`` with the line ``old`` of its source replaced by ``new``.

    For the tests that run a script in a child interpreter: the script imports the executor
    from ``concurrent.futures`` by name; the retargeted test imports it from ``unirun``.
    Everything else, the script's body and every assertion, is CPython's.
    """
    lines, first = inspect.getsourcelines(test)
    source = textwrap.dedent("".join(lines))
    if source.count(old) != 1:
        raise AssertionError(f"{test.__qualname__}: expected {old!r} once in CPython's source")
    tree = ast.increment_lineno(ast.parse(source.replace(old, new)), first - 1)
    filename = inspect.getsourcefile(test) or "<cpython test>"
    namespace: dict[str, Any] = {}
    exec(compile(tree, filename, "exec"), test.__globals__, namespace)
    function: Callable[..., Any] = namespace[test.__name__]
    return function


def _known_difference(test: Callable[..., Any], why: str) -> Callable[..., Any]:
    """CPython's ``test``, expected to fail: a real difference from the stdlib, reported.

    pytest runs it as a strict xfail, so the entry must go once unirun is fixed.
    """

    def known(self: unittest.TestCase) -> None:
        test(self)

    known.__name__ = test.__name__
    known.__doc__ = f"KNOWN DIFFERENCE: {why}"
    expected: Callable[..., Any] = unittest.expectedFailure(known)
    return expected


_IMPORT_BY_NAME = "from concurrent.futures import {executor_type}"
_IMPORT_FROM_UNIRUN = "from unirun import {executor_type}"

#: Every built class, by name: for ``test_exclusions_are_named``.
_BUILT: dict[str, tuple[type[unittest.TestCase], Mapping[str, str]]] = {}


def _build(
    name: str,
    bases: tuple[type, ...],
    executor_type: type,
    excluded: Mapping[str, str],
    known: Mapping[str, str] | None = None,
    **overrides: Any,
) -> type[unittest.TestCase]:
    """A TestCase of CPython's ``bases`` run with ``executor_type``.

    ``excluded``: test name -> why it does not apply to unirun (skipped with that reason).
    ``known``: test name -> a real difference from the stdlib, reported (strict xfail).
    ``overrides``: retargeted tests and adapted helpers.
    """
    namespace: dict[str, Any] = {
        "__module__": __name__,
        "__qualname__": name,
        "executor_type": executor_type,
        **overrides,
    }
    cls = type(name, bases, namespace)
    assert issubclass(cls, unittest.TestCase)
    for test_name, reason in excluded.items():
        setattr(cls, test_name, _excluded(reason))
    for test_name, why in (known or {}).items():
        setattr(cls, test_name, _known_difference(getattr(cls, test_name), why))
    _BUILT[name] = (cls, {**excluded, **(known or {})})
    return cls


@contextlib.contextmanager
def _assert_logged_by_unirun(self: unittest.TestCase, msg: str) -> Iterator[None]:
    """FailingInitializerMixin._assert_logged, reading the ``unirun`` logger.

    CPython's helper wants the initializer's exception logged on ``concurrent.futures`` at
    CRITICAL; unirun logs everything on its own ``unirun`` logger, this one at ERROR (with
    the traceback, so ``msg`` is checked as CPython checks it).
    """
    with self.assertLogs("unirun", logging.ERROR) as cm:
        yield
    assert any(msg in line for line in cm.output), cm.output


# -- thread: ThreadBackend in place of ThreadPoolExecutor ------------------------------------

_ThreadMixin = _util.ThreadPoolMixin
_Base = _util.BaseTestCase

#: ExecutorTest and test_thread_pool's ThreadPoolExecutorTest.
THREAD_EXECUTOR_EXCLUDED = {
    "test_saturation": _THREADS,
    "test_idle_thread_reuse": _THREADS,
    "test_hang_global_shutdown_lock": (
        "bpo-45021: the fork-safety of the stdlib's _global_shutdown_lock, with "
        "futures.ThreadPoolExecutor and a fork ProcessPoolExecutor by name; no unirun code runs"
    ),
}

#: ExecutorShutdownTest and test_shutdown's ThreadPoolShutdownTest.
THREAD_SHUTDOWN_EXCLUDED = {
    "test_threads_terminate": _THREADS,
    "test_context_manager_shutdown": _STDLIB_BY_NAME.format(cls="ThreadPoolExecutor")
    + "; and "
    + _THREADS,
    "test_del_shutdown": _STDLIB_BY_NAME.format(cls="ThreadPoolExecutor") + "; and " + _THREADS,
    "test_shutdown_no_wait": _STDLIB_BY_NAME.format(cls="ThreadPoolExecutor") + "; and " + _THREADS,
    "test_thread_names_assigned": _STDLIB_BY_NAME.format(cls="ThreadPoolExecutor")
    + "; and "
    + _THREADS,
    "test_thread_names_default": _STDLIB_BY_NAME.format(cls="ThreadPoolExecutor")
    + "; and "
    + _THREADS,
}

ThreadBackendExecutorTest = _build(
    "ThreadBackendExecutorTest",
    (_thread_pool.ThreadPoolExecutorTest,),
    ThreadBackend,
    THREAD_EXECUTOR_EXCLUDED,
    known={},
)
ThreadBackendWaitTest = _build(
    "ThreadBackendWaitTest", (_wait.ThreadPoolWaitTests,), ThreadBackend, {}
)
ThreadBackendAsCompletedTest = _build(
    "ThreadBackendAsCompletedTest",
    (_as_completed.AsCompletedTests, _ThreadMixin, _Base),
    ThreadBackend,
    {},
)
ThreadBackendShutdownTest = _build(
    "ThreadBackendShutdownTest",
    (_shutdown.ThreadPoolShutdownTest,),
    ThreadBackend,
    THREAD_SHUTDOWN_EXCLUDED,
    test_interpreter_shutdown=_retarget(
        _shutdown.ExecutorShutdownTest.test_interpreter_shutdown,
        _IMPORT_BY_NAME,
        _IMPORT_FROM_UNIRUN,
    ),
    test_submit_after_interpreter_shutdown=_retarget(
        _shutdown.ExecutorShutdownTest.test_submit_after_interpreter_shutdown,
        _IMPORT_BY_NAME,
        _IMPORT_FROM_UNIRUN,
    ),
    test_hang_gh83386=_retarget(
        _shutdown.ExecutorShutdownTest.test_hang_gh83386, _IMPORT_BY_NAME, _IMPORT_FROM_UNIRUN
    ),
    test_cancel_futures_wait_false=_retarget(
        _shutdown.ThreadPoolShutdownTest.test_cancel_futures_wait_false,
        "from concurrent.futures import ThreadPoolExecutor",
        "from unirun import ThreadBackend as ThreadPoolExecutor",
    ),
)
ThreadBackendInitializerTest = _build(
    "ThreadBackendInitializerTest",
    (_init.InitializerMixin, _ThreadMixin, _Base),
    ThreadBackend,
    {},
)
ThreadBackendFailingInitializerTest = _build(
    "ThreadBackendFailingInitializerTest",
    (_init.FailingInitializerMixin, _ThreadMixin, _Base),
    ThreadBackend,
    {},
    _assert_logged=_assert_logged_by_unirun,
)


# -- process: ProcessBackend (forkserver) in place of ProcessPoolExecutor ---------------------

_ProcessMixin = _util.ProcessPoolForkserverMixin

#: ExecutorTest and test_process_pool's ProcessPoolExecutorTest.
PROCESS_EXECUTOR_EXCLUDED = {
    "test_killed_child": (
        _PROCESSES + "; and it expects one dead worker to break the whole pool (later submits "
        "raise BrokenProcessPool): ProcessBackend self-heals, only the dead worker's task fails"
    ),
    "test_saturation": _PROCESSES,
    "test_idle_process_reuse_one": _PROCESSES,
    "test_idle_process_reuse_multiple": _PROCESSES,
    "test_max_tasks_per_child": _PROCESSES,
    "test_max_tasks_per_child_defaults_to_spawn_context": (
        "reads executor._mp_context; and ProcessBackend defaults to forkserver on Linux, "
        "with or without max_tasks_per_child (SPEC 4: never fork a threaded parent)"
    ),
    "test_python_finalization_error": (
        "patches threading._start_joinable_thread to fail the stdlib pool's second internal "
        "thread (its queue feeder): stdlib-internal, ProcessBackend starts other threads"
    ),
}

#: ExecutorShutdownTest and test_shutdown's ProcessPoolShutdownTest.
PROCESS_SHUTDOWN_EXCLUDED = {
    "test_cancel_futures": (
        "asserts that of 50 tasks submitted just before shutdown(cancel_futures=True) at least "
        "one runs: true of the stdlib because it marks futures RUNNING as it moves them to its "
        "call queue, ahead of any worker; ProcessBackend starts a task only when a worker takes "
        "it, so all 50 may be cancelled, as documented (only what has started runs on)"
    ),
    "test_processes_terminate": _PROCESSES,
    "test_context_manager_shutdown": _STDLIB_BY_NAME.format(cls="ProcessPoolExecutor")
    + "; and "
    + _PROCESSES,
    "test_del_shutdown": _STDLIB_BY_NAME.format(cls="ProcessPoolExecutor")
    + "; and it reads _processes, _call_queue and _executor_manager_thread",
    "test_shutdown_no_wait": _STDLIB_BY_NAME.format(cls="ProcessPoolExecutor")
    + "; and it reads _processes, _call_queue and _executor_manager_thread",
    "test_hang_gh83386": (
        "CPython skips it for process pools (gh-83386), and its script cannot run for one "
        "(it calls multiprocessing.set_start_method without importing multiprocessing)"
    ),
}

#: test_deadlock's ExecutorDeadlockTest.
_PER_TASK = (
    "; ProcessBackend gives that task TaskSerializationError (a PicklingError) and stays "
    "usable (SPEC 6: what cannot be pickled or unpickled either way is an error of its task, "
    "not of the pool)"
)
PROCESS_DEADLOCK_EXCLUDED = {
    "test_exit_at_task_unpickle": "expects BrokenProcessPool when unpickling a task exits the "
    "worker" + _PER_TASK,
    "test_error_at_task_unpickle": "expects BrokenProcessPool when a task cannot be unpickled in "
    "the worker" + _PER_TASK,
    "test_exit_during_result_pickle_on_worker": "expects the SystemExit raised while pickling "
    "the result" + _PER_TASK,
    "test_error_during_result_unpickle_in_result_handler": "expects BrokenProcessPool when a "
    "result cannot be unpickled in the parent" + _PER_TASK,
    "test_exit_during_result_unpickle_in_result_handler": "expects BrokenProcessPool when "
    "unpickling a result raises SystemExit in the parent" + _PER_TASK,
    "test_shutdown_deadlock_pickle": "reads executor._executor_manager_thread",
    "test_gh105829_should_not_deadlock_if_wakeup_pipe_full": (
        "patches the stdlib pool's private _ExecutorManagerThread and _ThreadWakeup"
    ),
}


def _traceback_with_unirun_cause(self: unittest.TestCase) -> None:
    """CPython's test_traceback, with ``futures.process._RemoteTraceback`` (a private class
    the test checks the cause's type against) standing for unirun's ``RemoteTraceback``;
    every other assertion (the worker's source line in ``cause.tb`` and in what
    ``sys.excepthook`` prints) is CPython's."""
    with mock.patch.object(concurrent.futures.process, "_RemoteTraceback", RemoteTraceback):
        _process_pool.ProcessPoolExecutorTest.test_traceback(self)


ProcessBackendExecutorTest = _build(
    "ProcessBackendExecutorTest",
    (_process_pool.ProcessPoolExecutorTest, _ProcessMixin, _Base),
    ProcessBackend,
    PROCESS_EXECUTOR_EXCLUDED,
    known={},
    test_traceback=_traceback_with_unirun_cause,
)
ProcessBackendWaitTest = _build(
    "ProcessBackendWaitTest", (_wait.WaitTests, _ProcessMixin, _Base), ProcessBackend, {}
)
ProcessBackendAsCompletedTest = _build(
    "ProcessBackendAsCompletedTest",
    (_as_completed.AsCompletedTests, _ProcessMixin, _Base),
    ProcessBackend,
    {},
)
ProcessBackendShutdownTest = _build(
    "ProcessBackendShutdownTest",
    (_shutdown.ProcessPoolShutdownTest, _ProcessMixin, _Base),
    ProcessBackend,
    PROCESS_SHUTDOWN_EXCLUDED,
    known={},
    test_interpreter_shutdown=_retarget(
        _shutdown.ExecutorShutdownTest.test_interpreter_shutdown,
        _IMPORT_BY_NAME,
        _IMPORT_FROM_UNIRUN,
    ),
    test_submit_after_interpreter_shutdown=_retarget(
        _shutdown.ExecutorShutdownTest.test_submit_after_interpreter_shutdown,
        _IMPORT_BY_NAME,
        _IMPORT_FROM_UNIRUN,
    ),
)
ProcessBackendDeadlockTest = _build(
    "ProcessBackendDeadlockTest",
    (_deadlock.ExecutorDeadlockTest, _ProcessMixin, _Base),
    ProcessBackend,
    PROCESS_DEADLOCK_EXCLUDED,
)
ProcessBackendInitializerTest = _build(
    "ProcessBackendInitializerTest",
    (_init.InitializerMixin, _ProcessMixin, _Base),
    ProcessBackend,
    {},
)
ProcessBackendFailingInitializerTest = _build(
    "ProcessBackendFailingInitializerTest",
    (_init.FailingInitializerMixin, _ProcessMixin, _Base),
    ProcessBackend,
    {
        # A known difference, not an exclusion: it fails in setUp, where an xfail cannot be.
        "test_initializer": (
            "KNOWN DIFFERENCE, skipped because it fails in setUp: initargs holding a "
            "multiprocessing Queue (or Lock, Event...) raise TypeError, since ProcessBackend "
            "pickles initargs up front instead of at process start; and a failing initializer "
            "is not logged at all (only the BrokenExecutor carries its traceback)"
        ),
    },
    _assert_logged=_assert_logged_by_unirun,
)


ProcessBackendFailingInitializerResourcesTest = _build(
    "ProcessBackendFailingInitializerResourcesTest",
    (_init.FailingInitializerResourcesTest,),
    ProcessBackend,
    {
        "test_spawn": (
            "runs CPython's ProcessPoolSpawnFailingInitializerTest by name (the stdlib pool), "
            "then stops this process's shared resource tracker (gh-104090, a stdlib leak)"
        ),
        "test_forkserver": (
            "runs CPython's ProcessPoolForkserverFailingInitializerTest by name (the stdlib "
            "pool), then stops this process's shared resource tracker (gh-104090, a stdlib "
            "leak); the leak check of every test here covers unirun's resources"
        ),
    },
)


# -- checks of this module ---------------------------------------------------------------------


def test_exclusions_are_named() -> None:
    """Every exclusion names a test its CPython base class has: no typo, no stale entry."""
    for name, (cls, excluded) in _BUILT.items():
        for test_name in excluded:
            assert any(test_name in vars(base) for base in cls.__mro__[1:]), (
                f"{name}: {test_name!r} is not a CPython test of this class"
            )
