"""The auto mode's picker: which backend suits a task, and why.

``choose_backend`` is a pure function of what the tasks are (:class:`TaskFacts`), their
hints, a few facts about the environment (:class:`Facts`) and, for unhinted sync tasks,
what a measurement saw (:class:`Measurement`). :func:`gather_facts` and
:func:`task_facts` are the only places that look at the machine or the task.

Data flow::

    task --task_facts--> TaskFacts --+
    gather_facts() ----> Facts ------+--> route() --first matching row of RULES--> (mode, why)
    probe on a thread -> Measurement +        (measured rows compare estimate()'s figures)

:data:`RULES` is the table, strongest row first; ``docs/choosing.md`` shows the same table
and a test keeps the two equal. The measured rows weigh what each backend would cost for
the rest of the batch (:func:`estimate`): threads share one CPU under the GIL but overlap
waiting; processes use every CPU but pay start-up and pickling per task; serial pays
nothing but runs one task at a time.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import pickle
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final, Literal

from ._tasks import Call, Hint, Task, as_call, check_hint, close_coroutines

__all__ = [
    "IO_THREADS",
    "RULES",
    "Choice",
    "Facts",
    "Measurement",
    "Rule",
    "TaskFacts",
    "choose_backend",
    "estimate",
    "gather_facts",
    "route",
    "task_facts",
]

Kind = Literal["coroutine", "async", "sync"]

#: Per-task overhead of the engine on a thread over running in the caller (seconds).
THREAD_OVERHEAD: Final = 10e-6
#: Per-task overhead of the serial backend (seconds).
SERIAL_OVERHEAD: Final = 5e-6
#: Starting a pool of worker processes, paid once per warm pool (seconds, conservative).
PROCESS_STARTUP: Final = 0.1
#: Per-task round trip to a worker process besides the payload (seconds).
PROCESS_OVERHEAD: Final = 100e-6
#: Pickling, sending and unpickling a payload, both ways (bytes per second).
PICKLE_RATE: Final = 200e6
#: Processes must beat the best in-process estimate by this factor to be chosen.
PROCESS_MARGIN: Final = 0.85
#: Serial must beat threads by this factor (threads keep timeouts interruptible).
SERIAL_MARGIN: Final = 0.9
#: Threads for work that mostly waits (hinted 'io', or measured so) when the call does not
#: set ``max_workers``; threads start on demand, so a small batch starts only what it uses.
IO_THREADS: Final = 64
#: Below this CPU share a measured task counts as mostly waiting.
WAITING_SHARE: Final = 0.5
#: Batch size assumed for the rest of an input of unknown length (a generator).
UNKNOWN_BATCH: Final = 100


@dataclass(frozen=True)
class Facts:
    """What the picker needs to know about the environment.

    Attributes:
        cpus: CPUs this process may use.
        gil_enabled: False on a free-threaded interpreter running with the GIL off.
        gevent_patched: gevent has monkey-patched the process.
        cloudpickle: cloudpickle is installed, so lambdas and closures reach processes.
        thread_workers: The thread pool's size (None: the default, ``cpus + 4``).
        process_workers: The process pool's size (None: the default, ``cpus``).
    """

    cpus: int
    gil_enabled: bool = True
    gevent_patched: bool = False
    cloudpickle: bool = False
    thread_workers: int | None = None
    process_workers: int | None = None


@dataclass(frozen=True)
class Measurement:
    """What running tasks on a thread showed (for unhinted sync tasks).

    Attributes:
        cpu_seconds: Thread CPU time of the measured tasks, summed.
        wall_seconds: Their wall time, summed, less ``queued_seconds`` (a lower bound when
            ``finished`` is False).
        samples: How many tasks were measured.
        payload_bytes: About the pickled size of one task's arguments and result.
        remaining: Similar tasks still to run; None when the input's length is unknown.
        finished: False when the figures were read while the task still ran.
        queued_seconds: Time the thread was ready to run but waited for a CPU that other
            work kept busy (Linux ``schedstat``; 0 elsewhere). Left out of the wall time,
            so a busy machine does not make CPU-bound work look like waiting.
    """

    cpu_seconds: float
    wall_seconds: float
    samples: int = 1
    payload_bytes: int = 0
    remaining: int | None = None
    finished: bool = True
    queued_seconds: float = 0.0

    @property
    def duration(self) -> float:
        """Wall time of one task, on average."""
        return self.wall_seconds / max(1, self.samples)

    @property
    def cpu_share(self) -> float:
        """Thread CPU time over wall time, 0 to 1."""
        if self.wall_seconds <= 0:
            return 1.0
        return min(1.0, max(0.0, self.cpu_seconds / self.wall_seconds))


@dataclass(frozen=True)
class TaskFacts:
    """What the picker needs to know about one task."""

    kind: Kind
    hint: Hint | None = None
    pickles: bool = True
    measured: Measurement | None = None


@dataclass(frozen=True)
class Choice:
    """The picker's answer.

    Attributes:
        mode: The mode name, or ``"mixed"`` when tasks go to different modes.
        reason: One readable sentence per decision.
        routes: The mode of each task, when a list of tasks was given.
    """

    mode: str
    reason: str
    routes: tuple[str, ...] | None = None


# -- the table ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """One row of the picker's table: the first row that matches a task decides."""

    kind: Kind
    hint: str  # "cpu", "io", "none", "io or none" or "any"
    when: str  # a key of CONDITIONS
    mode: str
    why: str

    def matches(self, task: TaskFacts, facts: Facts) -> bool:
        """Whether this row applies to ``task`` in ``facts``."""
        if self.kind != task.kind:
            return False
        hint = task.hint or "none"
        if self.hint not in ("any", hint) and not (self.hint == "io or none" and hint != "cpu"):
            return False
        return CONDITIONS[self.when](task, facts)


