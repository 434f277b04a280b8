"""What GeventBackend does differently: patched and unpatched, greenlet kills, rejections.

The test process is never monkey-patched: everything that needs a patched interpreter runs
in a subprocess (``gevent_patched_runner.py``, or pytest itself for the contract suite).
"""

from __future__ import annotations

import contextvars
import gc
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

import unirun
from unirun._backends._base import BackendBase

gevent = pytest.importorskip("gevent")
greenlet = pytest.importorskip("greenlet")

from unirun._backends._gevent import GeventBackend  # noqa: E402 - needs gevent

ROOT = Path(__file__).resolve().parents[2]
RUNNER = Path(__file__).with_name("gevent_patched_runner.py")


def run_python(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run a fresh interpreter at the repository root; a hang fails, never blocks."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("UNIRUN_TEST_MODES", None)
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=env,
        check=False,
    )


@pytest.fixture
def gb() -> Iterator[GeventBackend]:
    with GeventBackend(max_workers=8) as backend:
        yield backend


def live_greenlets() -> int:
    gc.collect()
    current = greenlet.getcurrent()
    return sum(
        1
        for g in gc.get_objects()
        if isinstance(g, greenlet.greenlet) and not g.dead and g is not current
    )


# -- patched: each in an interpreter that called gevent.monkey.patch_all() first -----------


