"""Checked by mypy, never run: public signatures keep the task's return type."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future

from typing_extensions import assert_type

import unirun


def number() -> int:
    return 1


async def text() -> str:
    return "x"


def add(x: int, y: int) -> int:
    return x + y


async def aadd(x: int, y: int) -> int:
    return x + y


def check() -> None:
    assert_type(unirun.run_all([number, number]), list[int])
    assert_type(unirun.run_all([unirun.task(add, 1, 2)]), list[int])
    assert_type(unirun.task(add, 1, 2), unirun.Task[int])
    assert_type(unirun.task(text), unirun.Task[str])
    assert_type(unirun.map(add, [1], [2]), list[int])
    assert_type(unirun.imap(add, [1], [2]), Iterator[int])
    assert_type(unirun.map(aadd, [1], [2], mode="asyncio"), list[int])  # awaited for you
    assert_type(unirun.imap(aadd, [1], [2]), Iterator[int])
    with unirun.executor("thread") as ex:
        assert_type(ex.submit(add, 1, 2), Future[int])
    backend = unirun.ThreadBackend(max_workers=2)
    assert_type(backend.run_all([number]), list[int])
    assert_type(backend.submit(add, 1, y=2), Future[int])
    assert_type(unirun.choose_backend(hint="cpu"), unirun.Choice)
    assert isinstance(backend, unirun.Executor)


async def check_async() -> None:
    assert_type(await unirun.arun_all([number]), list[int])
    assert_type(await unirun.amap(add, [1], [2]), list[int])
    assert_type(await unirun.amap(aadd, [1], [2]), list[int])
