"""Batch workloads: tiny tasks, CPU-bound tasks, big payloads, cold and warm calls, import."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from .measure import Metrics, Params, check, memory, optional, require
from .pools import ASYNC_RUNNERS, RUNNERS, Runner
from .tasks import atiny, make_payloads, nbytes, nbytes_shared, spin, tiny

__all__ = ["calibrate", "cpu", "import_time", "payload", "reuse", "tiny_tasks"]

Variant = Callable[[], Metrics]


def tiny_tasks(p: Params) -> dict[str, Variant]:
    """``n`` x ``x + 1``: what is left is each pool's overhead per task."""
    n = int(p.get("n", 20_000))
    args = list(range(n))
    expected = [x + 1 for x in args]

    def variant(runner: Runner, fn: Callable[..., Any]) -> Variant:
        return lambda: runner(fn, args, expected)

    variants = {name: variant(runner, tiny) for name, runner in RUNNERS.items()}
    variants.update({name: variant(runner, atiny) for name, runner in ASYNC_RUNNERS.items()})
    return variants


def calibrate(seconds: float) -> int:
    """The :func:`~.tasks.spin` argument that takes about ``seconds`` here."""
    n = 20_000
    while True:
        start = time.perf_counter()
        spin(n)
        took = time.perf_counter() - start
        if took > 0.05:
            return max(1, int(n * seconds / took))
        n *= 4


def cpu(p: Params) -> dict[str, Variant]:
    """``n`` x ``spin(work)``; the runner passes ``work`` calibrated to ~0.2 s."""
    n, work = int(p.get("n", 16)), int(p.get("work", 0)) or calibrate(0.2)
    args = [work] * n
    expected = [spin(work)] * n

    def variant(name: str) -> Variant:
        # cold only: the target is the speed-up of a one-shot call, pool start included
        return lambda: RUNNERS[name](spin, args, expected, warm=False)

    return {name: variant(name) for name in RUNNERS}


def payload(p: Params) -> dict[str, Variant]:
    """``n`` x ``mib`` MiB ``bytes`` sent to worker processes (peak tree memory too)."""
    n, mib = int(p.get("n", 64)), p.get("mib", 4.0)
    trace = bool(p.get("tracemalloc", 0))
    names = ("unirun-process", "ppe-1", "ppe-chunked", "mp-pool", "mpire")

    def variant(name: str) -> Variant:
        def run() -> Metrics:
            payloads = make_payloads(n, mib)
            expected = [len(b) for b in payloads]
            metrics: Metrics = {}
            with memory(metrics, tree=True, trace=trace):
                if name == "mpire-shared":
                    metrics.update(_mpire_shared(payloads, expected))
                elif name == "unirun-shared":
                    metrics.update(_unirun_shared(payloads, expected))
                else:
                    metrics.update(RUNNERS[name](nbytes, payloads, expected))
            # the segments' pages are in no process's PSS once their writer unmapped them
            metrics["tree_mib"] = metrics.get("tree_mib", 0.0) + metrics.pop("shm_mib", 0.0)
            return metrics

        return run

    return {name: variant(name) for name in (*names, "mpire-shared", "unirun-shared")}


def _unirun_shared(payloads: list[bytes], expected: list[int]) -> Metrics:
    """``unirun.shared``: one copy of each payload into shared memory, then references.

    Cold: the copies plus a first ``map`` on a new process pool; warm: the same ``map``
    again on the warm pool, with the same ``Shared`` objects (as mpire-shared's warm call
    reuses its pool's shared objects).
    """
    require("process")
    import unirun

    t0 = time.perf_counter()
    blobs = [unirun.shared(p) for p in payloads]
    first = unirun.map(nbytes, blobs, mode="process")
    t1 = time.perf_counter()
    second = unirun.map(nbytes, blobs, mode="process")
    t2 = time.perf_counter()
    for blob in blobs:
        blob.close()
    check(first, expected)
    check(second, expected)
    shm = sum(blob.nbytes for blob in blobs)
    return {"wall": t1 - t0, "warm": t2 - t1, "shm_mib": shm / (1 << 20)}


def _mpire_shared(payloads: list[bytes], expected: list[int]) -> Metrics:
    """mpire's ``shared_objects``: forked workers read the parent's payloads, no copy."""
    mpire = optional("mpire")
    t0 = time.perf_counter()
    pool = mpire.WorkerPool(shared_objects=payloads, keep_alive=True, start_method="fork")
    first = pool.map(nbytes_shared, range(len(payloads)))
    t1 = time.perf_counter()
    second = pool.map(nbytes_shared, range(len(payloads)))
    t2 = time.perf_counter()
    pool.terminate()
    check(first, expected)
    check(second, expected)
    return {"wall": t1 - t0, "warm": t2 - t1}


def reuse(p: Params) -> dict[str, Variant]:
    """``run_all(mode="process")`` of ``n`` tiny tasks twice in one interpreter."""
    n = int(p.get("n", 1000))
    args = list(range(n))
    expected = [x + 1 for x in args]

    def unirun_process() -> Metrics:
        require("process")
        import unirun

        tasks = [unirun.task(tiny, x) for x in args]
        t0 = time.perf_counter()
        first = unirun.run_all(tasks, mode="process")
        t1 = time.perf_counter()
        second = unirun.run_all(tasks, mode="process")
        t2 = time.perf_counter()
        check(first, expected)
        check(second, expected)
        return {"wall": t1 - t0, "warm": t2 - t1, "warm_over_cold": (t2 - t1) / (t1 - t0)}

    def raw(name: str) -> Variant:
        def run() -> Metrics:
            metrics = RUNNERS[name](tiny, args, expected)
            metrics["warm_over_cold"] = metrics["warm"] / metrics["wall"]
            return metrics

        return run

    return {"unirun-process": unirun_process, "ppe-1": raw("ppe-1"), "mp-pool": raw("mp-pool")}


_IMPORT_LINE = re.compile(r"^import time:\s*(\d+)\s*\|\s*(\d+)\s*\|( *)(\S+)\s*$")


def import_time(p: Params) -> dict[str, Variant]:
    """``python -X importtime -c "import MODULE"``: the module's cumulative time.

    Measured as an installed package is imported: from bytecode. An editable install under
    ``PYTHONDONTWRITEBYTECODE`` would otherwise compile every module from source on each
    run (about 10 ms more for unirun), so one import first writes the ``.pyc`` files.
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}

    def variant(module: str) -> Variant:
        subprocess.run([sys.executable, "-c", f"import {module}"], env=env, check=True)

        def run() -> Metrics:
            proc = subprocess.run(
                [sys.executable, "-X", "importtime", "-c", f"import {module}"],
                capture_output=True,
                text=True,
                check=True,
                env=env,
            )
            for line in proc.stderr.splitlines():
                m = _IMPORT_LINE.match(line)
                if m and m.group(4) == module and len(m.group(3)) <= 1:
                    return {"import_ms": int(m.group(2)) / 1000}
            raise RuntimeError(f"no import time for {module!r} in:\n{proc.stderr[-500:]}")

        return run

    return {"unirun": variant("unirun"), "anyio": variant("anyio")}
