"""Faults around thread-based modes: Ctrl-C, interpreter exit, nesting, references."""

from __future__ import annotations

import signal
import threading
from typing import Any

import pytest

import unirun
from tests.faults.harness import run_script

CTRL_C = """
import threading, unirun
gate = threading.Event()
def block():
    gate.wait()
def ready():
    print("READY", flush=True)
    gate.wait()
unirun.run_all([ready] + [block] * 3, mode={mode!r})
"""


@pytest.mark.parametrize("mode", ["thread", "serial"])
def test_ctrl_c_while_tasks_block(mode: str) -> None:
    """SIGINT to the group: a bare KeyboardInterrupt, and the interpreter exits at once
    although the worker threads are still blocked (the stdlib pool would wait forever)."""
    done = run_script(CTRL_C.format(mode=mode), signal_after_ready=signal.SIGINT, timeout=30)
    assert done.returncode != 0
    assert done.stderr.count("KeyboardInterrupt") == 1, done.stderr
    assert done.elapsed < 5


def test_interpreter_exit_with_an_abandoned_task() -> None:
    code = """
    import threading, unirun
    gate = threading.Event()
    out = unirun.run_all([gate.wait, lambda: 1], mode="thread", task_timeout=0.2,
                         return_exceptions=True)
    print(type(out[0]).__name__, out[0].action, out[1])
    """
    done = run_script(code, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["TaskTimeoutError", "abandoned", "1"]
    assert done.stderr == ""


def test_interpreter_exit_with_warm_backends_is_quiet() -> None:
    code = """
    import unirun
    print(unirun.run_all([lambda: 1], mode="thread"), unirun.run_all([lambda: 2], mode="serial"))
    """
    done = run_script(code, timeout=30)
    assert done.returncode == 0
    assert done.stdout.strip() == "[1] [2]"
    assert done.stderr == ""


def _inner(i: int) -> list[int]:
    return unirun.run_all([lambda j=j: i * 10 + j for j in range(2)], mode="thread")


def test_nested_run_all_does_not_starve() -> None:
    """Outer tasks that wait for inner ones on the same mode must not deadlock."""
    out = unirun.run_all([lambda i=i: _inner(i) for i in range(2)], mode="thread", max_workers=2)
    assert out == [[0, 1], [10, 11]]


def test_deep_nesting_runs_serially() -> None:
    def depth3() -> str:
        def level2() -> list[str]:
            return unirun.run_all([lambda: threading.current_thread().name], mode="thread")

        return unirun.run_all([level2], mode="thread")[0][0]

    names = unirun.run_all([depth3, depth3], mode="thread", max_workers=2)
    assert len(names) == 2


def test_keyboard_interrupt_inside_a_thread_task_is_its_outcome() -> None:
    def interrupt() -> None:
        raise KeyboardInterrupt

    out: list[Any] = unirun.run_all([interrupt, lambda: 2], mode="thread", return_exceptions=True)
    assert isinstance(out[0], KeyboardInterrupt)
    assert out[1] == 2