def _measured_best(task: TaskFacts, facts: Facts) -> str | None:
    if task.measured is None:
        return None
    return _best(estimate(task.measured, task, facts))


CONDITIONS: Final[dict[str, Callable[[TaskFacts, Facts], bool]]] = {
    "always": lambda t, f: True,
    "one CPU": lambda t, f: f.cpus <= 1,
    "GIL off": lambda t, f: not f.gil_enabled,
    "does not pickle": lambda t, f: not t.pickles,
    "gevent patched": lambda t, f: f.gevent_patched,
    "not measured": lambda t, f: t.measured is None,
    "measured: processes pay off": lambda t, f: _measured_best(t, f) == "process",
    "measured: serial is fastest": lambda t, f: _measured_best(t, f) == "serial",
}

_PICKLE_FIX: Final = (
    "it cannot be pickled for a process (a lambda or closure: pip install 'unirun[cloudpickle]', "
    "or define it at module level)"
)

#: The picker's table, strongest row first (SPEC section 5). docs/choosing.md shows it.
RULES: Final[tuple[Rule, ...]] = (
    Rule(
        "coroutine",
        "any",
        "always",
        "asyncio",
        "a coroutine object cannot cross a process boundary; an event loop runs it",
    ),
    Rule(
        "async",
        "cpu",
        "gevent patched",
        "asyncio",
        "async and hinted 'cpu', but gevent has monkey-patched threading, where worker "
        "processes hang: one event loop",
    ),
    Rule(
        "async",
        "cpu",
        "one CPU",
        "asyncio",
        "async and hinted 'cpu', but only one CPU is available: one event loop is enough",
    ),
    Rule(
        "async", "cpu", "does not pickle", "asyncio", "async and hinted 'cpu', but " + _PICKLE_FIX
    ),
    Rule(
        "async",
        "cpu",
        "always",
        "process",
        "async and hinted 'cpu': process workers each run an event loop, so every core is busy",
    ),
    Rule(
        "async",
        "io or none",
        "always",
        "asyncio",
        "async: coroutines wait on I/O most cheaply on an event loop",
    ),
    Rule(
        "sync",
        "cpu",
        "gevent patched",
        "gevent",
        "hinted 'cpu', but gevent has monkey-patched threading, where worker processes "
        "hang: greenlets, which at least yield between tasks",
    ),
    Rule(
        "sync",
        "cpu",
        "one CPU",
        "serial",
        "hinted 'cpu' but only one CPU is available: parallelism cannot help",
    ),
    Rule(
        "sync",
        "cpu",
        "GIL off",
        "thread",
        "hinted 'cpu' on a free-threaded interpreter: threads run in parallel without pickling",
    ),
    Rule("sync", "cpu", "does not pickle", "thread", "hinted 'cpu', but " + _PICKLE_FIX),
    Rule(
        "sync",
        "cpu",
        "always",
        "process",
        "hinted 'cpu': the GIL serialises Python threads, processes do not",
    ),
    Rule(
        "sync",
        "io",
        "gevent patched",
        "gevent",
        "hinted 'io' and gevent has monkey-patched the process: greenlets switch cheapest",
    ),
    Rule("sync", "io", "always", "thread", "hinted 'io': threads overlap blocking I/O"),
    Rule(
        "sync",
        "none",
        "gevent patched",
        "gevent",
        "no hint and gevent has monkey-patched the process: blocking calls yield to "
        "other greenlets",
    ),
    Rule(
        "sync",
        "none",
        "not measured",
        "thread",
        "no hint: threads are the safe default for unknown work",
    ),
    Rule(
        "sync",
        "none",
        "measured: processes pay off",
        "process",
        "measured as CPU-bound, and processes pay off after start-up and pickling",
    ),
    Rule(
        "sync",
        "none",
        "measured: serial is fastest",
        "serial",
        "measured as CPU-bound but too short for processes to pay off; threads would "
        "only add switching under the GIL",
    ),
    Rule(
        "sync",
        "none",
        "always",
        "thread",
        "measured as mostly waiting, or too short for processes: threads overlap the waits",
    ),
)


