"""What ``benchmarks/run.py`` measures: the cases, their variants, and issue 7's targets.

A *case* is one workload at one size; each of its *variants* is a pool (unirun's mode or a
raw peer) measured in fresh interpreters. ``peers`` pairs each unirun variant with the raw
tools it is compared against (the best, lowest median, of them), for the ratio columns. A
*target* is one line of issue 7: a ratio, speed-up or value, and the limit it must meet.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = ["WORKLOAD_NAMES", "Case", "Target", "make_cases", "make_targets"]

WORKLOAD_NAMES = ("tiny", "cpu", "blocking", "async", "http", "payload", "reuse", "import")
_CHUNKED = ("ppe-chunked", "mp-pool", "joblib", "mpire")
_TINY = (
    "loop",
    "unirun-serial",
    "unirun-thread",
    "tpe",
    "unirun-process",
    "ppe-1",
    "ppe-chunked",
    "mp-pool",
    "joblib",
    "mpire",
    "unirun-asyncio",
    "gather",
    "anyio-tg",
    "unirun-gevent",
    "gevent-pool",
)
_CPU = ("loop", "unirun-process", "ppe-1", "mp-pool", "joblib", "mpire", "unirun-thread")
_POOLS = ("unirun-thread", "tpe", "unirun-gevent", "gevent-pool")


@dataclass(frozen=True)
class Case:
    """One workload at one size, and the variants measured on it."""

    key: str  # unique, for targets: "async-100k"
    workload: str  # the worker's workload name, and what --only selects
    title: str
    params: dict[str, float]
    variants: tuple[str, ...]
    peers: dict[str, tuple[str, ...]] = field(default_factory=dict)
    ratio_metrics: tuple[str, ...] = ("wall",)
    per_task: bool = False  # show microseconds per task
    baseline: str | None = None  # show speed-up over this variant


@dataclass(frozen=True)
class Target:
    """One target of issue 7, checked against the medians of one case."""

    case: str  # Case.key
    text: str
    subject: str  # the unirun variant
    metric: str
    limit: float
    kind: Literal["ratio", "speedup", "value", "per_task_us"] = "ratio"
    peers: tuple[str, ...] = ()  # best (lowest median) of these


def make_cases(quick: bool, cpu_work: int, dask: bool) -> list[Case]:
    """Every case; smaller with ``quick``. ``cpu_work`` is the calibrated spin size."""
    n_tiny = 5_000 if quick else 20_000
    n_cpu, cpu_s = (8, 0.1) if quick else (16, 0.2)
    extra = ("unirun-dask",) if dask else ()
    tiny_peers: dict[str, tuple[str, ...]] = {
        "unirun-serial": ("loop",),
        "unirun-thread": ("tpe",),
        "unirun-process": _CHUNKED,
        "unirun-asyncio": ("gather",),
        "unirun-gevent": ("gevent-pool",),
    }
    pool_peers: dict[str, tuple[str, ...]] = {
        "unirun-thread": ("tpe",),
        "unirun-gevent": ("gevent-pool",),
    }
    cases = [
        Case(
            "tiny",
            "tiny",
            f"tiny tasks: {n_tiny:,} x `x + 1`",
            {"n": n_tiny},
            _TINY + extra,
            tiny_peers,
            ("wall", "warm"),
            per_task=True,
        ),
        Case(
            "cpu",
            "cpu",
            f"CPU-bound: {n_cpu} x ~{cpu_s} s pure-Python loop (cold, pool start included)",
            {"n": n_cpu, "work": cpu_work},
            (
                "loop",
                "unirun-process",
                "ppe-1",
                "mp-pool",
                "joblib",
                "mpire",
                "unirun-thread",
                *extra,
            ),
            {"unirun-process": ("ppe-1", "mp-pool", "joblib", "mpire")},
            baseline="loop",
        ),
    ]
    cases += [
        Case(
            f"blocking-{c}",
            "blocking",
            f"blocking sleeps: 2,000 x 10 ms at concurrency {c}",
            {"n": 2000, "concurrency": c},
            _POOLS,
            pool_peers,
        )
        for c in (100, 500)
    ]
    cases += [
        Case(
            f"async-{n // 1000}k",
            "async",
            f"async sleeps: {n:,} x `asyncio.sleep(0.01)` at once (peak RSS)",
            {"n": n},
            ("unirun-asyncio", "gather", "anyio-tg"),
            {"unirun-asyncio": ("gather",)},
            ("wall", "rss_mib"),
        )
        for n in ((10_000,) if quick else (10_000, 100_000))
    ]
    n_http, c_http = (500, 50) if quick else (2000, 100)
    cases.append(
        Case(
            "http",
            "http",
            f"HTTP GETs: {n_http:,} to 127.0.0.1 (20 ms latency) at concurrency {c_http}",
            {"n": n_http, "concurrency": c_http, "latency": 0.02},
            (*_POOLS, "unirun-asyncio", "gather"),
            {**pool_peers, "unirun-asyncio": ("gather",)},
        )
    )
    n_pay = 16 if quick else 64
    cases.append(
        Case(
            "payload",
            "payload",
            f"large payloads: {n_pay} x 4 MiB `bytes` to processes (peak tree PSS)",
            {"n": n_pay, "mib": 4},
            (
                "unirun-process",
                "ppe-1",
                "ppe-chunked",
                "mp-pool",
                "mpire",
                "unirun-shared",
                "mpire-shared",
            ),
            {"unirun-process": ("ppe-1",), "unirun-shared": ("mpire-shared",)},
            ("wall", "warm", "tree_mib"),
        )
    )
    cases.append(
        Case(
            "reuse",
            "reuse",
            "cold one-shot vs warm second call: 1,000 tiny tasks, twice in one interpreter",
            {"n": 1000},
            ("unirun-process", "ppe-1", "mp-pool"),
        )
    )
    cases.append(
        Case(
            "import",
            "import",
            '`python -X importtime -c "import MODULE"` (cumulative)',
            {},
            ("unirun", "anyio"),
        )
    )
    return cases


def make_targets(quick: bool) -> list[Target]:
    """Issue 7's targets, for the cases :func:`make_cases` makes."""
    targets = [
        Target("tiny", "tiny: thread mode <= 1.1x ThreadPoolExecutor.map", "unirun-thread",
               "wall", 1.1, peers=("tpe",)),
        Target("tiny", "tiny: process mode <= 1.0x best chunked peer, cold", "unirun-process",
               "wall", 1.0, peers=_CHUNKED),
        Target("tiny", "tiny: process mode <= 1.0x best chunked peer, warm", "unirun-process",
               "warm", 1.0, peers=_CHUNKED),
        Target("tiny", "tiny: asyncio mode <= 1.15x asyncio.gather", "unirun-asyncio",
               "wall", 1.15, peers=("gather",)),
        Target("tiny", "tiny: gevent mode <= 1.1x gevent Pool.map", "unirun-gevent",
               "wall", 1.1, peers=("gevent-pool",)),
        Target("tiny", "tiny: unirun's layer (serial mode - plain loop) <= 1 us/task",
               "unirun-serial", "warm", 1.0, "per_task_us", ("loop",)),
        Target("cpu", "CPU-bound: process mode >= 1.9x over serial, cold", "unirun-process",
               "wall", 1.9, "speedup", ("loop",)),
        Target("blocking-500", "blocking c=500: thread mode <= 1.1x ThreadPoolExecutor",
               "unirun-thread", "wall", 1.1, peers=("tpe",)),
        Target("blocking-500", "blocking c=500: gevent mode <= 1.1x gevent Pool",
               "unirun-gevent", "wall", 1.1, peers=("gevent-pool",)),
    ]  # fmt: skip
    for n in ("10k",) if quick else ("10k", "100k"):
        targets += [
            Target(f"async-{n}", f"async {n}: asyncio mode <= 1.15x gather, wall",
                   "unirun-asyncio", "wall", 1.15, peers=("gather",)),
            Target(f"async-{n}", f"async {n}: asyncio mode <= 1.2x gather, peak memory",
                   "unirun-asyncio", "rss_mib", 1.2, peers=("gather",)),
        ]  # fmt: skip
    targets += [
        Target("http", "HTTP: thread mode <= 1.1x ThreadPoolExecutor", "unirun-thread",
               "wall", 1.1, peers=("tpe",)),
        Target("http", "HTTP: gevent mode <= 1.1x gevent Pool", "unirun-gevent",
               "wall", 1.1, peers=("gevent-pool",)),
        Target("http", "HTTP: asyncio mode <= 1.1x gather", "unirun-asyncio",
               "wall", 1.1, peers=("gather",)),
        Target("reuse", "warm reuse: 2nd run_all(mode='process') <= 1/5 of the 1st",
               "unirun-process", "warm_over_cold", 0.2, "value"),
        Target("payload", "payloads: process mode <= 1.1x ProcessPoolExecutor, time",
               "unirun-process", "wall", 1.1, peers=("ppe-1",)),
        Target("payload", "payloads: process mode <= 1.1x ProcessPoolExecutor, tree memory",
               "unirun-process", "tree_mib", 1.1, peers=("ppe-1",)),
        Target("payload", "payloads: zero-copy path <= 2x mpire shared_objects, warm",
               "unirun-shared", "warm", 2.0, peers=("mpire-shared",)),
        Target("import", "`import unirun` <= 30 ms", "unirun", "import_ms", 30.0, "value"),
    ]  # fmt: skip
    return targets
