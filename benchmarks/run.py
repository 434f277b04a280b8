"""Run unirun's benchmarks side by side with the raw tools; print medians and ratios.

    python benchmarks/run.py                 # every workload, 5 repeats (about 15 minutes)
    python benchmarks/run.py --quick         # smaller sizes, 2 repeats (under 3 minutes)
    python benchmarks/run.py --only tiny,cpu --json out.json --markdown out.md

Each measurement runs in a fresh interpreter (``benchmarks/workloads.py WORKLOAD VARIANT
key=value...``, one JSON line back); the variants of a case take turns, in a rotated order
each repeat, so drift on a busy machine spreads over all of them. A variant whose backend
fails to load (or whose package is missing, or that fails) is skipped with its reason.
The tables show medians, unirun/peer ratios (of the medians) and, last, which targets of
issue 7 are met. Nothing here asserts: the numbers are for people to read.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from _workloads.plan import WORKLOAD_NAMES, Case, Target, make_cases, make_targets

HERE = Path(__file__).resolve().parent
WORKER = HERE / "workloads.py"

#: metric -> column heading, in the order the columns appear
METRICS = {
    "wall": "wall s",
    "warm": "warm s",
    "import_ms": "import ms",
    "warm_over_cold": "2nd/1st",
    "rss_mib": "peak RSS Δ MiB",
    "tree_mib": "tree PSS Δ MiB",
    "tracemalloc_mib": "tracemalloc MiB",
}


@dataclass
class Result:
    """Every run of one variant of one case."""

    runs: list[dict[str, float]] = field(default_factory=list)
    skipped: str | None = None

    def median(self, metric: str) -> float | None:
        values = [run[metric] for run in self.runs if metric in run]
        return statistics.median(values) if values else None


# -- running -------------------------------------------------------------------------------


def measure(
    python: str, case: Case, variant: str, extra: dict[str, float], timeout: float
) -> dict[str, Any]:
    """One measurement in a fresh interpreter: its JSON record, or ``{"skipped": why}``."""
    params = {**case.params, **extra}
    cmd = [python, str(WORKER), case.workload, variant, *(f"{k}={v}" for k, v in params.items())]
    env = dict(os.environ)
    # so forkserver, spawn and Dask workers import the task functions by reference too
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,  # a process group of its own: a timeout kills its pools too
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return {"skipped": f"no result within --timeout {timeout:g} s"}
    records = [line for line in out.splitlines() if line.startswith("{")]
    if records:
        record: dict[str, Any] = json.loads(records[-1])
        if "error" in record:
            return {"skipped": f"failed: {record['error']}"}
        return record
    tail = " | ".join(err.strip().splitlines()[-3:])
    return {"skipped": f"exit status {proc.returncode}: {tail or 'no output'}"}


def calibrate(python: str, seconds: float) -> int:
    """The spin size that takes about ``seconds`` in a fresh interpreter here."""
    out = subprocess.run(
        [python, str(WORKER), "calibrate", "-", f"seconds={seconds}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return int(json.loads(out.strip().splitlines()[-1])["work"])


def run_case(
    python: str, case: Case, repeats: int, extra: dict[str, float], timeout: float
) -> dict[str, Result]:
    """Every variant of ``case``, ``repeats`` times, taking turns."""
    results = {v: Result() for v in case.variants}
    alive = list(case.variants)
    for r in range(repeats):
        shift = r % len(alive) if alive else 0
        for variant in alive[shift:] + alive[:shift]:
            record = measure(python, case, variant, extra, timeout)
            if "skipped" in record:
                results[variant].skipped = str(record["skipped"])
                print(f"  {variant}: skipped: {record['skipped']}", file=sys.stderr, flush=True)
                continue
            metrics = record["metrics"]
            results[variant].runs.append(metrics)
            shown = " ".join(f"{k}={v:.4g}" for k, v in metrics.items())
            print(f"  [{r + 1}/{repeats}] {variant}: {shown}", file=sys.stderr, flush=True)
        alive = [v for v in alive if results[v].skipped is None]
    return results


# -- numbers and tables ---------------------------------------------------------------------


def best_peer(
    results: dict[str, Result], peers: tuple[str, ...], metric: str
) -> tuple[str, float] | None:
    """The peer with the lowest median of ``metric``, and that median."""
    found = [(m, p) for p in peers if p in results and (m := results[p].median(metric))]
    if not found:
        return None
    value, name = min(found)
    return name, value


def _num(x: float) -> str:
    return f"{x:.3g}" if abs(x) < 1000 else f"{x:,.0f}"


def _ratio(x: float, limit: float) -> str:
    """Two decimals, three where two would round onto the limit and hide the verdict."""
    return f"{x:.3f}" if f"{x:.2f}" == f"{limit:.2f}" and x != limit else f"{x:.2f}"


def case_table(case: Case, results: dict[str, Result]) -> str:
    """The Markdown table of one case: medians, derived columns, ratios to the peers."""
    metrics = [m for m in METRICS if any(r.median(m) is not None for r in results.values())]
    head = ["variant", *(METRICS[m] for m in metrics)]
    if case.per_task:
        head += ["µs/task", "warm µs/task"]
    if case.baseline:
        head.append(f"speed-up vs {case.baseline}")
    head += [f"{METRICS[m]}: unirun/peer" for m in case.ratio_metrics if m in metrics]
    head.append("runs")
    rows = [head, ["---"] * len(head)]
    n = case.params.get("n", 1)
    base = results[case.baseline].median("wall") if case.baseline in results else None
    for variant, result in results.items():
        if not result.runs:
            rows.append([variant, *["—"] * (len(head) - 2), f"skipped: {result.skipped}"])
            continue
        row = [variant]
        for m in metrics:
            value = result.median(m)
            row.append("—" if value is None else _num(value))
        if case.per_task:
            for m in ("wall", "warm"):
                value = result.median(m)
                row.append("—" if value is None else _num(value / n * 1e6))
        if case.baseline:
            wall = result.median("wall")
            row.append(f"{base / wall:.2f}x" if base and wall else "—")
        for m in case.ratio_metrics:
            if m not in metrics:
                continue
            value, peer = result.median(m), best_peer(results, case.peers.get(variant, ()), m)
            row.append(f"{value / peer[1]:.2f}x {peer[0]}" if value and peer else "")
        note = f"{len(result.runs)}" + (
            f" (then skipped: {result.skipped})" if result.skipped else ""
        )
        row.append(note)
        rows.append(row)
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


@dataclass
class Verdict:
    """A target, checked."""

    target: Target
    value: float | None
    detail: str
    met: bool | None


def check_target(target: Target, case: Case, results: dict[str, Result]) -> Verdict:
    """Evaluate one target against the medians of its case."""
    subject = results.get(target.subject)
    value = subject.median(target.metric) if subject else None
    if value is None:
        why = subject.skipped if subject and subject.skipped else "not measured"
        return Verdict(target, None, f"n/a: {target.subject} {why}", None)
    if target.kind == "value":
        return Verdict(target, value, _num(value), value <= target.limit)
    peer = best_peer(results, target.peers, target.metric)
    if peer is None:
        return Verdict(target, None, f"n/a: no peer of {', '.join(target.peers)} measured", None)
    name, peer_value = peer
    if target.kind == "speedup":
        ratio = peer_value / value
        shown = f"{name} {_num(peer_value)} / {target.subject} {_num(value)}"
        detail = f"{_ratio(ratio, target.limit)}x ({shown})"
        return Verdict(target, ratio, detail, ratio >= target.limit)
    if target.kind == "per_task_us":
        per_task = (value - peer_value) / case.params.get("n", 1) * 1e6
        detail = f"{per_task:.2f} µs ({target.subject} - {name}, {target.metric})"
        return Verdict(target, per_task, detail, per_task <= target.limit)
    ratio = value / peer_value
    shown = f"{target.subject} {_num(value)} / {name} {_num(peer_value)}"
    detail = f"{_ratio(ratio, target.limit)}x ({shown})"
    return Verdict(target, ratio, detail, ratio <= target.limit)


def targets_table(verdicts: list[Verdict]) -> str:
    """Which of issue 7's targets this run met."""
    rows = ["| target (issue 7) | measured | limit | met |", "| --- | --- | --- | --- |"]
    for v in verdicts:
        sense = "≥" if v.target.kind == "speedup" else "≤"
        met = "n/a" if v.met is None else ("yes" if v.met else "**no**")
        rows.append(f"| {v.target.text} | {v.detail} | {sense} {v.target.limit:g} | {met} |")
    return "\n".join(rows)


