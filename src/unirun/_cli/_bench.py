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
    status: str  # "ok", "skipped" or "error"
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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _run(workload: Workload, mode: str | unirun.Executor, timeout: float) -> list[Any]:
    if workload.name == "tiny":
        return unirun.map(workload.fn, workload.args, mode=mode, timeout=timeout)
    return unirun.run_all(workload.tasks(), mode=mode, timeout=timeout)


def _measure(
    workload: Workload, mode: str | unirun.Executor, timeout: float
) -> tuple[float | None, str]:
    """Time one workload; return (seconds or None, note)."""
    notes: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.perf_counter()
        try:
            results = _run(workload, mode, timeout)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:
            return None, _first_line(exc)
        wall = time.perf_counter() - start
    notes.extend(str(w.message).splitlines()[0] for w in caught)
    if results != workload.expected:
        notes.append("wrong results!")
    return wall, "; ".join(dict.fromkeys(notes))


def _warm_up(ex: unirun.Executor, workloads: list[Workload]) -> None:
    """Start the backend's workers (one trivial task of each kind it can run)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for workload in workloads:
            try:
                unirun.run_all(workload.warmup(), mode=ex, timeout=60)
            except Exception:  # the real run reports it
                pass


def _bench_mode(
    mode: str,
    workloads: list[Workload],
    timeout: float,
    status: Callable[[str], None],
) -> tuple[list[Row], float | None]:
    status(f"starting {mode}")
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ex = unirun.executor(mode)
    except (BackendUnavailableError, ImportError) as exc:
        why = f"not available: {_first_line(exc)}"
        return [Row(w.name, mode, "skipped", note=why) for w in workloads], None
    rows = []
    try:
        _warm_up(ex, workloads)
        startup = time.perf_counter() - start
        for workload in workloads:
            status(f"{workload.name} on {mode}")
            wall, note = _measure(workload, ex, timeout)
            rows.append(
                Row(workload.name, mode, "ok" if wall is not None else "error", wall, note=note)
            )
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ex.shutdown(wait=True, cancel_futures=True)
    return rows, startup


def _bench_auto(workload: Workload, timeout: float) -> Row:
    choice = unirun.choose_backend(workload.tasks())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            unirun.run_all(workload.warmup(), mode="auto", timeout=60)
        except Exception:
            pass
    wall, note = _measure(workload, "auto", timeout)
    return Row(
        workload.name,
        "auto",
        "ok" if wall is not None else "error",
        wall,
        note=note,
        auto_mode=choice.mode,
        auto_reason=choice.reason,
    )


def _speed(value: float) -> str:
    text = f"{value:.2f}x" if value < 0.95 else f"{value:.1f}x"
    colour = "green" if value >= 1.5 else "red" if value < 0.8 else ""
    return f"[{colour}]{text}[/]" if colour else text


def _print_table(rows: list[Row], startup: dict[str, float | None], quick: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console() if sys.stdout.isatty() else Console(width=110)
    table = Table(
        title="unirun bench" + (" --quick" if quick else ""),
        caption=(
            f"{available_cpus()} CPUs, Python {platform.python_version()}. Backends are "
            "started before timing; vs serial = serial wall time / this wall time."
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
        style = "yellow" if row.status == "error" else None
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
    for mode, why in skipped.items():
        console.print(f"[dim]Skipped {mode}: {why}[/]")


def run_bench(args: argparse.Namespace) -> int:
    """Run ``unirun bench``; return the exit status."""
    modes, with_auto = _modes(args.modes)
    from rich.console import Console

    err = Console(stderr=True)
    workloads = make_workloads(args.quick)
    timeout = 60.0 if args.quick else 300.0
    rows: list[Row] = []
    startup: dict[str, float | None] = {}
    with err.status("unirun bench") as spinner:

        def status(text: str) -> None:
            spinner.update(f"unirun bench: {text}")

        for mode in modes:
            mode_rows, startup[mode] = _bench_mode(mode, workloads, timeout, status)
            rows.extend(mode_rows)
        if with_auto:
            for workload in workloads:
                status(f"{workload.name} on auto")
                rows.append(_bench_auto(workload, timeout))
            WARM.shutdown_all()

    by_workload = {w.name: i for i, w in enumerate(workloads)}
    rows.sort(key=lambda r: by_workload[r.workload])  # stable: modes keep their order
    baseline = {r.workload: r.wall_s for r in rows if r.mode == "serial" and r.wall_s}
    for row in rows:
        base = baseline.get(row.workload)
        if row.wall_s and base:
            row.speedup = base / row.wall_s
    _print_table(rows, startup, args.quick)
    if args.json:
        figures = {
            "unirun": unirun.__version__,
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "cpus": available_cpus(),
            "cpu_count": os.cpu_count(),
            "quick": bool(args.quick),
            "workloads": {w.name: w.description for w in workloads},
            "startup_s": startup,
            "results": [asdict(r) for r in rows],
        }
        try:
            with open(args.json, "w", encoding="utf-8") as fh:
                json.dump(figures, fh, indent=2)
                fh.write("\n")
        except OSError as exc:
            raise UsageError(f"cannot write {args.json!r}: {exc.strerror or exc}") from None
    return 0
