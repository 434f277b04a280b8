"""What only AsyncioBackend does: its own loop thread (asyncio or trio), native
coroutines, a concurrency limit, cancellation of running coroutines."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any, ClassVar, Literal

import pytest

import unirun
from tests.helpers import add, identity
from unirun import AsyncioBackend

LOOPS = ["asyncio", "trio"]


@pytest.fixture(params=LOOPS)
def backend(request: pytest.FixtureRequest) -> Iterator[AsyncioBackend]:
    ex = AsyncioBackend(max_workers=16, backend=request.param)
    try:
        yield ex
    finally:
        ex.shutdown(wait=True, cancel_futures=True)


async def _anyio_sleep(seconds: float, value: Any) -> Any:
    import anyio

    await anyio.sleep(seconds)
    return value


def test_mode_capabilities_and_default_concurrency() -> None:
    ex = AsyncioBackend()
    assert ex.mode == "asyncio"
    assert {"coroutines", "coroutine-objects", "interrupt"} <= ex.capabilities
    assert 64 <= ex.max_workers <= 1024
    assert ex.loop_backend == "asyncio"
    ex.shutdown()


def test_bad_loop_backend_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="'asyncio' or 'trio'"):
        AsyncioBackend(backend="curio")  # type: ignore[arg-type]


def test_no_thread_before_the_first_async_task() -> None:
    before = threading.active_count()
    ex = AsyncioBackend()
    assert threading.active_count() == before
    ex.shutdown()


def test_trio_loop_runs_trio_code() -> None:
    import trio

    async def nap(i: int) -> int:
        await trio.sleep(0.01)
        return i

    with AsyncioBackend(backend="trio") as ex:
        assert ex.run_all([unirun.task(nap, i) for i in range(20)]) == list(range(20))
        future: Future[Any] = ex.submit(nap, 7)
        assert future.result(timeout=10) == 7


def test_async_and_sync_tasks_in_one_batch(backend: AsyncioBackend) -> None:
    tasks = [unirun.task(_anyio_sleep, 0.01, "a"), unirun.task(add, 1, 2), _anyio_sleep(0, "c")]
    assert backend.run_all(tasks) == ["a", 3, "c"]


def test_run_all_inside_asyncio_run() -> None:
    async def main() -> list[int]:
        return unirun.run_all([asyncio.sleep(0.01, i) for i in range(5)], mode="asyncio")

    assert asyncio.run(main()) == list(range(5))


def test_run_all_from_a_thread_running_a_loop() -> None:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever)
    thread.start()
    try:

        async def in_the_loop() -> list[int]:
            with AsyncioBackend() as ex:  # blocks this loop, never re-enters it
                return ex.run_all([asyncio.sleep(0.01, i) for i in range(5)])

        result = asyncio.run_coroutine_threadsafe(in_the_loop(), loop).result(timeout=30)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()
    assert result == list(range(5))


def test_ten_thousand_concurrent_sleeps_take_about_one_sleep() -> None:
    # a loose bound: 10,000 sleeps of 0.5 s in series would take 83 minutes
    with AsyncioBackend(max_workers=10_000) as ex:
        start = time.monotonic()
        out = ex.run_all([asyncio.sleep(0.5, i) for i in range(10_000)])
        elapsed = time.monotonic() - start
    assert out == list(range(10_000))
    assert elapsed < 10


def test_max_workers_bounds_running_coroutines() -> None:
    running = peak = 0

    async def track() -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1

    with AsyncioBackend(max_workers=3) as ex:
        ex.run_all([track for _ in range(30)])
    assert peak == 3


def test_task_timeout_counts_from_the_start_not_the_queue() -> None:
    # one slot: the second task waits 0.3 s for it, which does not count against it
    with AsyncioBackend(max_workers=1) as ex:
        out = ex.run_all([asyncio.sleep(0.3, i) for i in range(2)], task_timeout=1.0)
    assert out == [0, 1]


class Stuck:
    """An async callable that waits forever and says when it started and was cancelled."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.cancelled = threading.Event()

    async def __call__(self) -> None:
        import anyio

        self.started.set()
        try:
            await anyio.sleep_forever()
        finally:
            self.cancelled.set()


def test_task_timeout_cancels_the_coroutine(backend: AsyncioBackend) -> None:
    stuck = Stuck()
    out = backend.run_all(
        [unirun.task(stuck), unirun.task(identity, 1)], task_timeout=0.2, return_exceptions=True
    )
    assert isinstance(out[0], unirun.TaskTimeoutError)
    assert out[0].action == "cancelled"
    assert out[1] == 1
    assert stuck.cancelled.wait(5)


