"""Load and soak figures of FAULTS section 3 (L5, L7, L8, L11), at CI size.

Each scenario is a script in ``benchmarks/`` that runs the nightly size by default and
prints its figures; here each runs smaller, as a slow test, with the same checks except
wall-clock gates (timing is the nightly run's business: a shared CI box is noisy).
"""

from __future__ import annotations

import sys

import pytest

import tests.helpers  # noqa: F401  (starts the forkserver before any leak check counts)
from tests.faults.harness import benchmark_script

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads /proc (fds, statm)"
)


@pytest.mark.slow
@linux_only
@pytest.mark.timeout(120)
def test_worker_crashes_and_recoveries() -> None:
    """L5: 150 crashes (300 tasks, ``os._exit`` in every 2nd) through ProcessBackend: every
    outcome right, no zombie, fds and children flat, recovery p99 under 1 s (about 5 s in
    all here; the nightly run is ``benchmarks/soak_crashes.py``)."""
    soak = benchmark_script("soak_crashes")
    figures = soak.soak(150)
    assert soak.gates(figures, time_gate=False) == [], figures


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", ["serial", "thread", "process", "asyncio", "gevent"])
def test_repeated_sigint_runs(mode: str) -> None:
    """L7: 3 Ctrl-C runs per mode in fresh interpreters: each exits on a bare
    ``KeyboardInterrupt`` less than 2 s after the signal, leaving no child process (the
    nightly run, 100 per mode, is ``benchmarks/soak_sigint.py``)."""
    if mode == "gevent":
        pytest.importorskip("gevent")
    figures = benchmark_script("soak_sigint").soak(mode, 3)
    assert figures["failures"] == [], figures


@pytest.mark.slow
@linux_only
@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", ["thread", "asyncio"])
def test_all_failing_batch_releases_its_tracebacks(mode: str) -> None:
    """L8: 20,000 tasks that all raise, ``return_exceptions=True``, 2 rounds: once the
    outcomes are dropped no failed frame stays alive, Python allocations and RSS are flat
    (the nightly run, 100,000 tasks, is ``benchmarks/soak_errors.py``)."""
    soak = benchmark_script("soak_errors")
    figures = soak.soak(20_000, mode, rounds=2)
    assert soak.gates(figures) == [], figures


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", ["thread", "process", "asyncio"])
def test_one_executor_shared_by_ten_threads_under_load(mode: str) -> None:
    """L11: 10 threads x 100 ``run_all`` calls of 10 tasks on one executor: every call gets
    exactly its own outcomes, in order (the nightly run, 10 x 1,000, is
    ``benchmarks/soak_threads.py``)."""
    figures = benchmark_script("soak_threads").soak(10, 100, mode)
    assert figures["calls"] == 100