def test_contract_suite_passes_when_patched() -> None:
    code = (
        "from gevent import monkey; monkey.patch_all()\n"
        "import sys, pytest\n"
        "sys.exit(pytest.main(['tests/contract', '--modes=gevent', '-p', 'no:cacheprovider',"
        " '-q', '-o', 'addopts=-ra --strict-markers --strict-config']))\n"
    )
    done = run_python("-c", code, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout
    assert " failed" not in done.stdout


@pytest.mark.parametrize(
    "scenario",
    [
        "capabilities",
        "task_timeout_kills",
        "fail_fast_kills_siblings",
        "whole_call_timeout",
        "map_in_lanes",
        "system_errors_are_outcomes",
        "process_mode_refused",
        "urllib_overlaps",
    ],
)
def test_patched_scenario(scenario: str) -> None:
    done = run_python("-W", "error", str(RUNNER), scenario)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().endswith("OK"), done.stdout
    assert "Traceback" not in done.stderr, done.stderr  # no hub report of a greenlet's error


def test_patched_blocking_sleeps_overlap() -> None:
    # 2,000 time.sleep(0.01) on 500 greenlets: 4 rounds, ~0.04 s; serially it would be 20 s
    done = run_python("-W", "error", str(RUNNER), "many_sleeps")
    assert done.returncode == 0, done.stdout + done.stderr
    elapsed = float(done.stdout.split("ELAPSED")[1].split()[0])
    assert elapsed < 5, elapsed


# -- unpatched: in this process ---------------------------------------------------------------


def test_not_patched_warns_once_per_process() -> None:
    code = (
        "import warnings, unirun\n"
        "from unirun._backends._gevent import GeventBackend, GeventNotPatchedWarning\n"
        "try:\n"
        "    GeventBackend()\n"
        "except GeventNotPatchedWarning as w:\n"
        "    text = str(w)\n"
        "else:\n"
        "    raise SystemExit('no warning')\n"
        "assert 'gevent.monkey.patch_all()' in text and 'python -m gevent.monkey' in text\n"
        "assert isinstance(GeventNotPatchedWarning('x'), RuntimeWarning)\n"
        "GeventBackend().shutdown()\n"  # -W error: a second warning would raise here
        "print(unirun.run_all([abs], mode='gevent') if False else 'OK')\n"
    )
    done = run_python("-W", "error", "-c", code)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "OK", done.stdout


def test_warning_points_at_the_callers_code() -> None:
    code = (
        "import warnings, unirun\n"
        "with warnings.catch_warnings(record=True) as seen:\n"
        "    warnings.simplefilter('always')\n"
        "    unirun.run_all([lambda: 1], mode='gevent')\n"
        "print(len(seen), seen[0].filename, seen[0].category.__name__)\n"
    )
    done = run_python("-c", code)
    assert done.stdout.split() == ["1", "<string>", "GeventNotPatchedWarning"], (
        done.stdout + done.stderr
    )


def test_no_warning_when_patched() -> None:
    code = (
        "from gevent import monkey; monkey.patch_all()\n"
        "import unirun\n"
        "print(unirun.run_all([lambda: 1], mode='gevent'))\n"
    )
    done = run_python("-W", "error", "-c", code)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "[1]", done.stdout


def test_missing_gevent_names_the_extra() -> None:
    code = (
        "import sys; sys.modules['gevent'] = None\n"
        "import unirun\n"
        "try:\n"
        "    unirun.executor('gevent')\n"
        "except unirun.BackendUnavailableError as exc:\n"
        "    assert 'unirun[gevent]' in str(exc) and exc.extra == 'unirun[gevent]', exc\n"
        "    print('OK')\n"
    )
    done = run_python("-c", code)
    assert done.stdout.strip() == "OK", done.stdout + done.stderr


def test_import_unirun_neither_imports_nor_patches_gevent() -> None:
    code = (
        "import sys, unirun\n"
        "unirun.run_all([lambda: 1], mode='thread')\n"
        "unirun.choose_backend(hint='io')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('gevent', 'greenlet')))\n"
    )
    done = run_python("-c", code)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


def test_capabilities_claim_nothing_when_not_patched() -> None:
    # a task blocking in the stdlib blocks the hub: it neither overlaps nor can be killed
    assert GeventBackend.capabilities == frozenset()
    assert GeventBackend.mode == "gevent"


def test_default_pool_size() -> None:
    with GeventBackend() as backend:
        assert backend.max_workers == 100


@pytest.mark.parametrize("bad", [0, -1])
def test_bad_max_workers(bad: int) -> None:
    with pytest.raises(ValueError, match="max_workers"):
        GeventBackend(max_workers=bad)


async def _coro_fn() -> int:
    return 1


def test_async_callables_are_rejected_before_anything_runs(gb: GeventBackend) -> None:
    ran: list[int] = []
    with pytest.raises(TypeError, match=r"task 1 is an async callable.*mode='asyncio'"):
        gb.run_all([lambda: ran.append(0), _coro_fn])
    with pytest.raises(TypeError, match=r"task 0 .*is a coroutine object"):
        gb.run_all([_coro_fn(), lambda: ran.append(1)])  # closed: no 'never awaited'
    with pytest.raises(TypeError, match="async callable"):
        gb.submit(_coro_fn)
    with pytest.raises(TypeError, match="async callable"):
        unirun.run_all([_coro_fn], mode="gevent")
    assert ran == []


def test_async_task_in_a_lazy_batch_is_rejected(gb: GeventBackend) -> None:
    with pytest.raises(TypeError, match="async callable"):
        gb.run_all(t for t in [lambda: 1, _coro_fn])


def test_sync_callable_returning_a_coroutine_is_that_tasks_error(gb: GeventBackend) -> None:
    out = gb.run_all([lambda: _coro_fn(), lambda: 2], return_exceptions=True)
    assert isinstance(out[0], TypeError)
    assert "returned a coroutine" in str(out[0])
    assert out[1] == 2


def test_gevent_aware_waits_overlap_when_not_patched(gb: GeventBackend) -> None:
    # every task waits until all have arrived: only possible if they run at once
    n = gb.max_workers
    arrived: list[int] = []
    everyone = gevent.event.Event()

    def meet(i: int) -> int:
        arrived.append(i)
        if len(arrived) == n:
            everyone.set()
        if not everyone.wait(timeout=10):
            raise AssertionError("tasks did not overlap")
        return i

    assert gb.run_all([unirun.task(meet, i) for i in range(n)]) == list(range(n))


def test_max_workers_bounds_running_greenlets() -> None:
    running = peak = 0

    def work() -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        gevent.sleep(0.01)
        running -= 1

    with GeventBackend(max_workers=3) as backend:
        backend.run_all([work] * 20)
    assert peak == 3


def test_task_timeout_kills_a_waiting_greenlet() -> None:
    cleaned: list[str] = []

    def wait_long() -> None:
        try:
            gevent.sleep(30)
        finally:
            cleaned.append("finally")

    start = time.monotonic()
    with GeventBackend(max_workers=4) as backend:
        out: list[object] = backend.run_all(
            [wait_long, lambda: 1], task_timeout=0.2, return_exceptions=True
        )
    assert isinstance(out[0], unirun.TaskTimeoutError)
    assert out[0].action == "cancelled"
    assert out[1] == 1
    assert cleaned == ["finally"]
    assert time.monotonic() - start < 10


def test_task_blocking_the_hub_is_reported_abandoned(caplog: pytest.LogCaptureFixture) -> None:
    # an unpatched time.sleep blocks the hub: the kill cannot land in time, and unirun says so
    with GeventBackend(max_workers=4) as backend:
        out: list[object] = backend.run_all(
            [unirun.task(time.sleep, 0.6)], task_timeout=0.1, return_exceptions=True
        )
    assert isinstance(out[0], unirun.TaskTimeoutError)
    assert out[0].action == "abandoned"
    assert "blocking the gevent hub" in caplog.text


def test_fail_fast_kills_the_siblings() -> None:
    cleaned: list[int] = []

    def wait_long(i: int) -> None:
        try:
            gevent.sleep(30)
        finally:
            cleaned.append(i)

    def fail() -> None:
        gevent.sleep(0.05)
        raise ValueError("first")

    start = time.monotonic()
    with GeventBackend(max_workers=8) as backend:
        with pytest.raises(ValueError, match="first"):
            backend.run_all([unirun.task(wait_long, i) for i in range(4)] + [fail])
        assert time.monotonic() - start < 5
    assert sorted(cleaned) == [0, 1, 2, 3]  # shutdown waited for the killed greenlets


def test_errors_are_outcomes_and_the_hub_prints_nothing(
    gb: GeventBackend, capfd: pytest.CaptureFixture[str]
) -> None:
    def interrupt() -> None:
        raise KeyboardInterrupt

    def leave() -> None:
        raise SystemExit(3)

    def fail() -> None:
        raise ValueError("x")

    out = gb.run_all([interrupt, leave, fail, lambda: 1], return_exceptions=True)
    assert [type(x) for x in out] == [KeyboardInterrupt, SystemExit, ValueError, int]
    gb.shutdown()
    assert capfd.readouterr().err == ""


def test_no_greenlet_outlives_shutdown() -> None:
    before = live_greenlets()
    backend = GeventBackend(max_workers=4)
    backend.run_all([unirun.task(gevent.sleep, 0.01)] * 10)
    futures = [backend.submit(gevent.sleep, 0.05) for _ in range(10)]
    backend.shutdown(wait=True)
    assert all(f.done() for f in futures)
    assert live_greenlets() == before
    assert not [t for t in threading.enumerate() if t.name.startswith("unirun-gevent")]


def test_shutdown_cancels_queued_futures() -> None:
    backend = GeventBackend(max_workers=1)
    futures = [backend.submit(gevent.sleep, 0.1) for _ in range(5)]
    backend.shutdown(wait=True, cancel_futures=True)
    assert any(f.cancelled() for f in futures)
    assert all(f.done() for f in futures)


_var: contextvars.ContextVar[str] = contextvars.ContextVar("_var", default="unset")


def test_context_is_copied_into_tasks(gb: GeventBackend) -> None:
    token = _var.set("caller")
    try:
        assert gb.run_all([_var.get]) == ["caller"]
    finally:
        _var.reset(token)


def test_nested_run_all_inside_a_task() -> None:
    def outer(i: int) -> list[Any]:
        return unirun.run_all([unirun.task(abs, -i), unirun.task(abs, -i - 1)], mode="gevent")

    assert unirun.run_all([unirun.task(outer, i) for i in range(3)], mode="gevent") == [
        [0, 1],
        [1, 2],
        [2, 3],
    ]


def test_is_a_backend() -> None:
    assert issubclass(GeventBackend, BackendBase)
    assert unirun.GeventBackend is GeventBackend


# -- map as one job of lanes ------------------------------------------------------------------


class _Lanes:
    running = 0
    most = 0
    started: ClassVar[list[int]] = []
    cleaned: ClassVar[list[int]] = []


def lane_task(i: int) -> int:
    _Lanes.started.append(i)
    _Lanes.running += 1
    _Lanes.most = max(_Lanes.most, _Lanes.running)
    try:
        gevent.sleep(0.001 if i % 7 else 0.01)
        if i == 50:
            raise ValueError("fifty")
        if i == 60:
            raise KeyboardInterrupt
        if i == 80:
            gevent.sleep(60)
        return i * 2
    finally:
        _Lanes.running -= 1
        _Lanes.cleaned.append(i)


@pytest.fixture
def lanes() -> Iterator[GeventBackend]:
    _Lanes.running = _Lanes.most = 0
    _Lanes.started.clear()
    _Lanes.cleaned.clear()
    with GeventBackend(max_workers=3) as backend:
        assert backend._lanes(is_async=False) is not None
        yield backend


def test_map_in_lanes_keeps_order_and_bounds_concurrency(lanes: GeventBackend) -> None:
    assert unirun.map(lane_task, range(40), mode=lanes) == [i * 2 for i in range(40)]
    assert _Lanes.most == 3
    assert sorted(_Lanes.started) == list(range(40))


def test_map_in_lanes_return_exceptions(lanes: GeventBackend) -> None:
    out: list[Any] = unirun.map(lane_task, range(45, 65), mode=lanes, return_exceptions=True)
    assert isinstance(out[5], ValueError)
    assert "task 5" in " ".join(getattr(out[5], "__notes__", []))
    assert isinstance(out[15], KeyboardInterrupt)  # the task's own: its outcome
    assert [o for i, o in enumerate(out) if i not in (5, 15)] == [
        (45 + i) * 2 for i in range(20) if i not in (5, 15)
    ]


def test_map_in_lanes_fails_fast_and_kills_the_rest(lanes: GeventBackend) -> None:
    start = time.monotonic()
    with pytest.raises(ValueError, match="fifty"):
        unirun.map(lane_task, [*range(48, 53), 80, *range(100, 200)], mode=lanes)
    assert time.monotonic() - start < 5
    deadline = time.monotonic() + 5
    while _Lanes.running and time.monotonic() < deadline:
        time.sleep(0.01)  # the kills land on the private hub
    assert _Lanes.running == 0
    assert max(_Lanes.started) < 120  # no new task after the failure


def test_map_in_lanes_whole_call_timeout(lanes: GeventBackend) -> None:
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        unirun.map(lane_task, [80, 80, 1], mode=lanes, timeout=0.3)
    assert time.monotonic() - start < 5
    deadline = time.monotonic() + 5
    while _Lanes.running and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _Lanes.running == 0


def returns_a_coroutine(i: int) -> Any:
    async def inner() -> int:
        return i

    return inner()


def test_map_in_lanes_refuses_a_returned_coroutine(lanes: GeventBackend) -> None:
    with pytest.raises(TypeError, match="returned a coroutine"):
        unirun.map(returns_a_coroutine, range(3), mode=lanes)
