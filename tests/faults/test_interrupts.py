"""#36 Ctrl-C on every mode: SIGINT to the process group while tasks block.

Each scenario runs in a fresh interpreter of its own session (``tests/faults/harness.py``)
that prints ``READY`` and the pids of its child processes once every worker is busy; the
test then sends SIGINT to the group. The caller must get one bare ``KeyboardInterrupt``
(one traceback, never inside a group), the interpreter must exit within 5 s although tasks
are still blocked, and every child process it had must be gone.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest

from tests.faults.harness import Finished, run_script, wait_gone

#: Prints READY with the script's child pids; called by a task once the batch is busy.
PRELUDE = """
import os, sys, threading, psutil
def ready(expected_children=0):
    me = psutil.Process()
    while len(me.children(recursive=True)) < expected_children:
        pass
    pids = [str(c.pid) for c in me.children(recursive=True)]
    print("READY", *pids, flush=True)
"""

SCRIPTS = {
    "thread-imap": """
import unirun
gate = threading.Event()
def work(i):
    if i == 0:
        ready()
    gate.wait()
    return i
for _ in unirun.imap(work, range(8), mode="thread", max_workers=2):
    pass
""",
    "asyncio": """
import asyncio, unirun
async def wait_forever(i):
    if i == 0:
        ready()
    await asyncio.Event().wait()
gate = threading.Event()
def blocked_sync():
    gate.wait()
unirun.run_all([unirun.task(wait_forever, i) for i in range(4)] + [blocked_sync],
               mode="asyncio", max_workers=8)
""",
    "asyncio-trio": """
import trio, unirun
async def wait_forever(i):
    if i == 0:
        ready()
    await trio.sleep_forever()
ex = unirun.AsyncioBackend(max_workers=8, backend="trio")
ex.run_all([unirun.task(wait_forever, i) for i in range(4)])
""",
    "gevent": """
import gevent, unirun
def wait_forever(i):
    if i == 0:
        ready()
    gevent.sleep(3600)
unirun.run_all([unirun.task(wait_forever, i) for i in range(4)], mode="gevent")
""",
    "gevent-patched": """
from gevent import monkey
monkey.patch_all()
import time, unirun
asleep = []
def wait_forever(i):
    asleep.append(i)
    time.sleep(3600)
def announce():
    # a real thread: it never runs on the hub. Once every task is asleep, a moment more so
    # that the last one has switched to the hub (Ctrl-C landing inside a task's own code is
    # test_ctrl_c_inside_a_running_greenlet_is_not_a_task_outcome)
    while len(asleep) < 4:
        real_sleep(0.01)
    real_sleep(0.1)
    ready()
real_sleep = monkey.get_original("time", "sleep")
monkey.get_original("_thread", "start_new_thread")(announce, ())
unirun.run_all([unirun.task(wait_forever, i) for i in range(4)], mode="gevent")
""",
    "gevent-patched-tiny": """
from gevent import monkey
monkey.patch_all()
import unirun
def tiny(j):
    return sum(range(200))
def batch(i):
    # Ctrl-C lands anywhere: in a task, in unirun's bookkeeping, in a (patched) lock
    if i == 0:
        ready()
    return unirun.run_all([unirun.task(tiny, j) for j in range(50)], mode="gevent")
for _ in unirun.imap(batch, range(10**9), mode="gevent"):
    pass
""",
    "process-imap": """
import pathlib, tempfile, time, unirun
from tests.faults.test_interrupts import block_in_worker
d = pathlib.Path(tempfile.mkdtemp())
def announce():
    while len(list(d.iterdir())) < 2:  # both workers run a task
        time.sleep(0.01)
    ready()
threading.Thread(target=announce, daemon=True).start()
for _ in unirun.imap(block_in_worker, [str(d)] * 8, mode="process", max_workers=2):
    pass
""",
}


def block_in_worker(directory: str) -> None:
    """A process task that says it runs (a file named for its pid), then blocks."""
    (Path(directory) / str(os.getpid())).touch()
    threading.Event().wait()


def _check(done: Finished, *, alone: bool = True, bound: float = 5) -> None:
    """``alone``: the caller's traceback is all there is on stderr."""
    assert done.returncode == -signal.SIGINT, (done.returncode, done.stderr)
    if alone:
        assert done.stderr.count("Traceback") == 1, done.stderr
        assert done.stderr.rstrip().splitlines()[-1] == "KeyboardInterrupt", done.stderr
    assert "ExceptionGroup" not in done.stderr, done.stderr
    assert "failed on mode" not in done.stderr, "Ctrl-C was taken for a task's failure"
    assert done.elapsed < bound, done.elapsed
    pids = [int(p) for p in done.stdout.split("READY", 1)[1].split()]
    for pid in pids:
        assert wait_gone(pid, 5), f"child {pid} outlived its parent"


