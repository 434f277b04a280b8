"""Run one benchmark measurement in this (fresh) interpreter and print it as JSON.

    python benchmarks/workloads.py WORKLOAD VARIANT [key=value ...]

``benchmarks/run.py`` calls this once per measurement; run it by hand to try one, e.g.
``python benchmarks/workloads.py tiny unirun-thread n=20000``. Variants whose name
contains ``gevent`` run in an interpreter monkey-patched before anything else is imported.
"""

from __future__ import annotations

import json
import sys


def _patch_for_gevent() -> bool:
    try:
        from gevent import monkey
    except ImportError as exc:
        print(json.dumps({"skipped": f"gevent is not installed ({exc})"}), flush=True)
        return False
    monkey.patch_all()
    return True


if __name__ == "__main__":
    if len(sys.argv) > 2 and "gevent" in sys.argv[2] and not _patch_for_gevent():
        sys.exit(0)
    from _workloads import main

    sys.exit(main(sys.argv[1:]))