def test_a_sync_task_past_its_timeout_is_abandoned() -> None:
    release = threading.Event()
    with AsyncioBackend(max_workers=2) as ex:
        out: list[Any] = ex.run_all(
            [unirun.task(release.wait, 10)], task_timeout=0.1, return_exceptions=True
        )
        release.set()
    assert isinstance(out[0], unirun.TaskTimeoutError)
    assert out[0].action == "abandoned"


def test_first_error_cancels_the_siblings(backend: AsyncioBackend) -> None:
    import anyio

    sibling = Stuck()

    async def fail() -> None:
        while not sibling.started.is_set():
            await anyio.sleep(0.001)
        raise ValueError("first")

    with pytest.raises(ValueError, match="first"):
        backend.run_all([unirun.task(sibling), unirun.task(fail)])
    assert sibling.cancelled.wait(5)


def test_whole_call_timeout_cancels_what_runs(backend: AsyncioBackend) -> None:
    stuck = Stuck()
    with pytest.raises(TimeoutError):
        backend.run_all([unirun.task(stuck)], timeout=0.2)
    assert stuck.cancelled.wait(5)


def test_future_cancel_cancels_a_running_coroutine(backend: AsyncioBackend) -> None:
    stuck = Stuck()
    future = backend.submit(stuck)
    assert stuck.started.wait(5)
    assert future.cancel()
    assert stuck.cancelled.wait(5)
    assert future.cancelled()


@pytest.mark.parametrize("loop", LOOPS)
def test_shutdown_cancel_futures_cancels_running_and_queued(loop: str) -> None:
    import anyio

    ex = AsyncioBackend(max_workers=1, backend=loop)  # type: ignore[arg-type]
    started = threading.Event()

    async def stuck() -> None:
        started.set()
        await anyio.sleep_forever()

    running = ex.submit(stuck)
    queued = [ex.submit(_anyio_sleep, 0, i) for i in range(3)]
    queued.append(ex.submit(asyncio.sleep, 0))
    assert started.wait(5)
    ex.shutdown(wait=True, cancel_futures=True)
    assert running.cancelled()
    assert all(f.cancelled() for f in queued)


def test_shutdown_without_wait_lets_tasks_finish() -> None:
    ex = AsyncioBackend()
    future: Future[Any] = ex.submit(asyncio.sleep, 0.1, "done")
    ex.shutdown(wait=False)
    assert future.result(timeout=10) == "done"
    for thread in threading.enumerate():
        if thread.name.endswith("-loop") and "unirun-asyncio" in thread.name:
            thread.join(timeout=10)


def test_context_variables_reach_async_tasks(backend: AsyncioBackend) -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")

    async def read() -> str:
        return var.get()

    var.set("from the caller")
    assert backend.run_all([read, read]) == ["from the caller"] * 2


def test_a_nested_run_all_in_a_coroutine_does_not_deadlock() -> None:
    async def outer(i: int) -> list[int]:
        # blocks this coroutine's loop: the nested call must get a backend of its own
        return unirun.run_all([asyncio.sleep(0, i)], mode="asyncio")

    out = unirun.run_all([unirun.task(outer, i) for i in range(3)], mode="asyncio", timeout=30)
    assert out == [[0], [1], [2]]


def test_sync_tasks_do_not_block_the_loop() -> None:
    gate = threading.Event()

    async def opener() -> str:
        await asyncio.sleep(0.05)
        gate.set()
        return "opened"

    with AsyncioBackend(max_workers=4) as ex:
        out = ex.run_all([unirun.task(gate.wait, 10), opener], timeout=20)
    assert out == [True, "opened"]


def test_sync_callable_returning_a_coroutine_still_runs(backend: AsyncioBackend) -> None:
    assert backend.run_all([lambda: asyncio.sleep(0, 5)]) == [5]


def test_imap_streams_coroutines() -> None:
    with AsyncioBackend(max_workers=8) as ex:
        got: list[Any] = list(ex.imap(_anyio_sleep, [0.01] * 50, range(50)))
    assert got == list(range(50))


def test_blocking_sync_tasks_overlap() -> None:
    # the sync path is the private thread pool: four blocking tasks meet at a barrier
    barrier = threading.Barrier(4, timeout=10)
    with AsyncioBackend(max_workers=4) as ex:
        out = ex.run_all([barrier.wait for _ in range(4)])
    assert sorted(out) == [0, 1, 2, 3]


