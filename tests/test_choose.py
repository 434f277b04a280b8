"""The picker as a table: (environment, task kind, hint) -> mode, and the docs' table."""

from __future__ import annotations

import asyncio
import functools
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import unirun
from unirun._choose import (
    CONDITIONS,
    RULES,
    Facts,
    Measurement,
    TaskFacts,
    decide,
    estimate,
    function_key,
    pickles_by_reference,
)

TWO_CPUS = Facts(cpus=2)
ONE_CPU = Facts(cpus=1)
GIL_OFF = Facts(cpus=8, gil_enabled=False)
PATCHED = Facts(cpus=2, gevent_patched=True)
NO_CLOUDPICKLE = Facts(cpus=2, cloudpickle=False)
CLOUDPICKLE = Facts(cpus=2, cloudpickle=True)


def spin(n: int = 10_000) -> int:
    total = 0
    for i in range(n):
        total += i
    return total


def nap(seconds: float = 0.05) -> float:
    time.sleep(seconds)
    return seconds


async def fetch(x: int = 0) -> int:
    await asyncio.sleep(0)
    return x


@unirun.cpu_bound
def crunch(n: int = 10) -> int:
    return spin(n)


@unirun.io_bound
def download(x: int = 0) -> int:
    return x


@unirun.cpu_bound
async def async_crunch(x: int = 0) -> int:
    return x


def _lambda() -> Callable[[], int]:
    return lambda: spin(10)


# What each kind of task is made of; a factory, so coroutine objects are fresh each time.
KINDS: dict[str, Callable[[], Any]] = {
    "sync fn": lambda: spin,
    "sync lambda": _lambda,
    "partial": lambda: functools.partial(spin, 5),
    "Task": lambda: unirun.task(spin, 5),
    "@cpu_bound": lambda: crunch,
    "@io_bound": lambda: download,
    "Task(hint=io) over @cpu_bound": lambda: unirun.Task(crunch, hint="io"),
    "async fn": lambda: fetch,
    "@cpu_bound async fn": lambda: async_crunch,
    "coroutine object": lambda: fetch(1),
}


@dataclass(frozen=True)
class Case:
    kind: str
    hint: str | None
    facts: Facts
    facts_name: str
    mode: str


def _case(kind: str, hint: str | None, facts_name: str, mode: str) -> Any:
    facts = {
        "2 CPUs": TWO_CPUS,
        "1 CPU": ONE_CPU,
        "GIL off": GIL_OFF,
        "gevent patched": PATCHED,
        "no cloudpickle": NO_CLOUDPICKLE,
        "cloudpickle": CLOUDPICKLE,
    }[facts_name]
    return pytest.param(
        Case(kind, hint, facts, facts_name, mode),
        id=f"{kind} | hint={hint} | {facts_name} -> {mode}",
    )


PICKER_TABLE = [
    # async first: an event loop, or processes with loops for async CPU work
    _case("async fn", None, "2 CPUs", "asyncio"),
    _case("async fn", "io", "2 CPUs", "asyncio"),
    _case("async fn", "cpu", "2 CPUs", "process"),
    _case("async fn", "cpu", "1 CPU", "asyncio"),
    _case("@cpu_bound async fn", None, "2 CPUs", "process"),
    _case("coroutine object", None, "2 CPUs", "asyncio"),
    _case("coroutine object", "cpu", "2 CPUs", "asyncio"),
    _case("async fn", None, "gevent patched", "asyncio"),
    _case("async fn", "cpu", "gevent patched", "asyncio"),
    _case("sync fn", "cpu", "gevent patched", "gevent"),
    # cpu: processes, unless the GIL is off, one CPU, or the task cannot be pickled
    _case("sync fn", "cpu", "2 CPUs", "process"),
    _case("partial", "cpu", "2 CPUs", "process"),
    _case("Task", "cpu", "2 CPUs", "process"),
    _case("@cpu_bound", None, "2 CPUs", "process"),
    _case("@cpu_bound", "io", "2 CPUs", "process"),
    _case("sync fn", "cpu", "1 CPU", "serial"),
    _case("sync fn", "cpu", "GIL off", "thread"),
    _case("sync lambda", "cpu", "no cloudpickle", "thread"),
    _case("sync lambda", "cpu", "cloudpickle", "process"),
    # io: threads, or greenlets under gevent's patching
    _case("sync fn", "io", "2 CPUs", "thread"),
    _case("@io_bound", None, "2 CPUs", "thread"),
    _case("@io_bound", "cpu", "2 CPUs", "thread"),
    _case("Task(hint=io) over @cpu_bound", None, "2 CPUs", "thread"),
    _case("sync fn", "io", "gevent patched", "gevent"),
    _case("sync fn", "io", "1 CPU", "thread"),
    # no hint, not measured: threads
    _case("sync fn", None, "2 CPUs", "thread"),
    _case("sync lambda", None, "1 CPU", "thread"),
    _case("sync fn", None, "gevent patched", "gevent"),
]


