"""unirun's gevent mode against a bare ``gevent.pool.Pool`` and unirun's thread mode.

    python benchmarks/bench_gevent.py [--repeat 3] [--sleeps 2000] [--requests 500]

Workloads, each at concurrency 100 and 500:

* ``sleep``: ``--sleeps`` tasks of ``time.sleep(0.01)`` (the ideal is
  ``sleeps / concurrency * 0.01`` s);
* ``http``: ``--requests`` ``urllib`` GETs to a server on 127.0.0.1 that this script
  starts (a gevent WSGI server in a process of its own, answering after 10 ms).

Every measurement runs in a fresh interpreter that called ``gevent.monkey.patch_all()``
before anything else (so ``unirun-thread`` there runs on patched, green threads); the
``unirun-thread (unpatched)`` rows are the same work on real OS threads, for reference.
Each figure is the median of ``--repeat`` runs of the batch alone (interpreter start and
imports are not counted). Ratios are against the bare gevent pool: 1.00 is as fast.
"""

from __future__ import annotations

import sys

_ROLE = sys.argv[1] if __name__ == "__main__" and len(sys.argv) > 1 else ""
if _ROLE == "--server" or (_ROLE == "--child" and sys.argv[2] != "unirun-thread-unpatched"):
    from gevent import monkey

    monkey.patch_all()

# isort: split
import argparse  # noqa: E402 - after patching, on purpose
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

VARIANTS = ("gevent-pool", "unirun-gevent", "unirun-thread", "unirun-thread-unpatched")
WORKLOADS = ("sleep", "http")
CONCURRENCY = (100, 500)
SERVER_DELAY = 0.01


# -- the child: one measurement ------------------------------------------------------------


def _job(workload: str, url: str) -> Callable[[], Any]:
    if workload == "sleep":
        return lambda: time.sleep(0.01)
    import urllib.request

    def get() -> bytes:
        with urllib.request.urlopen(url, timeout=30) as response:
            return bytes(response.read())

    return get


def child(variant: str, workload: str, concurrency: int, count: int, url: str) -> float:
    job = _job(workload, url)
    # imports (and unirun's backend module) are loaded before the clock starts
    import gevent.pool

    import unirun
    from unirun._registry import factory_for

    mode = "gevent" if variant == "unirun-gevent" else "thread"
    factory_for(mode)
    start = time.perf_counter()
    if variant == "gevent-pool":
        results = gevent.pool.Pool(concurrency).map(lambda _: job(), range(count))
    else:
        results = unirun.run_all([job] * count, mode=mode, max_workers=concurrency)
    elapsed = time.perf_counter() - start
    assert len(results) == count
    return elapsed


# -- the server: a gevent WSGI server on loopback ------------------------------------------------


def server() -> None:
    from gevent.pywsgi import WSGIServer

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        time.sleep(SERVER_DELAY)  # patched: many requests wait at once
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]

    http = WSGIServer(("127.0.0.1", 0), app, log=None, backlog=1024)
    http.start()
    print(http.server_port, flush=True)
    http.serve_forever()  # until the parent terminates us


# -- the parent: run everything, print the table --------------------------------------------


def _args(*values: object) -> list[str]:
    return [str(v) for v in values]


def measure(
    variant: str, workload: str, concurrency: int, count: int, url: str, repeat: int
) -> float:
    times = []
    for _ in range(repeat):
        done = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                variant,
                workload,
                *_args(concurrency, count, url),
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{variant} {workload} {concurrency} failed:\n{done.stderr[-3000:]}")
        times.append(float(done.stdout.split()[-1]))
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sleeps", type=int, default=2000)
    parser.add_argument("--requests", type=int, default=500)
    args = parser.parse_args()

    srv = subprocess.Popen(
        [sys.executable, __file__, "--server"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert srv.stdout is not None
        url = f"http://127.0.0.1:{srv.stdout.readline().strip()}/"
        print(f"python {sys.version.split()[0]}, median of {args.repeat}; server {url}")
        print(f"{'workload':<28} {'conc':>5} {'variant':<26} {'median s':>9} {'vs pool':>8}")
        for workload in WORKLOADS:
            count = args.sleeps if workload == "sleep" else args.requests
            label = (
                f"{count} x sleep(10 ms)"
                if workload == "sleep"
                else f"{count} x GET (+{SERVER_DELAY * 1000:.0f} ms)"
            )
            for concurrency in CONCURRENCY:
                base = None
                for variant in VARIANTS:
                    t = measure(variant, workload, concurrency, count, url, args.repeat)
                    base = t if base is None else base
                    print(
                        f"{label:<28} {concurrency:>5} {variant:<26} {t:>9.3f} {t / base:>7.2f}x",
                        flush=True,
                    )
    finally:
        srv.terminate()
        try:
            srv.wait(timeout=10)
        except subprocess.TimeoutExpired:
            srv.kill()
            srv.wait()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        variant, workload, concurrency, count, url = sys.argv[2:7]
        print(child(variant, workload, int(concurrency), int(count), url))
    elif sys.argv[1:2] == ["--server"]:
        server()
    else:
        main()