# -- a coroutine that blocks the loop (FAULTS #15; the xfail-free storm test has the main case)


def _blocked_loop_reports(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "blocked the event loop" in r.getMessage()]


@pytest.mark.parametrize("loop", LOOPS)
def test_a_blocking_coroutine_that_returns_soon_after_its_timeout_overran(
    loop: Literal["asyncio", "trio"], caplog: pytest.LogCaptureFixture
) -> None:
    # it holds the loop 0.05 s past task_timeout, within the 0.2 s the cancellation is given
    # to land: it returned, so it overran (its result discarded), as on serial. One slot,
    # so the sibling starts after (trio may start it first, and then it overruns too).
    async def hold_the_loop() -> str:
        time.sleep(0.25)
        return "late"

    with (
        caplog.at_level(logging.WARNING, logger="unirun"),
        AsyncioBackend(max_workers=1, backend=loop) as ex,
    ):
        out: list[Any] = ex.run_all(
            [unirun.task(hold_the_loop), unirun.task(_anyio_sleep, 0.01, "sibling")],
            task_timeout=0.2,
            return_exceptions=True,
        )
    assert isinstance(out[0], unirun.TaskTimeoutError)
    assert out[0].action == "overran"
    assert out[1] == "sibling"
    assert "could not be cancelled" not in caplog.text  # nothing was abandoned


def test_a_waiting_coroutine_is_cancelled_while_another_blocks_the_loop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # asyncio knows which coroutine holds the loop: only that one is abandoned, and the
    # report names it; the one waiting at an await is cancelled once the loop is free
    import anyio

    cancelled = threading.Event()

    async def waiting() -> None:
        try:
            await anyio.sleep_forever()
        finally:
            cancelled.set()

    async def hold_the_loop() -> str:
        time.sleep(1.0)
        return "late"

    with caplog.at_level(logging.WARNING, logger="unirun"), AsyncioBackend(max_workers=4) as ex:
        out: list[Any] = ex.run_all(
            [unirun.task(waiting), unirun.task(hold_the_loop), unirun.task(identity, 3)],
            task_timeout=0.3,
            return_exceptions=True,
        )
    assert [type(o) for o in out] == [unirun.TaskTimeoutError, unirun.TaskTimeoutError, int]
    assert (out[0].action, out[1].action, out[2]) == ("cancelled", "abandoned", 3)
    assert cancelled.wait(5)
    reports = _blocked_loop_reports(caplog)
    assert len(reports) == 1, caplog.text
    assert re.match(
        r"unirun: task 1 \(.*hold_the_loop\) blocked the event loop .* for 1\.\d s", reports[0]
    )


def test_a_coroutine_blocking_the_trio_loop_is_abandoned_and_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # trio does not say which coroutine holds the loop: every coroutine whose timeout passes
    # while it is blocked is abandoned (as on gevent). One slot, so the sibling starts after.
    async def hold_the_loop() -> str:
        time.sleep(1.0)
        return "late"

    with (
        caplog.at_level(logging.WARNING, logger="unirun"),
        AsyncioBackend(max_workers=1, backend="trio") as ex,
    ):
        out: list[Any] = ex.run_all(
            [unirun.task(hold_the_loop), unirun.task(_anyio_sleep, 0.01, "sibling")],
            task_timeout=0.3,
            return_exceptions=True,
        )
    assert isinstance(out[0], unirun.TaskTimeoutError)
    assert out[0].action == "abandoned"
    assert out[1] == "sibling"
    assert "task 0 (test_a_coroutine_blocking_the_trio_loop" in caplog.text
    assert "could not be cancelled" in caplog.text
    assert re.search(r"blocked the event loop .* for 1\.\d s", caplog.text), caplog.text


def test_whole_call_timeout_while_a_coroutine_blocks_the_loop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # FAULTS #15 as written: the whole-call timeout is raised on time (from the caller's
    # thread), and the block is reported once it ends
    async def hold_the_loop() -> str:
        time.sleep(1.0)
        return "late"

    start = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="unirun"), AsyncioBackend(max_workers=4) as ex:
        with pytest.raises(TimeoutError):
            ex.run_all([unirun.task(hold_the_loop)], timeout=0.3)
        assert time.monotonic() - start < 0.9  # raised while the loop was still blocked
    assert time.monotonic() - start < 4
    reports = _blocked_loop_reports(caplog)
    assert len(reports) == 1, caplog.text
    assert re.match(
        r"unirun: task 0 \(.*hold_the_loop\) blocked the event loop .* for 1\.\d s", reports[0]
    )


