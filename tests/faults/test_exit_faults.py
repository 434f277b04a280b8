"""#38 SIGTERM to the parent, and #40 interpreter exit with an executor never shut down,
on the modes ``test_environment_faults.py`` and ``test_process_faults.py`` leave out.

Each scenario runs in a fresh interpreter of its own session (``tests/faults/harness.py``):
a signal or an interpreter exit would poison the test process. gevent's monkey-patching
happens only inside those interpreters.
"""

from __future__ import annotations

import functools
import signal
import threading
import time
from pathlib import Path

import pytest

from tests.faults.harness import Finished, run_script, wait_gone

# -- #38 SIGTERM to the parent ------------------------------------------------------------

#: The script's head. With ``handler``, a SIGTERM handler that raises ``SystemExit`` (what
#: a service that wants a graceful stop installs); without, Python's default action ends
#: the process at once. ``terminate(n)``, run in a real thread, waits until ``n`` tasks
#: run, prints the pids of the script's child processes and the (system-wide) monotonic
#: clock, then SIGTERMs the parent only, as a service manager does.
SIGTERM_HEAD = """
import os, pathlib, signal, sys, tempfile, threading, time
{patch}
import psutil, unirun
if {handler}:
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))
d = pathlib.Path(tempfile.mkdtemp())
OPTIONS = {{"max_workers": 2}}
real_sleep = time.sleep
def terminate(n):
    while len(list(d.iterdir())) < n:
        real_sleep(0.01)
    real_sleep(0.1)  # the caller is back in its wait
    pids = [str(c.pid) for c in psutil.Process().children(recursive=True)]
    print("PIDS", *pids, flush=True)
    print("SENT", time.monotonic(), flush=True)
    os.kill(os.getpid(), signal.SIGTERM)
"""

#: After the body (which defines the task ``work(path, i)`` and ``EX``, a mode or a
#: backend, may replace ``OPTIONS`` and starts ``terminate``), the run, whose ``finally``
#: says whether the caller unwound.
SIGTERM_RUN = """
try:
    unirun.run_all([unirun.task(work, str(d), i) for i in range(4)], mode=EX, **OPTIONS)
finally:
    print("FINALLY", flush=True)
"""

SIGTERM_BODIES = {
    "thread": """
EX = "thread"
gate = threading.Event()
def work(path, i):
    (pathlib.Path(path) / str(i)).touch()
    gate.wait()
threading.Thread(target=terminate, args=(2,), daemon=True).start()
""",
    "process": """
EX = "process"
from tests.faults.test_exit_faults import block_in_worker as work
threading.Thread(target=terminate, args=(2,), daemon=True).start()
""",
    "asyncio": """
EX = "asyncio"
import asyncio
async def work(path, i):
    (pathlib.Path(path) / str(i)).touch()
    await asyncio.Event().wait()
threading.Thread(target=terminate, args=(2,), daemon=True).start()
""",
    "gevent": """
EX = "gevent"
import gevent
def work(path, i):
    (pathlib.Path(path) / str(i)).touch()
    gevent.sleep(3600)
threading.Thread(target=terminate, args=(2,), daemon=True).start()
""",
    "gevent-patched": """
EX = "gevent"
from gevent import monkey
real_sleep = monkey.get_original("time", "sleep")
def work(path, i):
    (pathlib.Path(path) / str(i)).touch()
    time.sleep(3600)
# a real thread, which never runs on the hub
monkey.get_original("_thread", "start_new_thread")(terminate, (2,))
""",
    "dask": """
def work(path, i):
    import pathlib, time
    (pathlib.Path(path) / str(i)).touch()
    time.sleep(3600)
EX = unirun.DaskBackend(max_workers=2)  # its own LocalCluster
EX.submit(abs, 1).result()
OPTIONS = {}
threading.Thread(target=terminate, args=(2,), daemon=True).start()
""",
}


def _sigterm_script(scenario: str, handler: bool) -> str:
    patch = {
        "gevent": "import warnings; warnings.simplefilter('ignore', RuntimeWarning)",
        "gevent-patched": "from gevent import monkey; monkey.patch_all()",
    }.get(scenario, "")
    return (
        SIGTERM_HEAD.format(patch=patch, handler=handler) + SIGTERM_BODIES[scenario] + SIGTERM_RUN
    )


