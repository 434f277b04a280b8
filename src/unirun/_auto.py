"""``mode="auto"`` at run time: route each task by the picker, measuring unhinted ones.

:class:`AutoRouter` is the engine's :class:`~unirun._engine.Router` for auto mode. Hinted
and async tasks are routed by the table at once. Unhinted sync tasks are grouped by their
function (:func:`~unirun._choose.function_key`); the first task of a group runs on a
thread inside a :class:`Probe`, which records its thread CPU time and wall time, and the
group's next ``route()`` waits briefly for it::

    route(first of group) --wrap fn in Probe--> thread backend (its result is kept:
                                                 the engine delivers it like any other)
    route(next of group)  --wait <= PROBE_WAIT--> Measurement --route()--> warm backend

A probe that is still running when the wait ends is read as it runs (the thread's CPU
clock, where the platform has one), so a long task never holds the batch back for long.
Short tasks are probed a few times in a row, so one cold call does not decide alone.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Final

from ._backends._base import BackendBase
from ._choose import (
    IO_THREADS,
    WAITING_SHARE,
    Facts,
    Measurement,
    TaskFacts,
    decide,
    function_key,
    gather_facts,
    route,
)
from ._engine import Router
from ._executor import Executor
from ._registry import accepted_options, factory_for
from ._tasks import Call, Task, invoke
from ._warm import WARM

__all__ = ["AutoRouter", "Probe", "measure_once"]

logger = logging.getLogger("unirun")

#: How long a probe runs (not counting time queued for a CPU) before it is read as it runs.
PROBE_WAIT: Final = 0.05
#: How often a running probe is looked at, and after how long it may be judged early.
PROBE_SLICE: Final = 0.005
PROBE_EARLY: Final = 0.01
#: The longest a route() waits for a probe on a machine so busy it hardly runs (seconds).
PROBE_WAIT_MAX: Final = 0.5
#: Without a per-thread CPU clock, the longest wait for a probe to finish (seconds).
PROBE_WAIT_BLIND: Final = 1.0
#: Short tasks are probed until this much wall time was seen, at most PROBE_SAMPLES times.
PROBE_MIN_WALL: Final = 2e-3
PROBE_SAMPLES: Final = 3


class Probe:
    """Wraps a task's function to time it on the thread that runs it.

    Calling the probe calls the function (running a returned coroutine to completion, as
    every sync backend does) and records thread CPU time and wall time. Its result or
    exception passes through unchanged, so the measured run is the task's real run.
    """

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.done = threading.Event()
        self.cpu = 0.0
        self.wall = 0.0  # less the time the thread waited for a busy CPU, where known
        self.queued = 0.0  # that time
        self.result_bytes = 0
        self._started: tuple[float, float, int | None, str, float | None] | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        clock: int | None = None
        with contextlib.suppress(AttributeError, OSError):  # not every platform has one
            clock = time.pthread_getcpuclockid(threading.get_ident())
        stat = f"/proc/self/task/{threading.get_native_id()}/schedstat"
        queued0 = _queued(stat)
        cpu0, wall0 = time.thread_time(), time.perf_counter()
        self._started = (cpu0, wall0, clock, stat, queued0)
        try:
            result = invoke(self.fn, args, kwargs)
        except BaseException:
            self._stop(cpu0, wall0, stat, queued0)
            self.done.set()
            raise
        self._stop(cpu0, wall0, stat, queued0)
        try:  # what a process would send back, outside the timing
            self.result_bytes = payload_size(result)
        finally:
            self.done.set()
        return result

    def _stop(self, cpu0: float, wall0: float, stat: str, queued0: float | None) -> None:
        self.cpu = time.thread_time() - cpu0
        wall = time.perf_counter() - wall0
        queued1 = _queued(stat)
        if queued0 is not None and queued1 is not None:
            self.queued = min(wall, max(0.0, queued1 - queued0))
        self.wall = wall - self.queued
        self._started = None

    def __reduce__(self) -> tuple[object, ...]:
        return (Probe, (self.fn,))  # a retried probe on another backend stays a plain call

    def read_running(self) -> tuple[float, float, float] | None:
        """CPU, wall and queued time so far of a probe still running, where one can tell."""
        started = self._started
        if started is None:
            return None
        cpu0, wall0, clock, stat, queued0 = started
        if clock is None:
            return None
        try:
            cpu = time.clock_gettime(clock) - cpu0
        except OSError:
            return None
        wall = time.perf_counter() - wall0
        queued1 = _queued(stat)
        queued = 0.0
        if queued0 is not None and queued1 is not None:
            queued = min(wall, max(0.0, queued1 - queued0))
        return cpu, wall - queued, queued


def _queued(stat: str) -> float | None:
    """Seconds a thread has waited, runnable, for a CPU (Linux ``schedstat``), or None."""
    try:
        with open(stat, "rb") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return None


class _Group:
    """The tasks of one function: its probes, then its decision."""

    def __init__(self, size: int | None) -> None:
        self.size = size  # tasks of this function in the batch, when the input is sized
        self.probes: list[Probe] = []
        self.args_bytes = 0
        self.decided: tuple[str, str] | None = None
        self.wide = False  # measured as mostly waiting: the wide thread pool


def _args_bytes(call: Call) -> int:
    return payload_size((call.args, call.kwargs))


def payload_size(obj: object) -> int:
    """About how many bytes pickling ``obj`` gives, without pickling it.

    ``sys.getsizeof`` of the object and, for a tuple, list, set or dict, of its items (one
    level down): exact enough for bytes, strings and arrays, which are what make payloads
    large, and cheap whatever their size.
    """
    size = sys.getsizeof(obj, 0)
    if isinstance(obj, dict):
        items: Iterable[object] = (*obj.keys(), *obj.values())
    elif isinstance(obj, (tuple, list, set, frozenset)):
        items = obj
    else:
        return size
    for item in items:
        size += sys.getsizeof(item, 0)
        if isinstance(item, (tuple, list, dict)):
            size += sum(
                sys.getsizeof(x, 0) for x in (item.values() if isinstance(item, dict) else item)
            )
    return size


def _wait(group: _Group, facts: Facts) -> bool:
    """Wait until the group's last probe finished or ran long enough to judge.

    Long enough: PROBE_WAIT, not counting time queued for a CPU; or, after PROBE_EARLY,
    as soon as the figures so far settle it (the task mostly waits: threads; or even its
    duration so far makes processes pay). Returns whether the probe finished. Gives up
    after PROBE_WAIT_MAX, however busy the machine. The engine waits meanwhile, so
    this keeps a mixed batch's other tasks from being held up for long.
    """
    probe = group.probes[-1]
    deadline = time.monotonic() + PROBE_WAIT_MAX
    while not probe.done.wait(PROBE_SLICE):
        running = probe.read_running()
        if running is None and probe._started is not None:  # no CPU clock here
            return probe.done.wait(PROBE_WAIT_BLIND)
        if running is not None:
            if running[1] >= PROBE_WAIT:
                return False
            if running[1] >= PROBE_EARLY and _settled(_measurement(group), facts):
                return False
        if time.monotonic() >= deadline:
            return False
    return True


def _settled(measured: Measurement, facts: Facts) -> bool:
    if measured.cpu_share < WAITING_SHARE / 5:
        return True  # waits: threads, however long it turns out to be
    # a longer task only makes processes pay more
    return decide(TaskFacts("sync", None, True, measured), facts)[0] == "process"


def _measurement(group: _Group) -> Measurement:
    """Sum what the group's probes showed (the last one may still run)."""
    last = group.probes[-1]
    finished = last.done.is_set()
    running = None if finished else last.read_running()
    finished = finished or (running is None and last.done.is_set())
    done = [p for p in group.probes if p.done.is_set()]
    cpu, wall, queued = (
        sum(p.cpu for p in done),
        sum(p.wall for p in done),
        sum(p.queued for p in done),
    )
    samples = len(done)
    if not finished:
        if running is None:  # no CPU clock and still running after a second: long and unknown
            running = (0.0, PROBE_WAIT_BLIND, 0.0)
        cpu, wall, queued = cpu + running[0], wall + running[1], queued + running[2]
        samples += 1
    size = group.size
    return Measurement(
        cpu_seconds=cpu,
        wall_seconds=wall,
        samples=max(1, samples),
        payload_bytes=group.args_bytes + max((p.result_bytes for p in group.probes), default=0),
        remaining=None if size is None else max(0, size - len(group.probes)),
        finished=finished,
        queued_seconds=queued,
    )