def test_no_report_for_coroutines_that_do_not_block(
    backend: AsyncioBackend, caplog: pytest.LogCaptureFixture
) -> None:
    import anyio

    async def stuck() -> None:
        await anyio.sleep_forever()

    with caplog.at_level(logging.DEBUG, logger="unirun"):
        out: list[Any] = backend.run_all(
            [unirun.task(stuck) for _ in range(20)], task_timeout=0.1, return_exceptions=True
        )
    assert {o.action for o in out} == {"cancelled"}
    assert "block" not in caplog.text


# -- map of an async function: one job of lanes (asyncio loop) ----------------------------


class _Lanes:
    running = 0
    most = 0
    started: ClassVar[list[int]] = []
    cleaned: ClassVar[list[int]] = []


async def lane_task(i: int) -> int:
    _Lanes.started.append(i)
    _Lanes.running += 1
    _Lanes.most = max(_Lanes.most, _Lanes.running)
    try:
        await asyncio.sleep(0.001 if i % 7 else 0.01)
        if i == 50:
            raise ValueError("fifty")
        if i == 60:
            raise KeyboardInterrupt
        if i == 70:
            raise asyncio.CancelledError  # the coroutine cancels itself
        if i == 80:
            await asyncio.sleep(60)
        return i * 2
    finally:
        _Lanes.running -= 1
        _Lanes.cleaned.append(i)


@pytest.fixture
def lanes() -> Iterator[AsyncioBackend]:
    _Lanes.running = _Lanes.most = 0
    _Lanes.started, _Lanes.cleaned = [], []
    with AsyncioBackend(max_workers=3) as backend:
        assert backend._lanes(is_async=True) is not None
        yield backend


def test_map_in_lanes_keeps_order_and_bounds_concurrency(lanes: AsyncioBackend) -> None:
    n = 40
    assert unirun.map(lane_task, range(n), mode=lanes) == [i * 2 for i in range(n)]
    assert _Lanes.most == 3
    assert sorted(_Lanes.started) == list(range(n))


def test_map_in_lanes_return_exceptions(lanes: AsyncioBackend) -> None:
    out: list[Any] = unirun.map(lane_task, range(45, 75), mode=lanes, return_exceptions=True)
    assert isinstance(out[5], ValueError)
    assert "task 5" in " ".join(getattr(out[5], "__notes__", []))
    assert isinstance(out[15], KeyboardInterrupt)  # a task's own: its outcome, the loop lives
    assert isinstance(out[25], asyncio.CancelledError)
    assert [o for i, o in enumerate(out) if i not in (5, 15, 25)] == [
        (45 + i) * 2 for i in range(30) if i not in (5, 15, 25)
    ]
    assert unirun.map(lane_task, [1, 2], mode=lanes) == [2, 4]  # still usable


def test_map_in_lanes_fails_fast(lanes: AsyncioBackend) -> None:
    start = time.monotonic()
    with pytest.raises(ValueError, match="fifty"):
        unirun.map(lane_task, [*range(48, 53), 80, *range(100, 200)], mode=lanes)
    assert time.monotonic() - start < 5
    time.sleep(0.2)  # the cancellations land on the loop
    assert 80 not in _Lanes.started or 80 in _Lanes.cleaned  # cancelled, not left waiting
    assert _Lanes.running == 0
    assert max(_Lanes.started) < 120  # no new coroutine after the failure


def test_map_in_lanes_whole_call_timeout(lanes: AsyncioBackend) -> None:
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        unirun.map(lane_task, [80, 80, 1], mode=lanes, timeout=0.3)
    assert time.monotonic() - start < 5
    time.sleep(0.2)
    assert _Lanes.running == 0  # the sleeping coroutines were cancelled


def test_map_on_trio_takes_the_per_task_path() -> None:
    pytest.importorskip("trio")
    with AsyncioBackend(max_workers=3, backend="trio") as backend:
        assert backend._lanes(is_async=True) is None
        assert unirun.map(async_double, range(10), mode=backend) == [i * 2 for i in range(10)]


async def async_double(i: int) -> int:
    import anyio

    await anyio.sleep(0)
    return i * 2


def test_the_asyncio_loop_does_not_load_anyios_asyncio_backend() -> None:
    # start-up cost: anyio's asyncio backend takes 14 ms to import; the loop is plain asyncio
    import subprocess
    import sys

    script = (
        "import sys, unirun\n"
        "async def one():\n"
        "    return 1\n"
        "assert unirun.run_all([one], mode='asyncio') == [1]\n"
        "print('anyio._backends._asyncio' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
