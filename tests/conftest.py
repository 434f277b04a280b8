"""Shared fixtures: one ``backend`` fixture over every mode, and a leak check.

The contract suite (``tests/contract``) is written once against the ``backend`` fixture;
a backend joins it by being listed in ``CONTRACT_MODES`` (and, when it needs special set-up,
in ``BACKEND_OPTIONS``). ``--modes=thread,process`` limits a run to some modes.
``@pytest.mark.needs("capability")`` skips a test on backends that lack a capability
(``BackendBase.capabilities``).
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import psutil
import pytest

from unirun._backends._base import BackendBase
from unirun._errors import BackendUnavailableError
from unirun._registry import factory_for
from unirun._warm import WARM

#: Every built-in mode the contract suite runs on, when its backend can be imported.
CONTRACT_MODES = ["serial", "thread", "process", "asyncio", "gevent", "dask"]

#: Constructor options per mode for the contract suite (small pools: 2 cores here).
BACKEND_OPTIONS: dict[str, dict[str, Any]] = {
    "serial": {},
    "thread": {"max_workers": 4},
    "process": {"max_workers": 2},
    "asyncio": {"max_workers": 16},
    "gevent": {"max_workers": 16},
    "dask": {},
}

#: Constructor options taken from a fixture, per mode: the dask contract runs on one
#: session-wide LocalCluster (starting a cluster per test would cost seconds each).
BACKEND_FIXTURES: dict[str, dict[str, str]] = {"dask": {"client": "dask_client"}}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--modes",
        default=os.environ.get("UNIRUN_TEST_MODES", ""),
        help="comma-separated modes for the backend fixture (default: every available one)",
    )


def _importable(mode: str) -> bool:
    try:
        factory_for(mode)
    except (BackendUnavailableError, ModuleNotFoundError):
        return False
    return True


def _modes(config: pytest.Config) -> list[str]:
    chosen = [m for m in str(config.getoption("--modes")).split(",") if m]
    return chosen or [m for m in CONTRACT_MODES if _importable(m)]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "mode" not in metafunc.fixturenames:
        return
    for marker in metafunc.definition.iter_markers("parametrize"):
        names = marker.args[0]
        if "mode" in (names.replace(" ", "").split(",") if isinstance(names, str) else names):
            return  # the test chose its own modes
    metafunc.parametrize("mode", _modes(metafunc.config))


@pytest.fixture
def backend(mode: str, request: pytest.FixtureRequest) -> Iterator[BackendBase]:
    """A fresh backend of ``mode``, shut down after the test."""
    cls = factory_for(mode)
    marker = request.node.get_closest_marker("needs")
    if marker is not None and isinstance(cls, type) and issubclass(cls, BackendBase):
        missing = [cap for cap in marker.args if cap not in cls.capabilities]
        if missing:
            pytest.skip(f"mode {mode!r} does not have {', '.join(missing)}")
    options = dict(BACKEND_OPTIONS.get(mode, {}))
    for name, fixture in BACKEND_FIXTURES.get(mode, {}).items():
        options[name] = request.getfixturevalue(fixture)
    instance = cls(**options)
    assert isinstance(instance, BackendBase)
    try:
        yield instance
    finally:
        instance.shutdown(wait=True, cancel_futures=True)


@pytest.fixture(scope="session")
def dask_client() -> Iterator[Any]:
    """One Dask ``LocalCluster`` (2 worker processes, 1 thread each, loopback) per session.

    It is warmed up (a task on each worker, results gathered) before any test's leak check
    looks, since Dask keeps a few things for the life of the process: connection pools and
    its global ``Dask-Offload`` thread.
    """
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"},
    )
    client = distributed.Client(cluster, set_as_default=False)
    try:
        from unirun import DaskBackend

        with DaskBackend(client=client) as warm:
            warm.run_all([functools.partial(abs, -i) for i in range(8)])
        client.run(abs, 1)
        client.processing()  # opens the pooled connection that interrupts reuse
        _settle_fds(quiet=1.5, limit=10)  # workers open their heartbeat connections lazily
        yield client
    finally:
        client.close(timeout=20)
        cluster.close(timeout=20)


def _close_idle_connections(client: Any) -> None:
    """Close the extra idle pooled connections of the session's Dask client and scheduler.

    They are reused, not leaked, but their number grows with the peak concurrency of
    a test (one per concurrent gather), which the fd count would report as a leak.
    """

    def trim() -> None:  # on the client's loop, as ConnectionPool.remove does
        for pool in (client.rpc, client.cluster.scheduler.rpc):
            for comms in pool.available.values():
                # keep one per address: periodic calls (the client's scheduler-info
                # refresh) would reopen it in the middle of another test
                while len(comms) > 1:
                    client.loop.add_callback(comms.pop().close)
                    pool.semaphore.release()

    client.loop.add_callback(trim)


def _settle_fds(quiet: float, limit: float) -> None:
    """Wait until the count of open file descriptors has not changed for ``quiet`` seconds."""
    deadline = time.monotonic() + limit
    count, since = _fds(), time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - since < quiet:
        time.sleep(0.1)
        now = _fds()
        if now != count:
            count, since = now, time.monotonic()


# -- leaks ------------------------------------------------------------------------------

_HELPERS = ("forkserver", "resource_tracker", "semaphore_tracker")


def _children() -> set[int]:
    out = set()
    for child in psutil.Process().children(recursive=True):
        try:
            cmd = " ".join(child.cmdline())
        except psutil.Error:
            continue
        if not any(h in cmd for h in _HELPERS):
            out.add(child.pid)
    return out


def _threads() -> set[int]:
    return {t.ident for t in threading.enumerate() if t.ident is not None}


def _fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except FileNotFoundError:  # not Linux
        return 0


@pytest.fixture(autouse=True)
def no_leaks(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test that leaves threads, child processes or file descriptors behind.

    Warm default backends are shut down first: they are meant to outlive a call, not a
    test. Counts are polled for up to 5 s, since workers exit asynchronously.
    """
    if request.node.get_closest_marker("leaks_ok"):
        yield
        return
    callspec = getattr(request.node, "callspec", None)
    mode = callspec.params.get("mode") if callspec is not None else None
    shared = list(BACKEND_FIXTURES.get(str(mode), {}).values())
    for fixture in shared:
        request.getfixturevalue(fixture)  # session-wide resources exist before counting
    threads, children, fds = _threads(), _children(), _fds()
    yield
    WARM.shutdown_all()
    dask_client = None
    if "dask_client" in shared or "dask_client" in request.fixturenames:
        dask_client = request.getfixturevalue("dask_client")
    deadline = time.monotonic() + 5
    next_collect = 0.0
    while True:
        if dask_client is not None and time.monotonic() >= next_collect:
            _close_idle_connections(dask_client)  # again: late gathers return comms
            next_collect = time.monotonic() + 0.25
        extra_threads = _threads() - threads
        extra_children = _children() - children
        extra_fds = _fds() - fds
        if not extra_threads and not extra_children and extra_fds <= 0:
            return
        if time.monotonic() > deadline:
            break
        time.sleep(0.02)
    names = [t.name for t in threading.enumerate() if t.ident in extra_threads]
    pytest.fail(
        f"leaked: threads {names}, child processes {sorted(extra_children)}, "
        f"{max(extra_fds, 0)} file descriptors"
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "leaks_ok: the test is exempt from the leak check")
