"""The measured side of the benchmarks: one workload, one variant, one fresh interpreter.

``benchmarks/run.py`` starts ``python benchmarks/workloads.py WORKLOAD VARIANT key=value...``
once per measurement; this package builds the variant, runs it and prints one JSON line::

    {"workload": "tiny", "variant": "tpe", "params": {"n": 20000},
     "metrics": {"wall": 0.21, "warm": 0.19}}

or ``{"skipped": "why"}`` (a backend failed to load, a package is missing: exit status 0)
or ``{"error": "..."}`` (the variant raised: exit status 1).
"""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Callable

from .batch import cpu, import_time, payload, reuse, tiny_tasks
from .io import async_sleeps, blocking, http
from .measure import Metrics, Params, SkipVariant

__all__ = ["WORKLOADS", "main"]

#: workload name -> (params -> {variant name -> measure})
WORKLOADS: dict[str, Callable[[Params], dict[str, Callable[[], Metrics]]]] = {
    "tiny": tiny_tasks,
    "cpu": cpu,
    "blocking": blocking,
    "async": async_sleeps,
    "http": http,
    "payload": payload,
    "reuse": reuse,
    "import": import_time,
}


def _params(items: list[str]) -> Params:
    params: Params = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"expected key=value, got {item!r}")
        params[key] = float(value)
    return params


def _emit(record: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def main(argv: list[str]) -> int:
    """``WORKLOAD VARIANT [key=value ...]``; ``serve - latency=S``; ``calibrate - seconds=S``."""
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        print(f"workloads: {', '.join(WORKLOADS)}", file=sys.stderr)
        return 2
    workload, variant, params = argv[0], argv[1], _params(argv[2:])
    if workload == "serve":
        from .server import serve

        serve(params.get("latency", 0.02))
        return 0
    if workload == "calibrate":
        from .batch import calibrate

        _emit({"work": calibrate(params.get("seconds", 0.2))})
        return 0
    if workload not in WORKLOADS:
        raise SystemExit(f"unknown workload {workload!r}; choose from {', '.join(WORKLOADS)}")
    variants = WORKLOADS[workload](params)
    if variant not in variants:
        raise SystemExit(
            f"unknown variant {variant!r} of {workload!r}; choose from {', '.join(variants)}"
        )
    try:
        metrics = variants[variant]()
    except SkipVariant as exc:
        _emit({"skipped": str(exc)})
        return 0
    except Exception as exc:
        traceback.print_exc()
        _emit({"error": f"{type(exc).__name__}: {exc}"})
        return 1
    _emit({"workload": workload, "variant": variant, "params": params, "metrics": metrics})
    return 0
