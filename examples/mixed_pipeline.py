"""One batch, three kinds of work, ``mode="auto"``: each task goes where it runs best.

* ``download(i)`` is an ``async def``: it goes to the event loop (``asyncio``);
* ``read_file(i)`` blocks on I/O and is marked ``@unirun.io_bound``: threads;
* ``checksum(i)`` burns CPU and is marked ``@unirun.cpu_bound``: processes.

``unirun.choose_backend(tasks)`` says where each task would go and why, without running
anything; ``unirun.run_all(tasks)`` (auto is the default) runs them all concurrently, each
on its own backend, and returns the results in input order.

Run it: ``python examples/mixed_pipeline.py``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import Counter

import unirun


async def download(i: int) -> str:
    await asyncio.sleep(0.2)  # a slow network call
    return f"page-{i}"


@unirun.io_bound
def read_file(i: int) -> str:
    time.sleep(0.2)  # a slow disk or a blocking client library
    return f"file-{i}"


@unirun.cpu_bound
def checksum(i: int) -> str:
    data = str(i).encode()
    for _ in range(150_000):
        data = hashlib.sha256(data).digest()
    return data.hex()[:12]


def main() -> None:
    tasks = (
        [unirun.task(download, i) for i in range(6)]
        + [unirun.task(read_file, i) for i in range(6)]
        + [unirun.task(checksum, i) for i in range(4)]
    )
    choice = unirun.choose_backend(tasks)
    print(f"choose_backend: mode={choice.mode!r}")
    print(f"  why: {choice.reason}")
    print(f"  routes: {dict(Counter(choice.routes or ()))}")

    # The auto mode logs each decision on the "unirun" logger (silent unless configured).
    logging.basicConfig(format="  log: %(message)s")
    logging.getLogger("unirun").setLevel(logging.INFO)

    start = time.perf_counter()
    try:
        results = unirun.run_all(tasks, mode="auto")
    except ImportError as exc:  # BackendUnavailableError is an ImportError
        print(f"auto: skipped (not available: {exc})")
        return
    seconds = time.perf_counter() - start
    print(f"run_all(mode='auto'): {len(results)} results in {seconds:.2f} s, in input order:")
    print(f"  {results[0]} .. {results[5]} | {results[6]} .. {results[11]} | {results[12:]}")
    one_by_one = 6 * 0.2 + 6 * 0.2
    print(f"  (the waits alone would take {one_by_one:.1f} s one by one, plus the hashing)")


if __name__ == "__main__":
    main()