def measure_once(call: Call, remaining: int | None) -> Measurement:
    """Run ``call`` once on a short-lived thread and measure it (for ``choose_backend``)."""
    probe = Probe(call.fn)
    errors: list[BaseException] = []

    def target() -> None:
        try:
            probe(*call.args, **call.kwargs)
        except BaseException as exc:  # the figures are what matters here, not the outcome
            errors.append(exc)

    thread = threading.Thread(target=target, name="unirun-measure", daemon=True)
    thread.start()
    thread.join()
    return Measurement(
        cpu_seconds=probe.cpu,
        wall_seconds=probe.wall,
        payload_bytes=_args_bytes(call) + probe.result_bytes,
        remaining=remaining,
        queued_seconds=probe.queued,
    )


class AutoRouter(Router):
    """Routes each call by the picker; a mixed batch uses several backends at once.

    Args:
        options_for: The constructor options for a mode's warm backend.
    """

    def __init__(self, options_for: Callable[[str], dict[str, Any]]) -> None:
        super().__init__(None, "auto")
        self._options_for = options_for
        self._facts: Facts | None = None
        self._routes: dict[str, tuple[Executor, str]] = {}
        self._groups: dict[object, _Group] = {}
        self._sized: dict[object, int] | None = None

    # -- the Router interface --------------------------------------------------------------

    def route(self, call: Call) -> tuple[Executor, str]:
        facts = self._get_facts()
        if isinstance(call.fn, Probe):  # a retried probe: back where it ran
            return self._backend("thread", call, "it was measured there")
        if call.is_async or call.hint is not None or facts.gevent_patched:
            mode, why = route(call, facts)
            return self._backend(mode, call, why, wide=call.hint == "io")
        return self._route_unhinted(call, facts)

    def check(self, calls: list[Call]) -> None:
        """Decide the static routes now, so a backend a task cannot use fails up front.

        The backends of those routes are made now too, so the engine's window fits them.
        """
        facts = self._get_facts()
        sized: dict[object, int] = {}
        by_mode: dict[tuple[str, bool], list[Call]] = {}
        for call in calls:
            if not call.is_async and call.hint is None and not facts.gevent_patched:
                key = function_key(call.fn)
                sized[key] = sized.get(key, 0) + 1
                continue
            mode, _ = route(call, facts)
            by_mode.setdefault((mode, call.hint == "io"), []).append(call)
        self._sized = sized
        for (mode, _), group in by_mode.items():
            cls = factory_for(mode)  # BackendUnavailableError now, before anything runs
            if isinstance(cls, type) and issubclass(cls, BackendBase):
                cls._check_calls(group)
        for (mode, wide), group in by_mode.items():
            self._backend(mode, group[0], route(group[0], facts)[1], wide=wide)

    def default_window(self) -> int:
        windows = [2 * min(32, self._get_facts().cpus + 4)]  # the probes' thread pool
        for executor, _ in self._routes.values():
            if isinstance(executor, BackendBase):
                windows.append(executor._default_window())
        if self._sized is None or self._sized:  # unhinted tasks may turn out to wait
            windows.append(2 * IO_THREADS)
        return max(windows)

    # -- helpers ---------------------------------------------------------------------------

    def _get_facts(self) -> Facts:
        if self._facts is None:
            self._facts = gather_facts(
                thread_workers=self._options_for("thread").get("max_workers"),
                process_workers=self._options_for("process").get("max_workers"),
            )
        return self._facts

    def _backend(
        self, mode: str, call: Call, why: str, log: bool = True, wide: bool = False
    ) -> tuple[Executor, str]:
        wide = wide and mode == "thread"
        key = "thread (I/O)" if wide else mode
        found = self._routes.get(key)
        if found is None:
            options = self._backend_options(mode)
            if wide:
                options.setdefault("max_workers", IO_THREADS)
            found = WARM.get(mode, options)
            self._routes[key] = found
            self._executor = found[0]
            if log:
                logger.info("unirun: auto chose mode %r for %s: %s", found[1], call.describe(), why)
        return found

    def _backend_options(self, mode: str) -> dict[str, Any]:
        """The call's options that ``mode``'s backend takes: auto may pick any backend."""
        options = accepted_options(factory_for(mode), self._options_for(mode))
        if mode == "serial":
            options.pop("max_workers", None)  # serial runs one at a time, whatever was asked
        return options

    def _route_unhinted(self, call: Call, facts: Facts) -> tuple[Executor, str]:
        key = function_key(call.fn)
        group = self._groups.get(key)
        if group is None:
            size = None if self._sized is None else self._sized.get(key)
            group = self._groups[key] = _Group(size)
            if size == 1:  # nothing left to decide for: run it on a thread
                group.decided = route(call, facts)
        if group.decided is None and group.probes:
            finished = _wait(group, facts)
            short = sum(p.wall for p in group.probes) < PROBE_MIN_WALL
            if not (finished and short and len(group.probes) < PROBE_SAMPLES):
                measured = _measurement(group)
                group.wide = measured.cpu_share < WAITING_SHARE
                group.decided = route(call, facts, measured)
                logger.info(
                    "unirun: auto chose mode %r for the tasks of %s from %s on: %s",
                    group.decided[0],
                    _fn_name(call),
                    call.describe(),
                    group.decided[1],
                )
        if group.decided is not None:
            mode, why = group.decided
            return self._backend(mode, call, why, log=not group.probes, wide=group.wide)
        if not group.probes:
            group.args_bytes = _args_bytes(call)
        probe = Probe(call.fn)
        group.probes.append(probe)
        call.fn = probe
        return self._backend("thread", call, "measuring it on a thread first")


def _fn_name(call: Call) -> str:
    fn: Any = call.fn.fn if isinstance(call.fn, Probe) else call.fn
    while isinstance(fn, (functools.partial, Task)):
        fn = fn.func if isinstance(fn, functools.partial) else fn.fn
    return str(getattr(fn, "__qualname__", None) or type(fn).__name__)