@pytest.mark.parametrize("case", PICKER_TABLE)
def test_picker_table(case: Case) -> None:
    choice = unirun.choose_backend([KINDS[case.kind]()], hint=case.hint, facts=case.facts)  # type: ignore[arg-type]
    assert choice.routes == (case.mode,)
    assert choice.mode == case.mode
    assert choice.reason.endswith(".")


def test_unpicklable_cpu_task_says_why_it_stays_on_a_thread() -> None:
    choice = unirun.choose_backend([_lambda()], hint="cpu", facts=NO_CLOUDPICKLE)
    assert choice.mode == "thread"
    assert "cannot be pickled" in choice.reason
    assert "unirun[cloudpickle]" in choice.reason


# -- the "done when" on this machine ---------------------------------------------


def test_done_when_on_this_machine() -> None:
    facts = Facts(cpus=2)  # a normal 2-core CPython, whatever runs the tests
    assert unirun.choose_backend(hint="cpu", facts=facts).mode == "process"
    assert unirun.choose_backend(hint="io", facts=facts).mode == "thread"
    assert unirun.choose_backend([fetch], facts=facts).mode == "asyncio"
    mixed = unirun.choose_backend([crunch, download, fetch], facts=facts)
    assert mixed.mode == "mixed"
    assert mixed.routes == ("process", "thread", "asyncio")
    assert "Task 0 -> process" in mixed.reason


def test_defaults_from_the_real_environment() -> None:
    assert unirun.choose_backend().mode == "thread"
    assert unirun.choose_backend(hint="io").mode == "thread"
    assert unirun.choose_backend([fetch]).mode == "asyncio"


def test_no_tasks() -> None:
    choice = unirun.choose_backend([], facts=TWO_CPUS)
    assert choice.routes == ()
    assert choice.reason.startswith("No tasks")


def test_bad_hint() -> None:
    with pytest.raises(ValueError, match="hint must be"):
        unirun.choose_backend(hint="gpu")  # type: ignore[arg-type]


def test_coroutine_objects_are_closed_not_leaked() -> None:
    # filterwarnings=error turns "coroutine was never awaited" into a failure
    choice = unirun.choose_backend([fetch(1), fetch(2)], facts=TWO_CPUS)
    assert choice.routes == ("asyncio", "asyncio")


def test_large_mixed_batch_counts_tasks() -> None:
    choice = unirun.choose_backend([download] * 6 + [crunch], facts=TWO_CPUS)
    assert choice.mode == "mixed"
    assert "6 tasks -> thread" in choice.reason
    assert "Task 6 -> process" in choice.reason


# -- measurement: figures in, decision out (pure) -----------------------------------------

CPU_50MS = Measurement(cpu_seconds=0.05, wall_seconds=0.05)
SLEEP_50MS = Measurement(cpu_seconds=0.0005, wall_seconds=0.05)
TINY = Measurement(cpu_seconds=2e-6, wall_seconds=2e-6, samples=1)
HUGE_PAYLOAD = Measurement(cpu_seconds=1e-3, wall_seconds=1e-3, payload_bytes=100_000_000)


@pytest.mark.parametrize(
    ("measured", "batch", "facts", "mode"),
    [
        pytest.param(CPU_50MS, 100, TWO_CPUS, "process", id="cpu 50ms x100 -> process"),
        pytest.param(CPU_50MS, 2, TWO_CPUS, "thread", id="cpu 50ms x2: start-up eats it"),
        pytest.param(CPU_50MS, 100, ONE_CPU, "thread", id="cpu 50ms x100, 1 CPU: no process"),
        pytest.param(SLEEP_50MS, 100, TWO_CPUS, "thread", id="sleep 50ms x100 -> thread"),
        pytest.param(TINY, 10_000, TWO_CPUS, "serial", id="tiny x10000 -> serial"),
        pytest.param(HUGE_PAYLOAD, 100, TWO_CPUS, "thread", id="100MB payload: pickling eats it"),
        pytest.param(CPU_50MS, None, TWO_CPUS, "process", id="cpu 50ms x unknown -> process"),
        pytest.param(CPU_50MS, 100, GIL_OFF, "thread", id="cpu 50ms x100, GIL off -> thread"),
    ],
)
def test_measured_decisions(
    measured: Measurement, batch: int | None, facts: Facts, mode: str
) -> None:
    figures = Measurement(
        measured.cpu_seconds,
        measured.wall_seconds,
        measured.samples,
        measured.payload_bytes,
        remaining=batch,
    )
    choice = unirun.choose_backend([spin, spin], measure=figures, facts=facts)
    assert choice.mode == mode, choice.reason
    assert "measured 1 task on a thread" in choice.reason
    assert "estimated for" in choice.reason


def test_measured_unpicklable_task_never_goes_to_processes() -> None:
    choice = unirun.choose_backend(
        [_lambda()] * 3,
        measure=Measurement(0.05, 0.05, remaining=100),
        facts=NO_CLOUDPICKLE,
    )
    assert choice.mode != "process"