# -- estimates for measured tasks ---------------------------------------------------------


def estimate(measured: Measurement, task: TaskFacts, facts: Facts) -> dict[str, float]:
    """Seconds the rest of a measured batch would take on serial, thread and process.

    ``process`` is left out when it cannot run the task (it does not pickle, one CPU).
    Figures are estimates from one measurement and the constants of this module.
    """
    remaining = UNKNOWN_BATCH if measured.remaining is None else max(0, measured.remaining)
    d = measured.duration
    cpu = d * measured.cpu_share
    threads = facts.thread_workers or thread_pool_size(measured, facts)
    thread_cpus = 1 if facts.gil_enabled else min(facts.cpus, threads)
    out = {
        "serial": remaining * (d + SERIAL_OVERHEAD),
        # CPU parts queue for the GIL (one CPU), waits overlap across threads
        "thread": remaining * max(cpu / thread_cpus, d / threads) + remaining * THREAD_OVERHEAD,
    }
    if task.pickles and facts.cpus > 1 and remaining > 0:
        workers = min(facts.process_workers or facts.cpus, remaining)
        per_task = d + PROCESS_OVERHEAD + measured.payload_bytes / PICKLE_RATE
        busy = max(remaining * cpu / min(workers, facts.cpus), remaining * per_task / workers)
        out["process"] = PROCESS_STARTUP + busy
    return out


def thread_pool_size(measured: Measurement | None, facts: Facts) -> int:
    """Threads auto uses: wide for work that mostly waits, the stdlib default otherwise."""
    if measured is not None and measured.cpu_share < WAITING_SHARE:
        return IO_THREADS
    return min(32, facts.cpus + 4)


def _best(estimates: dict[str, float]) -> str:
    thread, serial = estimates["thread"], estimates["serial"]
    best = "serial" if serial < SERIAL_MARGIN * thread else "thread"
    process = estimates.get("process")
    if process is not None and process < PROCESS_MARGIN * min(thread, serial):
        best = "process"
    return best


def explain_measurement(measured: Measurement, task: TaskFacts, facts: Facts) -> str:
    """The figures behind a measured decision, as a clause."""
    d = measured.duration
    what = f"{measured.samples} task{'s' if measured.samples != 1 else ''}"
    still = "" if measured.finished else " so far (still running)"
    if measured.queued_seconds >= 1e-3:
        still += f", not counting {_secs(measured.queued_seconds)} queued for a busy CPU"
    left = "the rest" if measured.remaining is None else f"{measured.remaining} more"
    estimates = sorted(estimate(measured, task, facts).items())
    figures = ", ".join(f"{mode} {_secs(s)}" for mode, s in estimates)
    return (
        f"measured {what} on a thread: {_secs(d)} wall each, {measured.cpu_share:.0%} of it "
        f"on the CPU{still}; estimated for {left}: {figures}"
    )