def ratio_chart(verdicts: list[Verdict], scale: int = 20) -> str:
    """A text bar chart: each target's measured share of its limit; ``|`` marks the limit."""
    lines = []
    for v in verdicts:
        if v.value is None or v.target.kind in ("value", "per_task_us"):
            continue
        # 1.0 is the limit, whichever way the target points
        share = v.target.limit / v.value if v.target.kind == "speedup" else v.value / v.target.limit
        cells = max(1, round(share * scale))
        bar = "".join("|" if i == scale else ("#" if i < cells else " ") for i in range(2 * scale))
        bar = bar.rstrip() + (">" if cells > 2 * scale else "")
        mark = "ok  " if v.met else "MISS"
        lines.append(f"{mark} {v.target.text[:64]:<64} {bar:<{2 * scale + 1}} {v.value:.2f}")
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    """What the numbers were taken on."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "commit": commit,
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


# -- command line ---------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The runner's options."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes, 2 repeats")
    parser.add_argument("--repeats", type=int, help="runs per variant (default 5; 2 with --quick)")
    parser.add_argument(
        "--only", action="append", default=[], metavar="WORKLOAD",
        help=f"workloads to run, comma-separated or repeated: {', '.join(WORKLOAD_NAMES)}",
    )  # fmt: skip
    parser.add_argument(
        "--variants", default="", metavar="A,B", help="run only these variants (names as printed)"
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="write every run as JSON")
    parser.add_argument("--markdown", type=Path, metavar="FILE", help="write the tables")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per measurement")
    parser.add_argument("--python", default=sys.executable, help="interpreter to measure")
    parser.add_argument("--no-dask", action="store_true", help="leave out the dask mode")
    parser.add_argument(
        "--tracemalloc", action="store_true",
        help="also report tracemalloc peaks (async, payload); slows those runs down",
    )  # fmt: skip
    args = parser.parse_args(argv)
    only = {w for item in args.only for w in item.split(",") if w}
    unknown = only - set(WORKLOAD_NAMES)
    if unknown:
        parser.error(f"unknown workload(s) {sorted(unknown)}; choose from {WORKLOAD_NAMES}")
    args.only = only or set(WORKLOAD_NAMES)
    if args.repeats is None:
        args.repeats = 2 if args.quick else 5
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return args


def compile_unirun(python: str) -> None:
    """Write unirun's bytecode first, so every fresh interpreter loads it as an installed
    package does: an editable checkout under ``PYTHONDONTWRITEBYTECODE`` would otherwise
    compile each module anew in every measurement (the peers, installed, have theirs)."""
    code = (
        "import compileall, os, unirun\n"
        "compileall.compile_dir(os.path.dirname(unirun.__file__), quiet=1)"
    )
    subprocess.run([python, "-c", code], check=False)


def main(argv: list[str]) -> int:
    """Run the selected cases and report."""
    args = parse_args(argv)
    started = time.perf_counter()
    compile_unirun(args.python)
    info = machine()
    work = 0
    if "cpu" in args.only:
        work = calibrate(args.python, 0.1 if args.quick else 0.2)
        print(f"calibrated: spin({work}) takes ~{0.1 if args.quick else 0.2} s", file=sys.stderr)
    cases = [
        c
        for c in make_cases(args.quick, work, dask=not (args.quick or args.no_dask))
        if c.workload in args.only
    ]
    keep = {v for v in args.variants.split(",") if v}
    if keep:
        cases = [
            Case(**{**asdict(c), "variants": tuple(v for v in c.variants if v in keep)})
            for c in cases
        ]
    extra = {"tracemalloc": 1.0} if args.tracemalloc else {}
    sections = []
    all_results: dict[str, dict[str, Result]] = {}
    for case in cases:
        print(f"\n## {case.title}", file=sys.stderr, flush=True)
        case_extra = extra if case.workload in ("async", "payload") else {}
        results = run_case(args.python, case, args.repeats, case_extra, args.timeout)
        all_results[case.key] = results
        section = f"### {case.title}\n\n{case_table(case, results)}"
        print("\n" + section, flush=True)
        sections.append(section)
    by_key = {c.key: c for c in cases}
    verdicts = [
        check_target(t, by_key[t.case], all_results[t.case])
        for t in make_targets(args.quick)
        if t.case in by_key
    ]
    elapsed = time.perf_counter() - started
    info["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    header = (
        f"unirun benchmarks ({'quick, ' if args.quick else ''}{args.repeats} repeat(s), "
        f"medians; {info['cpus']} CPUs, Python {info['python']}, commit {info['commit']}, "
        f"load average {info['loadavg'][0]} before / {info['loadavg_after'][0]} after, "
        f"{elapsed:.0f} s)"
    )
    summary = f"### Targets (issue 7)\n\n{targets_table(verdicts)}" if verdicts else ""
    chart = ratio_chart(verdicts)
    if chart:
        summary += f"\n\nMeasured / limit (the limit is 1.0 of the scale):\n\n```text\n{chart}\n```"
    print(f"\n{summary}\n\n{header}", flush=True)
    if args.markdown:
        body = "\n\n".join([f"## {header}", *sections, summary])
        args.markdown.write_text(body + "\n")
    if args.json:
        report = {
            "machine": info,
            "argv": argv,
            "quick": args.quick,
            "repeats": args.repeats,
            "elapsed_s": elapsed,
            "cases": [
                {
                    **asdict(c),
                    "results": {
                        v: {
                            "median": {m: r.median(m) for m in METRICS if r.median(m) is not None},
                            "runs": r.runs,
                            "skipped": r.skipped,
                        }
                        for v, r in all_results[c.key].items()
                    },
                }
                for c in cases
            ],
            "targets": [
                {**asdict(v.target), "value": v.value, "detail": v.detail, "met": v.met}
                for v in verdicts
            ],
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
