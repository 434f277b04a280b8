"""Soak: Ctrl-C, many times over, on every in-machine mode (FAULTS L7).

Each run is a fresh interpreter of its own session (``tests/faults/harness.py``) that
starts a batch whose tasks block forever, prints ``READY`` and the pids of its child
processes once the workers are busy, and gets SIGINT on its whole process group. A run
passes when the interpreter exits on a bare ``KeyboardInterrupt`` (status -SIGINT, one
traceback whose last line is ``KeyboardInterrupt``, no exception group) less than 2 s
after the signal, and every child process it had is gone within 5 s (no orphan).

    python benchmarks/soak_sigint.py                          # 100 runs per mode
    python benchmarks/soak_sigint.py --runs 10 --modes thread,process

Modes: serial, thread, process, asyncio, gevent (not patched; skipped without gevent).
Prints one line of figures per mode (the time from the signal to the exit: mean, p99,
max); exits 1 when a run failed. ``tests/faults/test_load.py`` runs 3 per mode as a slow
test.
"""

from __future__ import annotations

import argparse
import importlib.util
import signal
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.faults.harness import Finished, run_script, wait_gone  # noqa: E402

BOUND = 2.0  # seconds from the signal to the exit

#: ``ready()`` prints READY and the script's child pids; ``d`` is where tasks say they run.
#: Python leaves SIGINT ignored when it inherits it so (a background job of a
#: non-interactive shell: ``nohup ... &``, some cron and CI set-ups), and the run would
#: never end: the script installs Python's own handler first.
PRELUDE = """
import os, pathlib, signal, sys, tempfile, threading, time, warnings
signal.signal(signal.SIGINT, signal.default_int_handler)
import psutil, unirun
d = pathlib.Path(tempfile.mkdtemp())
def ready():
    pids = [str(c.pid) for c in psutil.Process().children(recursive=True)]
    print("READY", *pids, flush=True)
def announce(n):
    while len(list(d.iterdir())) < n:
        time.sleep(0.01)
    ready()
"""

SCRIPTS = {
    "serial": """
gate = threading.Event()
def work(i):
    if i == 0:
        ready()
    gate.wait()
unirun.run_all([unirun.task(work, i) for i in range(3)], mode="serial")
""",
    "thread": """
gate = threading.Event()
def work(i):
    (d / str(i)).touch()
    gate.wait()
threading.Thread(target=announce, args=(2,), daemon=True).start()
unirun.run_all([unirun.task(work, i) for i in range(4)], mode="thread", max_workers=2)
""",
    "process": """
from tests.faults.test_exit_faults import block_in_worker
threading.Thread(target=announce, args=(2,), daemon=True).start()
unirun.run_all([unirun.task(block_in_worker, str(d), i) for i in range(4)], mode="process",
               max_workers=2)
""",
    "asyncio": """
import asyncio
async def work(i):
    (d / str(i)).touch()
    await asyncio.Event().wait()
threading.Thread(target=announce, args=(4,), daemon=True).start()
unirun.run_all([unirun.task(work, i) for i in range(4)], mode="asyncio", max_workers=8)
""",
    "gevent": """
import gevent
warnings.simplefilter("ignore", RuntimeWarning)  # not patched: unirun warns once
def work(i):
    (d / str(i)).touch()
    gevent.sleep(3600)
threading.Thread(target=announce, args=(4,), daemon=True).start()
unirun.run_all([unirun.task(work, i) for i in range(4)], mode="gevent", max_workers=8)
""",
}

MODES = list(SCRIPTS)


def available(mode: str) -> bool:
    return mode != "gevent" or importlib.util.find_spec("gevent") is not None


def check(done: Finished) -> str | None:
    """Why the run failed, or None."""
    if done.returncode != -signal.SIGINT:
        return f"exit status {done.returncode}: {done.stderr[-3000:]}"
    lines = done.stderr.rstrip().splitlines()
    if done.stderr.count("Traceback") != 1 or not lines or lines[-1] != "KeyboardInterrupt":
        return f"not one bare KeyboardInterrupt: {done.stderr[-300:]!r}"
    if "ExceptionGroup" in done.stderr:
        return "a KeyboardInterrupt inside a group"
    if done.elapsed >= BOUND:
        return f"exit {done.elapsed:.2f} s after the signal"
    pids = [int(p) for p in done.stdout.split("READY", 1)[1].split()]
    orphans = [pid for pid in pids if not wait_gone(pid, timeout=5)]
    if orphans:
        return f"orphan processes {orphans}"
    return None


def soak(mode: str, runs: int) -> dict[str, object]:
    """SIGINT ``runs`` fresh interpreters running ``mode``; the figures and the failures."""
    elapsed: list[float] = []
    failures: list[str] = []
    for _ in range(runs):
        try:
            # past 50 s the script's faulthandler prints every thread's stack and exits
            done = run_script(PRELUDE + SCRIPTS[mode], signal_after_ready=signal.SIGINT, timeout=60)
        except subprocess.TimeoutExpired as exc:  # the harness killed the group
            elapsed.append(exc.timeout)
            failures.append(f"no exit {exc.timeout:.0f} s after the signal")
            continue
        elapsed.append(done.elapsed)
        why = check(done)
        if why is not None:
            failures.append(why)
    elapsed.sort()
    return {
        "mode": mode,
        "runs": runs,
        "ok": runs - len(failures),
        "mean_s": statistics.fmean(elapsed),
        "p99_s": elapsed[min(len(elapsed) - 1, int(0.99 * len(elapsed)))],
        "max_s": elapsed[-1],
        "failures": failures,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100, help="runs per mode (default 100)")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated modes")
    args = parser.parse_args(argv)
    status = 0
    for mode in args.modes.split(","):
        if not available(mode):
            print(f"mode={mode} skipped: gevent is not installed")
            continue
        f = soak(mode, args.runs)
        failures = f["failures"]
        assert isinstance(failures, list)
        print(
            f"mode={mode} runs={f['runs']} ok={f['ok']} signal-to-exit "
            f"mean={f['mean_s']:.3f}s p99={f['p99_s']:.3f}s max={f['max_s']:.3f}s "
            f"(gate < {BOUND:.0f} s) {'ok' if not failures else f'FAILED {len(failures)}'}",
            flush=True,
        )
        for why in failures[:5]:
            print(f"  failed: {why}", flush=True)
        if failures:
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
