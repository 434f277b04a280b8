"""L4: create -> run 10 tasks -> shutdown, over and over, leaves nothing behind.

After the first cycles (forkserver and resource tracker warm-up, gevent's hub, Dask's
pooled connections), the counts of threads, child processes, file descriptors and live
greenlets must be the same at cycle 10 and at the last cycle.
"""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import (
    BACKEND_FIXTURES,
    BACKEND_OPTIONS,
    _children,
    _close_idle_connections,
    _fds,
    _threads,
)
from tests.helpers import add
from unirun import task
from unirun._registry import factory_for

#: Cycles per mode; Dask's given-client backend is cheap, but its connections settle slowly.
CYCLES = {"dask": 20}
DEFAULT_CYCLES = 100
CHECKPOINT = 10


def _greenlets() -> int:
    greenlet = sys.modules.get("greenlet")
    if greenlet is None:
        return 0
    gc.collect()
    current = greenlet.getcurrent()
    return sum(
        1
        for g in gc.get_objects()
        if isinstance(g, greenlet.greenlet) and not g.dead and g is not current
    )


def _counts() -> dict[str, int]:
    return {
        "threads": len(_threads()),
        "children": len(_children()),
        "fds": _fds(),
        "greenlets": _greenlets(),
    }


def _settled(
    expected: dict[str, int] | None, dask_client: Any = None, limit: float = 5
) -> dict[str, int]:
    """The counts once they stop moving (or equal ``expected``), polled for ``limit`` s.

    A Dask client's idle pooled connections are trimmed first, as the leak check does:
    their number follows the peak concurrency of the last gather, not a leak.
    """
    if dask_client is not None:
        _close_idle_connections(dask_client)
    deadline = time.monotonic() + limit
    last = _counts()
    stable_since = time.monotonic()
    while time.monotonic() < deadline:
        if expected is not None and last == expected:
            return last
        time.sleep(0.05)
        if dask_client is not None:
            _close_idle_connections(dask_client)
        now = _counts()
        if now != last:
            last, stable_since = now, time.monotonic()
        elif expected is None and time.monotonic() - stable_since > 0.5:
            return last
    return last


@pytest.mark.timeout(180)
def test_create_run_shutdown_cycles_leave_nothing_behind(
    mode: str, request: pytest.FixtureRequest
) -> None:
    factory: Callable[..., Any] = factory_for(mode)
    options = dict(BACKEND_OPTIONS.get(mode, {}))
    for name, fixture in BACKEND_FIXTURES.get(mode, {}).items():
        options[name] = request.getfixturevalue(fixture)
    cycles = CYCLES.get(mode, DEFAULT_CYCLES)
    at_checkpoint: dict[str, int] | None = None
    start = time.monotonic()
    for cycle in range(1, cycles + 1):
        with factory(**options) as ex:
            assert ex.run_all([task(add, i, cycle) for i in range(10)]) == [
                i + cycle for i in range(10)
            ]
        if cycle == CHECKPOINT:
            at_checkpoint = _settled(None, options.get("client"))
    assert at_checkpoint is not None
    at_end = _settled(at_checkpoint, options.get("client"))
    assert at_end == at_checkpoint, f"{mode}: counts drifted over {cycles} cycles"
    per_cycle = (time.monotonic() - start) / cycles
    print(f"{mode}: {per_cycle * 1000:.1f} ms per cycle")
