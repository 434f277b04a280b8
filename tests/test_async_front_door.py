"""``await unirun.arun_all(...)`` / ``amap`` under asyncio and trio: async tasks run in the
caller's own loop, structured; sync tasks run on their backends without blocking it."""

from __future__ import annotations

import functools
import gc
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import anyio
import pytest

import unirun
from tests.helpers import add, boom, sleep_then
from unirun import AsyncioBackend

pytestmark = pytest.mark.parametrize("loop", ["asyncio", "trio"])


def run(loop: str, main: Callable[[], Awaitable[Any]]) -> Any:
    return anyio.run(main, backend=loop)


async def nap(seconds: float, value: Any) -> Any:
    await anyio.sleep(seconds)
    return value


def test_results_in_input_order(loop: str) -> None:
    async def main() -> list[int]:
        tasks = [unirun.task(nap, (5 - i) * 0.01, i) for i in range(6)]
        return await unirun.arun_all(tasks, mode="asyncio")

    assert run(loop, main) == list(range(6))


def test_async_tasks_run_in_the_callers_loop(loop: str) -> None:
    import sniffio

    async def where() -> tuple[int, str]:
        await anyio.sleep(0)
        return threading.get_ident(), sniffio.current_async_library()

    async def main() -> list[tuple[int, str]]:
        return await unirun.arun_all([where, where()], mode="asyncio")

    assert run(loop, main) == [(threading.get_ident(), loop)] * 2


def test_native_loop_code_runs(loop: str) -> None:
    # trio.sleep only works in the caller's trio loop: proof that nothing hops loops
    if loop == "trio":
        import trio

        sleeper: Callable[[float], Awaitable[None]] = trio.sleep
    else:
        import asyncio

        sleeper = asyncio.sleep

    async def main() -> list[None]:
        return await unirun.arun_all([unirun.task(sleeper, 0.01) for _ in range(3)])

    assert run(loop, main) == [None] * 3


def test_mixed_sync_and_async(loop: str) -> None:
    async def main() -> list[Any]:
        tasks = [
            unirun.task(add, 1, 2),
            unirun.task(nap, 0.01, "a"),
            unirun.task(sleep_then, 0.01, 9),
        ]
        return await unirun.arun_all(tasks, mode="asyncio")

    assert run(loop, main) == [3, "a", 9]


def test_sync_tasks_on_threads_do_not_block_the_loop(loop: str) -> None:
    gate = threading.Event()

    async def main() -> list[Any]:
        async with anyio.create_task_group() as tg:
            result: list[Any] = []

            async def go() -> None:
                result.extend(await unirun.arun_all([unirun.task(gate.wait, 10)], mode="thread"))

            tg.start_soon(go)
            await anyio.sleep(0.05)  # the loop keeps running while the thread waits
            gate.set()
        return result

    assert run(loop, main) == [True]


def test_amap_and_backend_arun_all(loop: str) -> None:
    running = peak = 0

    async def track(i: int) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await anyio.sleep(0.01)
        running -= 1
        return i

    async def main() -> tuple[list[int], list[Any]]:
        with AsyncioBackend(max_workers=2) as ex:
            a = await ex.arun_all([unirun.task(track, i) for i in range(10)])
        b = await unirun.amap(track, range(5), mode="asyncio", max_workers=2)
        return a, b

    assert run(loop, main) == (list(range(10)), list(range(5)))
    assert peak == 2  # the backend's max_workers bounds its arun_all, in the caller's loop


def test_cancelling_the_caller_cancels_the_batch(loop: str) -> None:
    started: list[int] = []
    cancelled: list[int] = []

    async def main() -> None:
        all_started = anyio.Event()

        async def wait_forever(i: int) -> None:
            started.append(i)
            if len(started) == 3:
                all_started.set()
            try:
                await anyio.sleep_forever()
            except anyio.get_cancelled_exc_class():
                cancelled.append(i)
                raise

        tasks = [unirun.task(wait_forever, i) for i in range(3)]
        async with anyio.create_task_group() as tg:
            tg.start_soon(functools.partial(unirun.arun_all, tasks, mode="asyncio"))
            await all_started.wait()
            tg.cancel_scope.cancel()
        # structured: by the time the caller is cancelled, every task was cancelled
        assert sorted(cancelled) == [0, 1, 2]

    run(loop, main)


def test_cancelling_the_caller_stops_the_engine_thread(loop: str) -> None:
    release = threading.Event()
    started = threading.Event()

    def blocking() -> str:
        started.set()
        release.wait(10)
        return "late"

    async def main() -> None:
        with anyio.move_on_after(5) as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(functools.partial(unirun.arun_all, [blocking], mode="thread"))
                while not started.is_set():  # no to_thread here: trio caches its threads
                    await anyio.sleep(0.005)
                tg.cancel_scope.cancel()
        assert not scope.cancelled_caught  # returned promptly, without waiting for the thread

    try:
        run(loop, main)
    finally:
        release.set()


