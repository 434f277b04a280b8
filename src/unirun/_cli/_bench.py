"""``unirun bench``: the seed's claims, measured on the user's machine.

For each mode: make its backend with ``unirun.executor(mode)``, start its workers with one
trivial task (start-up is reported apart, not in the timings), run every workload on it,
shut it down. Then run each workload on ``mode="auto"`` and record what the picker chose
and why. A mode whose backend cannot load (its package or module is missing) is skipped
with a note; a workload a backend cannot run (async tasks on gevent) is reported with the
backend's own reason. Serial always runs: it is the baseline of the speed-up column.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import unirun
from unirun._choose import available_cpus
from unirun._errors import BackendUnavailableError
from unirun._registry import check_mode, valid_modes
from unirun._warm import WARM

from . import UsageError
from ._workloads import Workload, make_workloads

__all__ = ["run_bench"]

_ORDER = ["serial", "thread", "process", "asyncio", "gevent", "dask"]


@dataclass
class Row:
    """One measurement (or the reason there is none)."""

    workload: str
    mode: str
    status: str  # "ok", "n/a" (the backend cannot take such tasks), "skipped" or "error"
    wall_s: float | None = None
    speedup: float | None = None
    note: str = ""
    auto_mode: str | None = None
    auto_reason: str | None = None


def _modes(selected: str | None) -> tuple[list[str], bool]:
    every = [m for m in valid_modes() if m != "auto"]
    ordered = [m for m in _ORDER if m in every] + [m for m in every if m not in _ORDER]
    if not selected:
        return ordered, True
    wanted = [m.strip() for m in selected.split(",") if m.strip()]
    for mode in wanted:
        try:
            check_mode(mode)
        except (TypeError, ValueError) as exc:
            raise UsageError(str(exc)) from None
    modes = [m for m in wanted if m != "auto"]
    if "serial" not in modes:
        modes.insert(0, "serial")
    return list(dict.fromkeys(modes)), "auto" in wanted


def _run(workload: Workload, mode: str | unirun.Executor, timeout: float) -> list[Any]:
    if workload.name == "tiny":
        return unirun.map(workload.fn, workload.args, mode=mode, timeout=timeout)
    return unirun.run_all(workload.tasks(), mode=mode, timeout=timeout)


def _short(text: str) -> str:
    """The first sentence of a message: enough for a table cell."""
    first = text.strip().splitlines()[0] if text.strip() else ""
    head, dot, _ = first.partition(". ")
    return head + "." if dot else first


def _measure(
    workload: Workload, mode: str | unirun.Executor, timeout: float, repeats: int
) -> tuple[str, float | None, str]:
    """Time one workload, best of ``repeats``; return (status, seconds or None, note)."""
    notes: list[str] = []
    best: float | None = None
    for _ in range(repeats):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            start = time.perf_counter()
            try:
                results = _run(workload, mode, timeout)
            except (KeyboardInterrupt, SystemExit):
                raise
            except TypeError as exc:
                # Raised before anything runs: the backend cannot take this kind of task.
                return "n/a", None, _short(f"{type(exc).__name__}: {exc}")
            except BaseException as exc:
                return "error", None, _short(f"{type(exc).__name__}: {exc}")
            wall = time.perf_counter() - start
        notes.extend(_short(str(w.message)) for w in caught)
        if results != workload.expected:
            notes.append("wrong results!")
        best = wall if best is None else min(best, wall)
    return "ok", best, "; ".join(dict.fromkeys(notes))


def _warm_up(ex: unirun.Executor | str, workloads: list[Workload]) -> None:
    """Start the backend's workers (one trivial task of each kind it can run)."""
    for workload in workloads:
        try:
            unirun.run_all(workload.warmup(), mode=ex, timeout=60)
        except Exception:  # the real run reports it
            pass


def _bench_mode(
    mode: str,
    workloads: list[Workload],
    timeout: float,
    repeats: int,
    status: Callable[[str], None],
) -> tuple[list[Row], float | None, list[str]]:
    """Every workload on one new backend: rows, start-up seconds, warnings it gave."""
    status(f"starting {mode}")
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ex = unirun.executor(mode)
        except (BackendUnavailableError, ImportError) as exc:
            why = f"not available: {_short(f'{type(exc).__name__}: {exc}')}"
            return [Row(w.name, mode, "skipped", note=why) for w in workloads], None, []
        try:
            _warm_up(ex, workloads)
        except BaseException:
            ex.shutdown(wait=False, cancel_futures=True)
            raise
    said = list(dict.fromkeys(str(w.message) for w in caught))
    startup = time.perf_counter() - start
    rows = []
    try:
        for workload in workloads:
            status(f"{workload.name} on {mode}")
            state, wall, note = _measure(workload, ex, timeout, repeats)
            rows.append(Row(workload.name, mode, state, wall, note=note))
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ex.shutdown(wait=True, cancel_futures=True)
    return rows, startup, said