def _secs(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.0f} us"


# -- the picker ---------------------------------------------------------------------------


def decide(task: TaskFacts, facts: Facts) -> tuple[str, str]:
    """The mode for one task and the clause that says why: the first row of RULES."""
    for rule in RULES:
        if rule.matches(task, facts):
            why = rule.why
            if task.measured is not None and rule.when.startswith(("measured", "always")):
                why += " (" + explain_measurement(task.measured, task, facts) + ")"
            return rule.mode, why
    raise AssertionError(f"no rule matches {task!r}")  # the table ends with catch-alls


def route(call: Call, facts: Facts, measured: Measurement | None = None) -> tuple[str, str]:
    """The mode for one call and the clause that says why."""
    return decide(task_facts(call, facts, measured), facts)


def choose_backend(
    tasks: Iterable[Any] | None = None,
    *,
    hint: Hint | None = None,
    measure: bool | Measurement = False,
    facts: Facts | None = None,
) -> Choice:
    """Say which mode suits ``tasks`` (or a workload described by ``hint``), and why.

    Args:
        tasks: Tasks as ``run_all`` takes them; a one-shot iterator is consumed.
        hint: ``"cpu"`` or ``"io"`` for tasks without a hint of their own.
        measure: For unhinted sync tasks: ``True`` runs the first task of each function
            once on a thread (its result is discarded; ``run_all(mode="auto")`` measures
            the same way and keeps the result) and decides from its CPU time, wall time,
            payload and the batch size. A :class:`Measurement` applies the given figures
            to every unhinted sync task instead (its ``remaining`` is taken as given).
            ``False`` (the default) runs nothing.
        facts: The environment; gathered from this process when left out (for tests).

    Returns:
        A :class:`Choice`. ``routes`` holds each task's mode when ``tasks`` was given.

    Example:
        >>> import unirun
        >>> unirun.choose_backend(hint="io").mode
        'thread'
    """
    check_hint(hint)
    facts = facts or gather_facts()
    if tasks is None:
        mode, why = decide(TaskFacts("sync", hint), facts)
        return Choice(mode, _sentence(why))
    calls = [as_call(t, i, hint) for i, t in enumerate(tasks)]
    try:
        measurements = _measurements(calls, measure)
        decided = [route(call, facts, measurements.get(function_key(call.fn))) for call in calls]
    finally:
        close_coroutines(calls)
    if not decided:
        mode, why = decide(TaskFacts("sync", hint), facts)
        return Choice(mode, "No tasks; " + why + ".", ())
    return summarise(decided)


def summarise(decided: list[tuple[str, str]]) -> Choice:
    """One :class:`Choice` for a list of per-task decisions."""
    routes = tuple(mode for mode, _ in decided)
    modes = sorted(set(routes))
    if len(modes) == 1:
        return Choice(modes[0], _sentence(decided[0][1]), routes)
    reasons = []
    for mode in modes:
        indexes = [i for i, m in enumerate(routes) if m == mode]
        why = next(w for m, w in decided if m == mode)
        reasons.append(f"{_count(indexes)} -> {mode} ({why}).")
    return Choice("mixed", " ".join(reasons), routes)


def _measurements(calls: list[Call], measure: bool | Measurement) -> dict[object, Measurement]:
    if measure is False:
        return {}
    groups: dict[object, list[Call]] = {}
    for call in calls:
        if not call.is_async and call.hint is None:
            groups.setdefault(function_key(call.fn), []).append(call)
    if isinstance(measure, Measurement):
        return dict.fromkeys(groups, measure)
    from ._auto import measure_once

    # a lone task has nothing to decide for: it is not run
    return {
        key: measure_once(group[0], len(group) - 1)
        for key, group in groups.items()
        if len(group) > 1
    }


def _sentence(why: str) -> str:
    return why[0].upper() + why[1:] + "."