def test_first_error_raises_with_a_note_and_cancels_siblings(loop: str) -> None:
    cancelled: list[int] = []

    async def sibling() -> None:
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            cancelled.append(1)
            raise

    async def fail() -> None:
        await anyio.sleep(0.01)
        raise ValueError("bad")

    async def main() -> None:
        tasks: list[Any] = [unirun.task(sibling), unirun.Task(fail, name="the-bad-one")]
        with pytest.raises(ValueError, match="bad") as info:
            await unirun.arun_all(tasks, mode="asyncio")
        notes = getattr(info.value, "__notes__", [])
        assert any("task 1" in n and "the-bad-one" in n and "asyncio" in n for n in notes)
        assert cancelled == [1]

    run(loop, main)


def test_unstarted_coroutine_objects_are_closed(loop: str) -> None:
    async def main() -> None:
        with AsyncioBackend(max_workers=1) as ex:
            tasks: list[Any] = [unirun.task(boom, "x"), *(nap(0, i) for i in range(20))]
            with pytest.raises(ValueError, match="x"):
                await ex.arun_all(tasks)

    run(loop, main)
    gc.collect()  # a never-awaited coroutine would warn now (warnings are errors)


def test_sync_error_cancels_async_siblings(loop: str) -> None:
    cancelled = threading.Event()

    async def sibling() -> None:
        try:
            await anyio.sleep_forever()
        finally:
            cancelled.set()

    async def main() -> None:
        with pytest.raises(ValueError, match="sync"):
            await unirun.arun_all([unirun.task(sibling), unirun.task(boom, "sync")], mode="asyncio")

    run(loop, main)
    assert cancelled.is_set()


def test_return_exceptions(loop: str) -> None:
    async def fail() -> None:
        raise KeyError("k")

    async def main() -> list[Any]:
        return await unirun.arun_all(
            [unirun.task(nap, 0, 0), fail, unirun.task(boom, "s")],
            mode="asyncio",
            return_exceptions=True,
        )

    out = run(loop, main)
    assert out[0] == 0
    assert isinstance(out[1], KeyError)
    assert isinstance(out[2], ValueError)


def test_timeout_raises_and_cancels(loop: str) -> None:
    cancelled: list[int] = []

    async def stuck() -> None:
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            cancelled.append(1)
            raise

    async def main() -> None:
        tasks: list[Any] = [stuck, unirun.task(nap, 0, 1)]
        with pytest.raises(TimeoutError, match="timed out"):
            await unirun.arun_all(tasks, mode="asyncio", timeout=0.1, return_exceptions=True)
        assert cancelled == [1]

    run(loop, main)


def test_task_timeout_marks_the_slot_cancelled(loop: str) -> None:
    async def main() -> list[Any]:
        return await unirun.arun_all(
            [anyio.sleep_forever, unirun.task(nap, 0, 1)],
            mode="asyncio",
            task_timeout=0.1,
            return_exceptions=True,
        )

    out = run(loop, main)
    assert isinstance(out[0], unirun.TaskTimeoutError)
    assert out[0].action == "cancelled"
    assert out[1] == 1


def test_retries_and_progress(loop: str) -> None:
    attempts = 0
    seen: list[tuple[int, int | None]] = []

    async def flaky() -> str:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise RuntimeError(f"attempt {attempts}")
        return "ok"

    async def main() -> list[Any]:
        return await unirun.arun_all(
            [flaky, unirun.task(nap, 0, 1)],
            mode="asyncio",
            retries=2,
            progress=lambda done, total: seen.append((done, total)),
        )

    assert run(loop, main) == ["ok", 1]
    assert [d for d, _ in seen] == [1, 2]
    assert seen[-1] == (2, 2)


def test_a_generator_is_pulled_lazily(loop: str) -> None:
    pulled = finished = 0
    ahead: list[int] = []

    async def job(i: int) -> int:
        nonlocal finished
        await anyio.sleep(0)
        finished += 1
        return i

    def tasks() -> Iterator[unirun.Task[int]]:
        nonlocal pulled
        for i in range(100):
            pulled += 1
            ahead.append(pulled - finished)
            yield unirun.task(job, i)

    async def main() -> list[int]:
        return await unirun.arun_all(tasks(), mode="asyncio", max_in_flight=5)

    assert run(loop, main) == list(range(100))
    assert max(ahead) <= 6


def test_empty_and_bad_input(loop: str) -> None:
    async def main() -> None:
        assert await unirun.arun_all([], mode="asyncio") == []
        bad: list[Any] = [nap(0, 0), 42]
        with pytest.raises(TypeError, match="task 1"):
            await unirun.arun_all(bad, mode="asyncio")

    run(loop, main)
    gc.collect()
