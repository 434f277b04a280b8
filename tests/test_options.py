"""Mode names and module-level options."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import unirun


@pytest.mark.parametrize(
    ("name", "suggestion"), [("proccess", "process"), ("thraed", "thread"), ("Serial", "serial")]
)
def test_unknown_mode_suggests_the_closest(name: str, suggestion: str) -> None:
    with pytest.raises(ValueError, match=r"Valid modes: .*process.*thread") as info:
        unirun.run_all([lambda: 1], mode=name)
    assert f"Did you mean {suggestion!r}?" in str(info.value)


def test_empty_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="Unknown mode ''"):
        unirun.run_all([lambda: 1], mode="")


def test_mode_must_be_a_name_or_executor() -> None:
    with pytest.raises(TypeError, match="mode must be"):
        unirun.run_all([lambda: 1], mode=3)  # type: ignore[call-overload]


def test_run_all_on_a_stdlib_executor_leaves_it_running() -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        assert unirun.run_all([lambda: 1, lambda: 2], mode=pool) == [1, 2]
        assert pool.submit(lambda: 3).result(timeout=10) == 3


def test_stdlib_executor_with_backend_options_is_refused() -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool, pytest.raises(TypeError, match="already configured"):
        unirun.run_all([lambda: 1], mode=pool, max_workers=3)


def test_warm_backend_is_reused_between_calls() -> None:
    from unirun._warm import WARM

    first, _ = WARM.get("thread", {})
    unirun.run_all([lambda: 1], mode="thread")
    second, _ = WARM.get("thread", {})
    assert first is second


def test_register_backend() -> None:
    from concurrent.futures import ThreadPoolExecutor

    unirun.register_backend("mypool", ThreadPoolExecutor)
    assert unirun.run_all([lambda: 5], mode="mypool") == [5]
    with unirun.executor("mypool", max_workers=1) as ex:
        assert isinstance(ex, ThreadPoolExecutor)
    with pytest.raises(ValueError, match="built-in"):
        unirun.register_backend("thread", ThreadPoolExecutor)


def test_imap_streams_an_endless_input_with_a_bounded_window() -> None:
    import itertools

    pulled = 0

    def numbers() -> Iterator[int]:
        nonlocal pulled
        for i in itertools.count():
            pulled += 1
            yield i

    it = unirun.imap(lambda x: x * 2, numbers(), mode="thread", max_workers=2, max_in_flight=4)
    assert [next(it) for _ in range(3)] == [0, 2, 4]
    assert pulled <= 3 + 4 + 1
    it.close()  # type: ignore[attr-defined]  # imap returns a generator


def test_map_zips_iterables() -> None:
    assert unirun.map(pow, [2, 3, 4], [2, 2], mode="thread") == [4, 9]


def test_task_keeps_fn_keyword() -> None:
    def f(fn: int) -> int:
        return fn

    assert unirun.run_all([unirun.task(f, fn=3)], mode="serial") == [3]


def _double(x: int) -> int:
    return 2 * x


def test_hint_decorators_keep_the_function() -> None:
    import pickle

    from unirun._tasks import function_hint

    assert unirun.cpu_bound(_double) is _double
    assert _double(2) == 4
    assert pickle.loads(pickle.dumps(_double)) is _double
    assert function_hint(_double) == "cpu"
    assert unirun.io_bound(_double) is _double
    assert function_hint(_double) == "io"