def block_in_worker(path: str, i: int) -> None:
    """A process task that says it runs (a file in ``path``), then blocks."""
    (Path(path) / str(i)).touch()
    threading.Event().wait()


def _needs(scenario: str) -> None:
    if scenario.startswith("gevent"):
        pytest.importorskip("gevent")
    if scenario == "dask":
        pytest.importorskip("distributed")


@pytest.mark.timeout(90)
@pytest.mark.parametrize(
    ("scenario", "handler"),
    [
        *[(m, False) for m in ("thread", "asyncio", "gevent", "gevent-patched", "dask")],
        *[(m, True) for m in ("thread", "process", "asyncio", "gevent", "gevent-patched", "dask")],
    ],
    ids=lambda v: {False: "default", True: "sys-exit-handler"}.get(v, v),
)
def test_sigterm_to_the_parent(scenario: str, handler: bool) -> None:
    """SIGTERM to the parent alone while every worker is busy (process mode with Python's
    default action: ``test_environment_faults.py``).

    Default action: the process ends at once (unirun installs no handler, as a library
    should not) and its child processes notice and exit. With a handler that raises
    ``SystemExit`` the stop is graceful: the run stops, the caller's ``finally`` runs, the
    exit status is the handler's, and no child process is left. Dask: its nanny gives a
    worker still inside a task 4 s before killing it (the exit takes about 5 s), and Dask
    logs warnings of its own (with the default action the resource tracker also reports
    the semaphores of the killed parent's cluster), so only tracebacks are looked for on
    its stderr.
    """
    _needs(scenario)
    done = run_script(_sigterm_script(scenario, handler), timeout=60)
    ended = time.monotonic()
    assert "SENT" in done.stdout, (done.stdout, done.stderr)
    if handler:
        assert done.returncode == 143, (done.returncode, done.stderr)
        assert "FINALLY" in done.stdout, done.stdout
    else:
        assert done.returncode == -signal.SIGTERM, (done.returncode, done.stderr)
        assert "FINALLY" not in done.stdout, done.stdout
    if scenario != "dask":
        assert done.stderr == "", done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    sent = float(done.stdout.split("SENT", 1)[1].split()[0])
    assert ended - sent < (10 if scenario == "dask" else 5), ended - sent
    pids = [int(p) for p in done.stdout.split("PIDS", 1)[1].splitlines()[0].split()]
    if scenario in ("process", "dask"):
        assert pids, "the script saw no worker process"
    for pid in pids:
        assert wait_gone(pid, timeout=5), f"child {pid} outlived a SIGTERMed parent"


# -- #40 interpreter exit with an executor never shut down ---------------------------------

#: Task 0 is quick; task 1 is running when the script ends (the script waits until it
#: says so), task 2 is queued behind it (``max_workers=1``). Each task prints ``started
#: i`` and, in its ``finally``, ``finished i`` or ``cancelled i``. ``PIDS``: the script's
#: child processes (Dask's nanny and worker).
EXIT_HEAD = """
import os, pathlib, sys, tempfile, time, warnings
{patch}
import psutil, unirun
d = pathlib.Path(tempfile.mkdtemp())
"""

EXIT_TASK = """
def work(path, i, seconds):
    import pathlib, sys, time
    sys.stdout.write("started %d\\n" % i)  # one write: lines from threads do not mix
    (pathlib.Path(path) / str(i)).touch()
    finished = False
    try:
        {sleep}(seconds)
        finished = True
        return i
    finally:
        sys.stdout.write("%s %d\\n" % ("finished" if finished else "cancelled", i))
"""

EXIT_ASYNC_TASK = """
import asyncio
async def work(path, i, seconds):
    sys.stdout.write("started %d\\n" % i)  # one write: lines from threads do not mix
    (pathlib.Path(path) / str(i)).touch()
    finished = False
    try:
        await asyncio.sleep(seconds)
        finished = True
        return i
    finally:
        sys.stdout.write("%s %d\\n" % ("finished" if finished else "cancelled", i))
"""