def _count(indexes: list[int]) -> str:
    if len(indexes) == 1:
        return f"Task {indexes[0]}"
    if len(indexes) <= 4:
        return "Tasks " + ", ".join(map(str, indexes))
    return f"{len(indexes)} tasks"


# -- facts --------------------------------------------------------------------------------


def available_cpus() -> int:
    """CPUs this process may use: ``os.process_cpu_count()``, the affinity mask, or all."""
    count = getattr(os, "process_cpu_count", None)
    if count is not None:
        n = count()
        if n:
            return int(n)
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def gevent_patched() -> bool:
    """True when gevent has monkey-patched ``socket`` in this process (never imports gevent)."""
    monkey = sys.modules.get("gevent.monkey")
    if monkey is None:
        return False
    try:
        return bool(monkey.is_module_patched("socket"))
    except Exception:  # an unexpected gevent version: assume nothing was patched
        return False


def refuse_if_gevent_patched(mode: str) -> None:
    """Refuse ``mode`` (one that starts worker processes) when gevent patched ``threading``.

    ``ProcessPoolExecutor`` and ``multiprocessing`` queues hang in such a process (gevent
    issue #936), so a process backend calls this before starting anything, and fails fast
    instead of hanging. Never imports gevent.

    Raises:
        BackendUnavailableError: gevent has monkey-patched ``threading`` in this process.
    """
    monkey = sys.modules.get("gevent.monkey")
    if monkey is None:
        return
    try:
        patched = bool(monkey.is_module_patched("threading"))
    except Exception:  # an unexpected gevent version: assume nothing was patched
        return
    if patched:
        from ._errors import BackendUnavailableError

        raise BackendUnavailableError(
            f"mode {mode!r} cannot run here: gevent has monkey-patched threading, and "
            "ProcessPoolExecutor/multiprocessing hang when threading is monkey-patched "
            "(gevent #936). Use mode='gevent' (or 'thread'), or start processes before "
            "patching.",
            backend=mode,
        )


def gather_facts(thread_workers: int | None = None, process_workers: int | None = None) -> Facts:
    """Look at this process and machine."""
    is_gil_enabled = getattr(sys, "_is_gil_enabled", None)
    return Facts(
        cpus=available_cpus(),
        gil_enabled=True if is_gil_enabled is None else bool(is_gil_enabled()),
        gevent_patched=gevent_patched(),
        cloudpickle=_has_cloudpickle(),
        thread_workers=thread_workers,
        process_workers=process_workers,
    )


@functools.lru_cache(maxsize=1)
def _has_cloudpickle() -> bool:
    # find_spec looks without importing: cloudpickle is imported by the process backend only
    return importlib.util.find_spec("cloudpickle") is not None


def task_facts(call: Call, facts: Facts, measured: Measurement | None = None) -> TaskFacts:
    """What ``call`` is: its kind, hint and whether it pickles for a process."""
    if call.coroutine:
        kind: Kind = "coroutine"
    elif call.is_async:
        kind = "async"
    else:
        kind = "sync"
    pickles = True
    if kind != "coroutine" and (call.hint == "cpu" or measured is not None):
        pickles = facts.cloudpickle or pickles_by_reference(call.fn)
    return TaskFacts(kind, call.hint, pickles, measured if kind == "sync" else None)


def function_key(fn: object) -> object:
    """What makes tasks alike for measurement: their function's code (lambdas included)."""
    while isinstance(fn, (functools.partial, Task)):
        fn = fn.func if isinstance(fn, functools.partial) else fn.fn
    fn = getattr(fn, "__func__", fn)  # a bound method: its function
    code = getattr(fn, "__code__", None)
    if code is not None:
        return code
    try:
        hash(fn)
    except TypeError:
        return type(fn)
    return fn


def pickles_by_reference(fn: object) -> bool:
    """Whether the standard pickle can send ``fn`` (not its arguments) to a process.

    Functions pickle by name, so this is cheap; a lambda or a nested function does not.
    """
    while isinstance(fn, (functools.partial, Task)):
        fn = fn.func if isinstance(fn, functools.partial) else fn.fn
    try:
        pickle.dumps(fn)
    except Exception:  # PicklingError, AttributeError, TypeError: all mean "cannot send it"
        return False
    return True
