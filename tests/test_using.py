"""``unirun.using()``: ambient defaults for calls that leave out a mode or an option."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

import unirun
from tests.helpers import sleep_then
from unirun._errors import BackendUnavailableError
from unirun._options import ambient
from unirun._registry import factory_for


def _importable(mode: str) -> bool:
    try:
        factory_for(mode)
    except (BackendUnavailableError, ModuleNotFoundError):
        return False
    return True


def where() -> int:
    return threading.get_ident()


def ambient_mode() -> object:
    return ambient().get("mode")


async def async_ambient_mode() -> object:
    await asyncio.sleep(0)
    return ambient().get("mode")


def thread_name() -> str:
    return threading.current_thread().name


def _ran_in_caller(mode: str | None = None, **options: Any) -> bool:
    if mode is None:
        return unirun.run_all([where, where], **options) == [where()] * 2
    return unirun.run_all([where, where], mode=mode, **options) == [where()] * 2


# -- mode ---------------------------------------------------------------------------------


def test_calls_without_mode_take_it() -> None:
    with unirun.using("serial"):
        assert _ran_in_caller()
        assert unirun.map(lambda x: where(), [1, 2]) == [where()] * 2
        assert list(unirun.imap(lambda x: where(), [1])) == [where()]
    assert not _ran_in_caller(hint="io")  # outside: auto, threads for io


def test_the_failing_task_names_the_ambient_mode() -> None:
    def fail() -> None:
        raise ValueError("x")

    with unirun.using("serial"), pytest.raises(ValueError, match="x") as info:
        unirun.run_all([fail])
    assert "on mode 'serial'" in " ".join(getattr(info.value, "__notes__", []))


def test_explicit_mode_wins() -> None:
    with unirun.using("serial"):
        assert not _ran_in_caller("thread")


def test_explicit_auto_wins() -> None:
    with unirun.using("serial"):
        assert not _ran_in_caller("auto", hint="io")


def test_nesting_and_restoring() -> None:
    with unirun.using("serial", max_workers=3):
        with unirun.using("thread"):
            assert ambient() == {"mode": "thread", "max_workers": 3}
            assert not _ran_in_caller()
        assert ambient() == {"mode": "serial", "max_workers": 3}
        assert _ran_in_caller()
        with unirun.using(max_workers=5):  # no mode: the outer one stays
            assert ambient() == {"mode": "serial", "max_workers": 5}
    assert ambient() == {}


def test_restored_after_an_exception() -> None:
    with pytest.raises(KeyError), unirun.using("serial"):
        raise KeyError("k")
    assert ambient() == {}


def test_an_executor_instance_as_ambient_mode() -> None:
    with unirun.ThreadBackend(max_workers=2) as pool:
        with unirun.using(pool):
            assert unirun.run_all([thread_name])[0].startswith("unirun-thread")
            assert unirun.executor() is pool  # the caller keeps ownership
        assert pool.submit(where).result(timeout=10) != where()  # not shut down


def test_bad_arguments_fail_on_entry() -> None:
    with pytest.raises(ValueError, match="Did you mean 'process'"), unirun.using("proces"):
        pass
    with pytest.raises(ValueError, match="max_workers"), unirun.using(max_workers=0):
        pass
    with pytest.raises(ValueError, match="hint"), unirun.using(hint="gpu"):
        pass
    with pytest.raises(TypeError, match="mode name or an Executor"), unirun.using(3):
        pass


# -- options ------------------------------------------------------------------------------


def _threads_used(**options: Any) -> int:
    tasks = [unirun.task(sleep_then, 0.02, None) for _ in range(8)]

    def ident_after(t: Any) -> int:
        t()
        return where()

    return len(set(unirun.map(ident_after, tasks, mode="thread", **options)))


def test_max_workers_defaults_from_using_and_explicit_wins() -> None:
    with unirun.using(max_workers=1):
        assert _threads_used() == 1
        assert _threads_used(max_workers=2) == 2


def test_timeout_defaults_from_using_and_explicit_wins() -> None:
    tasks = [unirun.task(sleep_then, 0.3, 1)]
    with unirun.using(timeout=0.05):
        with pytest.raises(TimeoutError):
            unirun.run_all(tasks, mode="thread")
        assert unirun.run_all(tasks, mode="thread", timeout=None) == [1]


def test_run_options_reach_the_backends_own_run_all() -> None:
    with unirun.using(return_exceptions=True), unirun.SerialBackend() as backend:
        out: list[object] = backend.run_all([lambda: 1 / 0])
    assert isinstance(out[0], ZeroDivisionError)


def test_backend_options_go_only_to_backends_that_take_them() -> None:
    with unirun.using(thread_name_prefix="ambient-pool"):
        assert unirun.run_all([thread_name], mode="thread")[0].startswith("ambient-pool")
        assert unirun.run_all([thread_name], mode="serial") == [thread_name()]


def test_ambient_max_workers_does_not_break_serial() -> None:
    with unirun.using(max_workers=4):
        assert _ran_in_caller("serial")


def test_explicit_backend_option_the_backend_refuses_is_an_error() -> None:
    with pytest.raises(TypeError):
        unirun.run_all([where], mode="serial", thread_name_prefix="x")


# -- executor() -----------------------------------------------------------------------------


def test_executor_obeys_using() -> None:
    with unirun.using("serial"), unirun.executor() as ex:
        assert isinstance(ex, unirun.SerialBackend)
    with unirun.using("thread", max_workers=3), unirun.executor() as ex:
        assert isinstance(ex, unirun.ThreadBackend)
        assert ex.max_workers == 3
    with unirun.using("serial"), unirun.executor("thread") as ex:  # explicit wins
        assert isinstance(ex, unirun.ThreadBackend)
    with unirun.using("serial"), unirun.executor("auto", hint="io") as ex:
        assert isinstance(ex, unirun.ThreadBackend)
    with unirun.using(hint="io"), unirun.executor() as ex:
        assert isinstance(ex, unirun.ThreadBackend)


# -- inheritance into tasks --------------------------------------------------------------


def test_thread_tasks_inherit_it() -> None:
    with unirun.using("serial"):
        assert unirun.run_all([ambient_mode, ambient_mode], mode="thread") == ["serial"] * 2


def test_a_run_all_inside_a_thread_task_follows_it() -> None:
    def inner() -> bool:
        return _ran_in_caller()  # serial from inside: runs in this worker thread

    with unirun.using("serial"):
        assert unirun.run_all([inner, inner], mode="thread") == [True, True]


def test_async_tasks_on_sync_backends_inherit_it() -> None:
    with unirun.using("serial"):
        assert unirun.run_all([async_ambient_mode], mode="thread") == ["serial"]


@pytest.mark.skipif(not _importable("asyncio"), reason="the asyncio backend is not there yet")
def test_async_tasks_on_the_event_loop_inherit_it() -> None:
    with unirun.using("serial"):
        assert unirun.run_all([async_ambient_mode] * 3, mode="asyncio") == ["serial"] * 3


def test_auto_routed_tasks_inherit_it() -> None:
    with unirun.using(max_workers=2):
        out = unirun.run_all([unirun.Task(lambda: ambient().get("max_workers"), hint="io")])
    assert out == [2]


def test_arun_all_inherits_it() -> None:
    async def main() -> list[object]:
        return await unirun.arun_all([ambient_mode, async_ambient_mode])

    with unirun.using("serial"):
        assert asyncio.run(main()) == ["serial", "serial"]


def test_using_is_per_thread_of_control() -> None:
    seen: list[object] = []
    entered = threading.Event()
    leave = threading.Event()

    def other() -> None:
        entered.wait(10)
        seen.append(ambient().get("mode"))
        leave.set()

    t = threading.Thread(target=other)
    t.start()
    with unirun.using("serial"):
        entered.set()
        leave.wait(10)
    t.join()
    assert seen == [None]  # a thread unirun did not start does not see it
    time.sleep(0)