EXIT_RUN = """
ex = unirun.{cls}(max_workers=1)
first = ex.submit(work, str(d), 0, 0)
later = [ex.submit(work, str(d), i, 1.0) for i in (1, 2)]
sys.stdout.write("result %d\\n" % first.result(timeout=30))
while not (d / "1").exists():
    time.sleep(0.01)
pids = [str(c.pid) for c in psutil.Process().children(recursive=True)]
sys.stdout.write("PIDS %s\\n" % " ".join(pids))
# the end: no shutdown(), no with; task 1 runs, task 2 waits
"""

EXIT_SCENARIOS = ["thread", "asyncio", "gevent", "gevent-patched", "dask"]


@functools.cache
def _exit_run(scenario: str) -> Finished:
    """The #40 script for ``scenario``, run once for both tests below."""
    patch = {
        "gevent": "warnings.simplefilter('ignore', RuntimeWarning)  # not patched: warns",
        "gevent-patched": "from gevent import monkey; monkey.patch_all()",
    }.get(scenario, "")
    if scenario == "asyncio":
        task = EXIT_ASYNC_TASK
    else:
        sleep = "__import__('gevent').sleep" if scenario == "gevent" else "time.sleep"
        task = EXIT_TASK.format(sleep=sleep)
    cls = {"thread": "ThreadBackend", "asyncio": "AsyncioBackend", "dask": "DaskBackend"}.get(
        scenario, "GeventBackend"
    )
    return run_script(EXIT_HEAD.format(patch=patch) + task + EXIT_RUN.format(cls=cls), timeout=30)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("scenario", EXIT_SCENARIOS)
def test_interpreter_exit_with_an_executor_never_shut_down(scenario: str) -> None:
    """No hang (the run is bounded by the subprocess timeout of 30 s), exit status 0, the
    awaited result on stdout, nothing on stderr: no "Exception ignored", no leaked
    semaphore warning, no log of a cluster closed under running tasks; no child process
    left (process mode: ``test_process_faults.py``)."""
    _needs(scenario)
    done = _exit_run(scenario)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", done.stderr
    lines = done.stdout.splitlines()
    assert "result 0" in lines, done.stdout
    pids = [int(p) for p in done.stdout.split("PIDS", 1)[1].splitlines()[0].split()]
    if scenario == "dask":
        assert pids, "the script saw no Dask process"
    for pid in pids:
        assert wait_gone(pid, timeout=5), f"child {pid} outlived the interpreter"


@pytest.mark.timeout(90)
@pytest.mark.parametrize(
    "scenario",
    [
        "thread",
        "asyncio",
        "gevent",
        "gevent-patched",
        "dask",
    ],
)
def test_interpreter_exit_finishes_or_cancels_running_tasks(scenario: str) -> None:
    """#40's "atexit finishes or cancels deterministically": every task that started ends,
    by finishing or by a cancellation its ``finally`` sees; thread and dask finish them all
    (queued ones too), as ``concurrent.futures`` does at exit."""
    _needs(scenario)
    done = _exit_run(scenario)
    lines = done.stdout.splitlines()
    words = [line.split() for line in lines]
    started = {w[1] for w in words if w[:1] == ["started"]}
    ended = {w[1] for w in words if w[:1] in (["finished"], ["cancelled"])}
    assert "1" in started, done.stdout  # the script waited for it
    assert started == ended, f"started {sorted(started)}, ended {sorted(ended)}: {done.stdout}"
    if scenario in ("thread", "dask"):
        assert {f"finished {i}" for i in range(3)} <= set(lines), done.stdout


ABANDONED_AT_EXIT = """
import time, unirun

async def stubborn():
    time.sleep(30)  # blocks the loop: the timeout abandons it

backend = unirun.AsyncioBackend()  # never shut down
out = backend.run_all([stubborn], task_timeout=0.3, return_exceptions=True)
print(type(out[0]).__name__, out[0].action, flush=True)
"""


def test_interpreter_exit_does_not_wait_for_an_abandoned_coroutine() -> None:
    """#40 with #15: the exit hook finishes submitted work, but as ThreadBackend does with an
    abandoned thread, it does not wait for a coroutine abandoned while blocking the loop."""
    start = time.monotonic()
    done = run_script(ABANDONED_AT_EXIT, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "TaskTimeoutError abandoned" in done.stdout
    assert time.monotonic() - start < 15  # not the 30 s the coroutine blocks