@pytest.mark.parametrize("scenario", sorted(SCRIPTS))
def test_ctrl_c_during_a_run(scenario: str) -> None:
    if scenario.startswith("gevent"):
        pytest.importorskip("gevent")
    if scenario == "asyncio-trio":
        pytest.importorskip("trio")
    done = run_script(PRELUDE + SCRIPTS[scenario], signal_after_ready=signal.SIGINT, timeout=30)
    _check(done)
    # gevent-patched: the SIGINT lands in the hub, which would print a one-line report of its
    # own; while greenlets run, unirun's handler hands it to the caller without one
    assert done.stderr.count("KeyboardInterrupt") == 1, done.stderr


DASK = """
import pathlib, tempfile, time, unirun
flag = pathlib.Path(tempfile.mkdtemp()) / "started"
def work(path):
    import pathlib, time
    pathlib.Path(path).touch()
    time.sleep(3600)
def announce():
    while not flag.exists():
        time.sleep(0.01)
    ready()
ex = unirun.DaskBackend()
ex.submit(abs, 1).result()
threading.Thread(target=announce, daemon=True).start()
ex.run_all([unirun.task(work, str(flag)) for i in range(2)])
"""


@pytest.mark.timeout(90)
def test_ctrl_c_during_a_dask_run_on_its_own_cluster() -> None:
    """The caller gets a bare KeyboardInterrupt and the cluster's processes are gone.

    Dask's worker processes are in the caller's process group and get the SIGINT too (as
    from a terminal); they log warnings of their own, which unirun does not hide. Exit
    takes about 4 s: closing the cluster, Dask's nanny gives a worker still inside a task
    4 s before it kills it.
    """
    pytest.importorskip("distributed")
    done = run_script(PRELUDE + DASK, signal_after_ready=signal.SIGINT, timeout=60)
    _check(done, alone=False, bound=10)
    first = done.stderr.split("Traceback", 2)[1]
    assert "run_all" in first, done.stderr


SPIN = """
{patch}
import time, unirun
def spin(i):
    if i == 0:
        ready()
        end = time.monotonic() + 5
        while time.monotonic() < end:  # the signal lands in this greenlet's own code
            pass
    return i
print("RESULT", unirun.run_all([unirun.task(spin, i) for i in range(3)], mode="gevent",
                               return_exceptions=True), flush=True)
"""


@pytest.mark.parametrize("patched", [True, False], ids=["patched", "not-patched"])
def test_ctrl_c_inside_a_running_greenlet_is_not_a_task_outcome(patched: bool) -> None:
    """Patched, the SIGINT lands in the spinning task's own code, on the main thread."""
    pytest.importorskip("gevent")
    patch = "from gevent import monkey; monkey.patch_all()" if patched else ""
    code = SPIN.format(patch=patch)
    done = run_script(PRELUDE + code, signal_after_ready=signal.SIGINT, timeout=30)
    assert "RESULT" not in done.stdout, done.stdout
    # not patched, the spinning task blocks the hub: unirun logs that it abandons it
    _check(done, alone=patched)
    assert done.stderr.count("Traceback") == 1, done.stderr


CAUGHT = """
from gevent import monkey; monkey.patch_all()
import signal, time, gevent, unirun
def own():
    raise KeyboardInterrupt("mine")
def one():
    return 1
def spin(i):
    if i == 0:
        ready()
    for _ in range(500):  # 10 s of Python code in 20 ms slices: the signal lands in one
        end = time.monotonic() + 0.02
        while time.monotonic() < end:
            pass
        time.sleep(0)  # a switch (a kill lands there if Ctrl-C hit unirun's own code)
    return i
print("OWN", unirun.run_all([own, one], mode="gevent", return_exceptions=True), flush=True)
try:
    unirun.run_all([unirun.task(spin, i) for i in range(2)], mode="gevent")
except KeyboardInterrupt:
    print("INTERRUPTED", flush=True)
gevent.sleep(0.1)  # the hub runs: the interrupted task is killed, it does not spin on
print("DEFAULT", signal.getsignal(signal.SIGINT) is signal.default_int_handler, flush=True)
print("AFTER", unirun.run_all([own, one], mode="gevent", return_exceptions=True), flush=True)
"""


def test_ctrl_c_caught_in_a_patched_program() -> None:
    """The program catches Ctrl-C and goes on: the interrupted task is killed, SIGINT's
    handler is Python's default again, and a task's own KeyboardInterrupt is still its
    outcome before and after."""
    pytest.importorskip("gevent")
    done = run_script(PRELUDE + CAUGHT, signal_after_ready=signal.SIGINT, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", done.stderr
    lines = done.stdout.splitlines()
    own = "[KeyboardInterrupt('mine'), 1]"
    assert lines[0] == f"OWN {own}", done.stdout
    assert lines[2:] == ["INTERRUPTED", "DEFAULT True", f"AFTER {own}"], done.stdout
    assert done.elapsed < 5, done.elapsed
