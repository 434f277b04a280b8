"""The auto mode's picker: which backend suits a task, and why.

``choose_backend`` is a pure function of what the tasks are, their hints and a few facts
about the environment (:class:`Facts`); :func:`gather_facts` is the only place that looks
at the machine. The rules, strongest first (SPEC section 5):

1. async callables and coroutine objects -> ``asyncio`` (hinted ``"cpu"``: ``process``,
   whose workers each run an event loop);
2. ``"cpu"`` -> ``process`` (``thread`` when the GIL is off; ``serial`` on one CPU);
3. ``"io"`` -> ``thread`` (``gevent`` when gevent has monkey-patched the process);
4. no hint -> ``thread``, the safe default for unknown work;
5. tasks that differ -> ``"mixed"``: each task runs on its own route.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ._tasks import Call, Hint, as_call, check_hint, close_coroutines

__all__ = ["Choice", "Facts", "choose_backend", "gather_facts", "route"]


@dataclass(frozen=True)
class Facts:
    """What the picker needs to know about the environment."""

    cpus: int
    gil_enabled: bool = True
    gevent_patched: bool = False


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


def gather_facts() -> Facts:
    """Look at this process and machine."""
    is_gil_enabled = getattr(sys, "_is_gil_enabled", None)
    return Facts(
        cpus=available_cpus(),
        gil_enabled=True if is_gil_enabled is None else bool(is_gil_enabled()),
        gevent_patched=gevent_patched(),
    )


def route(call: Call, facts: Facts) -> tuple[str, str]:
    """The mode for one task and the sentence that says why."""
    hint = call.hint
    if call.is_async:
        if hint == "cpu":
            return "process", (
                "async and hinted 'cpu': process workers each run an event loop, "
                "so every core is busy"
            )
        return "asyncio", "async: coroutines wait on I/O most cheaply on an event loop"
    if hint == "cpu":
        if facts.cpus <= 1:
            return "serial", "hinted 'cpu' but only one CPU is available: parallelism cannot help"
        if not facts.gil_enabled:
            return "thread", "hinted 'cpu' on a free-threaded interpreter: threads run in parallel"
        return "process", "hinted 'cpu': the GIL serialises Python threads, processes do not"
    if hint == "io":
        if facts.gevent_patched:
            return "gevent", "hinted 'io' and gevent has monkey-patched the process"
        return "thread", "hinted 'io': threads overlap blocking I/O"
    return "thread", "no hint: threads are the safe default for unknown work"


def choose_backend(
    tasks: Iterable[Any] | None = None,
    *,
    hint: Hint | None = None,
    facts: Facts | None = None,
) -> Choice:
    """Say which mode suits ``tasks`` (or a workload described by ``hint``), and why.

    Args:
        tasks: Tasks as ``run_all`` takes them; a one-shot iterator is consumed.
        hint: ``"cpu"`` or ``"io"`` for tasks without a hint of their own.
        facts: The environment; gathered from this process when left out.

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
        mode, why = route(Call(_noop, hint=hint, is_async=False), facts)
        return Choice(mode, why[0].upper() + why[1:] + ".")
    calls = [as_call(t, i, hint) for i, t in enumerate(tasks)]
    try:
        decided = [route(call, facts) for call in calls]
    finally:
        close_coroutines(calls)
    if not decided:
        mode, why = route(Call(_noop, hint=hint, is_async=False), facts)
        return Choice(mode, "No tasks; " + why + ".", ())
    routes = tuple(mode for mode, _ in decided)
    modes = sorted(set(routes))
    if len(modes) == 1:
        why = decided[0][1]
        return Choice(modes[0], why[0].upper() + why[1:] + ".", routes)
    reasons = []
    for mode in modes:
        indexes = [i for i, m in enumerate(routes) if m == mode]
        why = next(w for m, w in decided if m == mode)
        reasons.append(f"{_count(indexes)} -> {mode} ({why}).")
    return Choice("mixed", " ".join(reasons), routes)


def _count(indexes: list[int]) -> str:
    if len(indexes) == 1:
        return f"Task {indexes[0]}"
    if len(indexes) <= 4:
        return "Tasks " + ", ".join(map(str, indexes))
    return f"{len(indexes)} tasks"


def _noop() -> None:
    return None
