"""Run a script in a fresh interpreter of its own session, for faults that could poison
the test process (signals, interpreter exit)."""

from __future__ import annotations

import functools
import importlib.util
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Finished:
    returncode: int
    stdout: str
    stderr: str
    elapsed: float  # from the signal (or the start) to the exit


def run_script(
    code: str, *, signal_after_ready: int | None = None, timeout: float = 60
) -> Finished:
    """Run ``code``; if ``signal_after_ready``, send it to the process group once the
    script prints a line starting with ``READY``."""
    # Python's own Ctrl-C handler, also when the tests run as a background job of a
    # non-interactive shell, whose children inherit SIGINT ignored
    script = (
        "import faulthandler, signal\n"
        "faulthandler.dump_traceback_later(50, exit=True)\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
    )
    script += textwrap.dedent(code)
    # The repository root first (for ``tests.*``), then the caller's own path: a worktree's
    # src/ given there must win over an editable install of another checkout.
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env=env,
        cwd=ROOT,
    )
    start = time.monotonic()
    lines: list[str] = []
    try:
        if signal_after_ready is not None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(line)
                if line.startswith("READY"):
                    break
            else:
                proc.wait(timeout)
                assert proc.stderr is not None
                raise AssertionError(
                    f"the script ended before READY: {''.join(lines)}{proc.stderr.read()}"
                )
            start = time.monotonic()
            os.killpg(proc.pid, signal_after_ready)
        out, err = proc.communicate(timeout=timeout)
    except BaseException:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return Finished(proc.returncode, "".join(lines) + out, err, time.monotonic() - start)


def wait_gone(pid: int, timeout: float = 10) -> bool:
    """Whether ``pid`` ends within ``timeout``; a zombie counts as ended (an orphan's is
    reaped by init, which in a container may never do it)."""
    import psutil

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.01)
    return False


@functools.cache
def benchmark_script(name: str) -> ModuleType:
    """``benchmarks/<name>.py``, imported (a script, not a package module), for the tests
    that run a soak or load script at a CI size."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