def _bench_auto(workload: Workload, timeout: float, repeats: int) -> Row:
    choice = unirun.choose_backend(workload.tasks())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _warm_up("auto", [workload])
    state, wall, note = _measure(workload, "auto", timeout, repeats)
    return Row(
        workload.name,
        "auto",
        state,
        wall,
        note=note,
        auto_mode=choice.mode,
        auto_reason=choice.reason,
    )


def _speed(value: float) -> str:
    text = f"{value:.2f}x" if value < 0.95 else f"{value:.1f}x"
    colour = "green" if value >= 1.5 else "red" if value < 0.8 else ""
    return f"[{colour}]{text}[/]" if colour else text


def _print_table(
    rows: list[Row],
    startup: dict[str, float | None],
    said: dict[str, list[str]],
    quick: bool,
) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console() if sys.stdout.isatty() else Console(width=110)
    table = Table(
        title="unirun bench" + (" --quick" if quick else ""),
        caption=(
            f"{available_cpus()} CPUs, Python {platform.python_version()}. Backends are "
            "started before timing; wall = best of the runs; "
            "vs serial = serial wall time / this wall time."
        ),
    )
    table.add_column("workload", style="bold")
    table.add_column("mode")
    table.add_column("wall (s)", justify="right")
    table.add_column("vs serial", justify="right")
    table.add_column("notes", overflow="fold")
    previous = None
    skipped: dict[str, str] = {}
    for row in rows:
        if row.status == "skipped":
            skipped[row.mode] = row.note
            continue
        if previous is not None and row.workload != previous:
            table.add_section()
        previous = row.workload
        mode = f"auto -> {row.auto_mode}" if row.mode == "auto" else row.mode
        wall = f"{row.wall_s:.3f}" if row.wall_s is not None else "-"
        speed = _speed(row.speedup) if row.speedup is not None else ""
        style = "yellow" if row.status == "error" else "dim" if row.status == "n/a" else None
        table.add_row(row.workload, mode, wall, speed, row.note, style=style)
    console.print(table)
    picks = [r for r in rows if r.mode == "auto"]
    if picks:
        console.print("[bold]What auto picked, and why:[/]")
        for row in picks:
            console.print(f"  {row.workload}: [cyan]{row.auto_mode}[/] - {row.auto_reason}")
    started = ", ".join(f"{m} {s:.2f} s" for m, s in startup.items() if s is not None)
    if started:
        console.print(f"[bold]Start-up[/] (workers started, one task run): {started}")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if load > available_cpus():
        console.print(
            f"[yellow]Busy machine:[/] load average {load:.1f} on {available_cpus()} CPUs; "
            "other programs share the CPUs, so the figures are noisy. Run again when idle."
        )
    for mode, why in skipped.items():
        console.print(f"[dim]Skipped {mode}: {why}[/]")
    for mode, messages in said.items():
        for message in messages:
            console.print(f"[yellow]Note ({mode}):[/] {message}", highlight=False)


def run_bench(args: argparse.Namespace) -> int:
    """Run ``unirun bench``; return the exit status."""
    modes, with_auto = _modes(args.modes)
    from rich.console import Console

    err = Console(stderr=True)
    workloads = make_workloads(args.quick)
    timeout = 60.0 if args.quick else 300.0
    repeats = 1 if args.quick else 2
    rows: list[Row] = []
    startup: dict[str, float | None] = {}
    said: dict[str, list[str]] = {}
    with err.status("unirun bench") as spinner:

        def status(text: str) -> None:
            spinner.update(f"unirun bench: {text}")

        for mode in modes:
            mode_rows, startup[mode], said[mode] = _bench_mode(
                mode, workloads, timeout, repeats, status
            )
            rows.extend(mode_rows)
        if with_auto:
            for workload in workloads:
                status(f"{workload.name} on auto")
                rows.append(_bench_auto(workload, timeout, repeats))
            WARM.shutdown_all()

    by_workload = {w.name: i for i, w in enumerate(workloads)}
    rows.sort(key=lambda r: by_workload[r.workload])  # stable: modes keep their order
    baseline = {r.workload: r.wall_s for r in rows if r.mode == "serial" and r.wall_s}
    for row in rows:
        base = baseline.get(row.workload)
        if row.wall_s and base:
            row.speedup = base / row.wall_s
    _print_table(rows, startup, said, args.quick)
    if args.json:
        figures = {
            "unirun": unirun.__version__,
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "cpus": available_cpus(),
            "cpu_count": os.cpu_count(),
            "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
            "quick": bool(args.quick),
            "workloads": {w.name: w.description for w in workloads},
            "startup_s": startup,
            "repeats": repeats,
            "warnings": said,
            "results": [asdict(r) for r in rows],
        }
        try:
            with open(args.json, "w", encoding="utf-8") as fh:
                json.dump(figures, fh, indent=2)
                fh.write("\n")
        except OSError as exc:
            raise UsageError(f"cannot write {args.json!r}: {exc.strerror or exc}") from None
    return 0