def test_estimate_leaves_out_process_when_it_cannot_run() -> None:
    task = TaskFacts("sync", None, pickles=False)
    assert set(estimate(CPU_50MS, task, TWO_CPUS)) == {"serial", "thread"}
    assert set(estimate(CPU_50MS, TaskFacts("sync"), ONE_CPU)) == {"serial", "thread"}


def test_hinted_and_async_tasks_are_not_measured() -> None:
    choice = unirun.choose_backend([crunch, fetch], measure=SLEEP_50MS, facts=TWO_CPUS)
    assert choice.routes == ("process", "asyncio")


# -- measurement: real tasks on a thread ---------------------------------------------------


def test_measurement_tells_cpu_bound_from_io_bound() -> None:
    cpu = unirun.choose_backend([functools.partial(spin, 1_000_000)] * 200, measure=True)
    io = unirun.choose_backend([functools.partial(nap, 0.05)] * 200, measure=True)
    assert cpu.mode == "process", cpu.reason
    assert io.mode == "thread", io.reason
    assert "measured 1 task on a thread" in cpu.reason
    cpu_share = re.search(r"(\d+)% of it on the CPU", cpu.reason)
    io_share = re.search(r"(\d+)% of it on the CPU", io.reason)
    assert cpu_share is not None
    assert io_share is not None
    assert int(io_share.group(1)) < 20 < int(cpu_share.group(1))


def test_measurement_groups_tasks_by_function() -> None:
    tasks: list[Any] = [functools.partial(spin, 1_000_000)] * 100
    tasks += [functools.partial(nap, 0.02)] * 100
    choice = unirun.choose_backend(tasks, measure=True)
    assert choice.mode == "mixed", choice.reason
    assert set(choice.routes[:100]) == {"process"}  # type: ignore[index]
    assert set(choice.routes[100:]) == {"thread"}  # type: ignore[index]


def test_function_key_sees_through_wrappers_and_lambdas() -> None:
    assert function_key(functools.partial(spin, 1)) is function_key(unirun.task(spin, 2))
    assert function_key(_lambda()) is function_key(_lambda())  # same code object
    assert function_key(spin) is not function_key(nap)


def test_pickles_by_reference() -> None:
    assert pickles_by_reference(spin)
    assert pickles_by_reference(functools.partial(spin, 3))
    assert not pickles_by_reference(_lambda())
    assert not pickles_by_reference(unirun.task(_lambda()))


# -- docs/choosing.md shows the table the code uses ----------------------------------------

DOCS = Path(__file__).resolve().parent.parent / "docs" / "choosing.md"

# An environment and task that satisfy each condition of the table, for checking route().
EXAMPLES: dict[str, tuple[Facts, dict[str, Any]]] = {
    "always": (TWO_CPUS, {}),
    "one CPU": (ONE_CPU, {}),
    "GIL off": (GIL_OFF, {}),
    "does not pickle": (TWO_CPUS, {"pickles": False}),
    "gevent patched": (PATCHED, {}),
    "not measured": (TWO_CPUS, {}),
    "measured: processes pay off": (
        TWO_CPUS,
        {"measured": Measurement(0.05, 0.05, remaining=100)},
    ),
    "measured: serial is fastest": (
        TWO_CPUS,
        {"measured": Measurement(2e-6, 2e-6, remaining=1000)},
    ),
}
# the catch-all after the measured rows: a measured task that mostly waits
LAST_ROW_EXAMPLE = {"measured": Measurement(0.0005, 0.05, remaining=100)}


def _docs_rows() -> list[list[str]]:
    text = DOCS.read_text(encoding="utf-8")
    start = text.index("<!-- rules:start -->")
    end = text.index("<!-- rules:end -->")
    rows = []
    for line in text[start:end].splitlines():
        if not line.startswith("|") or set(line) <= set("|- :"):
            continue
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if cells[0] == "#":
            continue
        rows.append(cells)
    return rows


def test_docs_table_is_the_code_table() -> None:
    rows = _docs_rows()
    expected = [
        [str(i), r.kind, r.hint, r.when, r.mode, r.why] for i, r in enumerate(RULES, start=1)
    ]
    assert rows == expected


def _hints(column: str) -> list[str | None]:
    table: dict[str, list[str | None]] = {
        "any": ["cpu", "io", None],
        "io or none": ["io", None],
        "none": [None],
        "cpu": ["cpu"],
        "io": ["io"],
    }
    return table[column]


@pytest.mark.parametrize(
    "row", _docs_rows() if DOCS.exists() else [], ids=lambda r: f"row {r[0]}: {r[1]} {r[2]} {r[3]}"
)
def test_each_docs_row_is_what_route_does(row: list[str]) -> None:
    number, kind, hint_column, when, mode, why = row
    assert when in CONDITIONS
    facts, extra = EXAMPLES[when]
    if when == "always" and kind == "sync" and hint_column == "none":
        extra = LAST_ROW_EXAMPLE
    for hint in _hints(hint_column):
        task = TaskFacts(kind, hint, **extra)  # type: ignore[arg-type]
        got_mode, got_why = decide(task, facts)
        assert (got_mode, got_why.split(" (measured")[0]) == (mode, why), (number, hint)
